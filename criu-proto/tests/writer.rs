//! The writer: lazy creation, schema checks, byte-identical rewriting of CRIU
//! 4.2 images, pagemaps and pages files.

mod common;

use criu_proto::images::{FsEntry, PagemapHead, PipeDataEntry, PstreeEntry};
use criu_proto::img::pages::{PE_LAZY, PE_PARENT, PE_PRESENT};
use criu_proto::img::{
    decode_any, ImageError, ImageKind, ImageWriter, ImagesDir, PageRun, Pagemap,
};

fn tempdir() -> (tempfile::TempDir, ImagesDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ImagesDir::open(tmp.path()).expect("open temp images dir");
    (tmp, dir)
}

#[test]
fn image_without_entries_is_not_created() {
    let (tmp, dir) = tempdir();
    let writer = dir.create_image(ImageKind::Pstree, 0).expect("prepare");
    assert_eq!(writer.finish().expect("finish"), 0);
    assert!(!tmp.path().join("pstree.img").exists());
    assert_eq!(
        dir.write_all::<PstreeEntry>(ImageKind::Pstree, 0, [])
            .expect("write none"),
        0
    );
    assert!(!tmp.path().join("pstree.img").exists());
    // Missing images read as empty.
    assert!(dir.pstree().expect("pstree").is_empty());
    assert!(dir.mm(1).expect("mm").is_none());
}

#[test]
fn writes_criu_bytes() {
    let (tmp, dir) = tempdir();
    let entry = PstreeEntry {
        pid: 15812,
        ppid: 0,
        pgid: 15812,
        sid: 15812,
        threads: vec![15812],
    };
    dir.write_all(ImageKind::Pstree, 0, [&entry])
        .expect("write pstree");
    // The worked example of image-format.md 1.11.
    let expected: Vec<u8> = vec![
        0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50, 0x0e, 0x00, 0x00, 0x00, 0x08, 0xc4, 0x7b,
        0x10, 0x00, 0x18, 0xc4, 0x7b, 0x20, 0xc4, 0x7b, 0x28, 0xc4, 0x7b,
    ];
    assert_eq!(
        std::fs::read(tmp.path().join("pstree.img")).expect("read back"),
        expected
    );
    assert_eq!(dir.pstree().expect("pstree"), vec![entry]);
}

#[test]
fn refuses_incomplete_and_misplaced_entries() {
    let (tmp, dir) = tempdir();
    let mut writer = dir.create_image(ImageKind::Fs, 7).expect("prepare");
    let err = writer.write_raw_entry(&[0x08, 0x01]).unwrap_err();
    assert!(
        matches!(&err, ImageError::IncompleteEntry { field, entry: 0, .. } if field == "root_id"),
        "{err:?}"
    );
    let err = writer.write_entry(&PstreeEntry::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::WrongMessage {
                expected: "criu.images.fs_entry",
                ..
            }
        ),
        "{err:?}"
    );
    let err = writer.write_extra(b"x").unwrap_err();
    assert!(
        matches!(err, ImageError::ExtraWithoutEntry { .. }),
        "{err:?}"
    );
    writer.finish().expect("finish");
    assert!(
        !tmp.path().join("fs-7.img").exists(),
        "failed writes create nothing"
    );

    let mut pagemap = dir
        .create_image(ImageKind::Pagemap, 1)
        .expect("prepare pagemap");
    let err = pagemap
        .write_entry(&Pagemap::entry(0x1000, 1, PE_PRESENT))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::WrongMessage {
                expected: "criu.images.pagemap_head",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        dir.create_image(ImageKind::Pages, 1).unwrap_err(),
        ImageError::RawImage {
            kind: ImageKind::Pages,
            ..
        }
    ));
}

#[test]
fn extra_payloads_follow_their_entry() {
    let (tmp, dir) = tempdir();
    let mut writer = dir.create_image(ImageKind::PipesData, 0).expect("prepare");
    let data = b"hello pipe";
    let entry = PipeDataEntry {
        pipe_id: 42,
        bytes: data.len() as u32,
        size: Some(65536),
    };
    writer.write_entry_with_extra(&entry, data).expect("write");
    writer
        .write_entry(&PipeDataEntry {
            pipe_id: 43,
            bytes: 0,
            size: None,
        })
        .expect("write");
    assert_eq!(writer.finish().expect("finish"), 2);
    let image = decode_any(tmp.path().join("pipes-data.img")).expect("decode");
    assert_eq!(image.kind, ImageKind::PipesData);
    assert_eq!(image.entries[0].extra, data);
    assert_eq!(
        image.entries[0].downcast_ref::<PipeDataEntry>(),
        Some(&entry)
    );
    assert!(image.entries[1].extra.is_empty());
}

/// Rewrites every image of every scenario through `ImageWriter` and compares
/// the files.
#[test]
fn rewriting_reference_images_is_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for src in common::all_image_dirs() {
        for entry in std::fs::read_dir(&src).expect("image dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let Some((kind, _)) = ImageKind::from_file_name(&name) else {
                continue;
            };
            if name.starts_with("pages-") {
                continue;
            }
            let image = decode_any(&path).expect("decode");
            let out = tmp.path().join(&name);
            let mut writer = ImageWriter::create(&out, kind).expect("prepare");
            for e in &image.entries {
                writer
                    .write_raw_entry(&e.message.encode_message())
                    .expect("entry");
                if !e.extra.is_empty() {
                    writer.write_extra(&e.extra).expect("extra");
                }
            }
            writer.finish().expect("finish");
            assert_eq!(
                std::fs::read(&out).expect("read back"),
                std::fs::read(&path).expect("read reference"),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn pagemap_and_pages_round_trip() {
    let (tmp, dir) = tempdir();
    let map = Pagemap {
        head: PagemapHead { pages_id: 3 },
        entries: vec![
            Pagemap::entry(0x1000, 2, PE_PRESENT),
            Pagemap::entry(0x5000, 1, PE_PARENT),
            Pagemap::entry(0x8000, 1, PE_PRESENT | PE_LAZY),
        ],
    };
    dir.write_pagemap(ImageKind::Pagemap, 77, &map)
        .expect("write pagemap");
    let mut pages = dir.create_pages(3).expect("create pages");
    assert!(
        pages.write_pages(&[1u8; 100]).is_err(),
        "partial pages are refused"
    );
    pages.write_pages(&[1u8; 8192]).expect("run 1");
    pages.write_pages(&[2u8; 4096]).expect("run 3");
    assert_eq!(pages.finish().expect("finish"), 3 * 4096);

    let back = dir.pagemap(77).expect("read").expect("exists");
    assert_eq!(back, map);
    let runs: Vec<PageRun> = back.runs().collect();
    assert_eq!(runs[0].pages_offset, Some(0));
    assert_eq!(runs[1].pages_offset, None);
    assert_eq!(runs[2].pages_offset, Some(8192));
    assert_eq!(back.present_bytes(), 3 * 4096);
    let reader = dir.open_pages(back.head.pages_id).expect("open pages");
    assert_eq!(reader.read_run(&runs[2]).expect("run 3"), vec![2u8; 4096]);

    // An empty pages file is still created eagerly.
    dir.create_pages(9)
        .expect("create")
        .finish()
        .expect("finish");
    assert_eq!(
        std::fs::metadata(tmp.path().join("pages-9.img"))
            .expect("exists")
            .len(),
        0
    );
}

#[test]
fn legacy_pagemap_entries_are_normalised() {
    use criu_proto::images::PagemapEntry;
    let old = PagemapEntry {
        vaddr: 0x1000,
        compat_nr_pages: 3,
        in_parent: None,
        flags: None,
        nr_pages: None,
    };
    let run = PageRun::from_entry(&old, Some(0));
    assert_eq!(
        (run.nr_pages, run.flags, run.pages_offset),
        (3, PE_PRESENT, Some(0))
    );
    let parent = PagemapEntry {
        in_parent: Some(true),
        ..old
    };
    let run = PageRun::from_entry(&parent, Some(0));
    assert_eq!((run.flags, run.pages_offset), (PE_PARENT, None));
}

#[test]
fn single_entry_helpers() {
    let (_tmp, dir) = tempdir();
    let fs = FsEntry {
        cwd_id: 9,
        root_id: 10,
        umask: Some(0o22),
    };
    dir.write_single(ImageKind::Fs, 5, &fs).expect("write fs");
    assert_eq!(dir.fs(5).expect("read fs"), Some(fs));
    let err = dir.inventory().unwrap_err();
    assert!(matches!(err, ImageError::Open { .. }), "{err:?}");
}
