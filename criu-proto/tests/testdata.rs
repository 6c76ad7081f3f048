//! Decodes every image CRIU 4.2 wrote for the reference scenarios and checks
//! that prost re-encodes each file byte for byte.

mod common;

use std::collections::BTreeMap;

use criu_proto::images::{
    core_entry, CoreEntry, FdTypes, PagemapEntry, PipeDataEntry, PstreeEntry,
};
use criu_proto::img::pages::{PE_LAZY, PE_PRESENT};
use criu_proto::img::{decode_any, ImageKind, ImageReader, ImagesDir, Layout};

#[test]
fn every_reference_image_round_trips() {
    let mut seen: BTreeMap<ImageKind, usize> = BTreeMap::new();
    for dir in common::all_image_dirs() {
        for entry in std::fs::read_dir(&dir).expect("image dir is readable") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
                .to_owned();
            if name.ends_with(".log") {
                continue;
            }
            let (kind, _) = ImageKind::from_file_name(&name)
                .unwrap_or_else(|| panic!("{}: unknown file name", path.display()));
            *seen.entry(kind).or_default() += 1;
            let bytes = std::fs::read(&path).expect("image is readable");
            if kind.layout() == Layout::Raw {
                assert_eq!(bytes.len() % 4096, 0, "{name}: raw pages are whole pages");
                continue;
            }
            let image = decode_any(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(image.kind, kind, "{name}: magic and name agree");
            assert!(
                !image.entries.is_empty(),
                "{name}: CRIU never writes entry-less images"
            );
            for (i, entry) in image.entries.iter().enumerate() {
                assert_eq!(
                    entry.message.encode_message(),
                    entry.payload,
                    "{name}: entry {i} ({}) re-encodes identically",
                    entry.message.message_name()
                );
            }
            assert_eq!(
                image.encode(),
                bytes,
                "{name}: whole file re-encodes identically"
            );
        }
    }
    for kind in [
        ImageKind::Inventory,
        ImageKind::Pstree,
        ImageKind::Core,
        ImageKind::Ids,
        ImageKind::Mm,
        ImageKind::Fs,
        ImageKind::Pagemap,
        ImageKind::Pages,
        ImageKind::Fdinfo,
        ImageKind::Files,
        ImageKind::Seccomp,
        ImageKind::Timens,
        ImageKind::StatsDump,
        ImageKind::PipesData,
    ] {
        assert!(
            seen.contains_key(&kind),
            "no {kind:?} image in the reference data"
        );
    }
}

#[test]
fn loop_values() {
    let dir = ImagesDir::open(common::images("loop")).expect("open loop images");

    let pstree = dir.pstree().expect("pstree");
    assert_eq!(
        pstree,
        vec![PstreeEntry {
            pid: 24125,
            ppid: 0,
            pgid: 24125,
            sid: 24125,
            threads: vec![24125]
        }]
    );

    let inventory = dir.inventory().expect("inventory");
    assert_eq!(inventory.img_version, 2);
    assert_eq!(inventory.fdinfo_per_id, Some(true));
    assert_eq!(inventory.ns_per_id, Some(true));
    assert_eq!(
        inventory.root_ids.as_ref().map(|ids| ids.pid_ns_id),
        Some(Some(1))
    );

    let core: CoreEntry = dir.core(24125).expect("core");
    assert_eq!(core.mtype(), core_entry::March::X8664);
    let tc = core.tc.as_ref().expect("leader core has tc");
    assert_eq!(tc.comm, "loop");
    assert_eq!(tc.task_state, 1);
    assert_eq!(tc.sigactions.len(), 62);
    let regs = &core.thread_info.as_ref().expect("x86 thread info").gpregs;
    assert_ne!(regs.ip, 0);

    let ids = dir.ids(24125).expect("ids").expect("ids image exists");
    assert_eq!(ids.files_id, 2);
    let fds = dir.fdinfo(ids.files_id).expect("fdinfo");
    assert_eq!(
        fds.iter().map(|f| f.fd).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 10, 251]
    );
    assert_eq!(fds[6].r#type(), FdTypes::Pipe);

    let files = dir.files().expect("files");
    let mm = dir.mm(24125).expect("mm").expect("mm image exists");
    let exe = files
        .iter()
        .find(|f| f.id == mm.exe_file_id)
        .expect("exe file entry");
    assert_eq!(
        exe.reg.as_ref().map(|r| r.name.as_str()),
        Some("/tmp/criu-testdata/bin/loop")
    );
    assert!(mm.vmas.windows(2).all(|w| w[0].start < w[1].start));
    assert_eq!(
        dir.fs(24125).expect("fs").map(|fs| fs.umask),
        Some(Some(0o22))
    );

    let pagemap = dir
        .pagemap(24125)
        .expect("pagemap")
        .expect("pagemap image exists");
    assert_eq!(pagemap.head.pages_id, 1);
    assert_eq!(pagemap.entries.len(), 17);
    for entry in &pagemap.entries {
        // CRIU 4.2 writes the count in field 5 and 0 in field 2.
        assert_eq!(entry.compat_nr_pages, 0);
        assert!(entry.nr_pages.is_some_and(|n| n > 0));
        assert!(matches!(entry.flags, Some(f) if f == PE_PRESENT || f == PE_PRESENT | PE_LAZY));
    }
    let pages = dir.open_pages(pagemap.head.pages_id).expect("pages-1.img");
    assert_eq!(pages.len(), pagemap.present_bytes());
    assert_eq!(pages.len(), 4_313_088);
    let last = pagemap.runs().last().expect("runs");
    assert_eq!(
        pages.read_run(&last).expect("last run").len() as u64,
        last.len_bytes()
    );
    assert_eq!(
        last.pages_offset.map(|o| o + last.len_bytes()),
        Some(pages.len())
    );
}

#[test]
fn threads_tree_and_pidns_values() {
    let threads = ImagesDir::open(common::images("threads")).expect("open threads images");
    let tree = threads.pstree().expect("pstree");
    assert_eq!(tree[0].threads, vec![24148, 24149, 24150, 24151, 24152]);
    for &tid in &tree[0].threads {
        let core = threads.core(tid).expect("thread core");
        assert_eq!(core.tc.is_some(), tid == 24148, "only the leader has tc");
        assert!(core.thread_core.is_some());
    }

    let tree_dir = ImagesDir::open(common::images("tree")).expect("open tree images");
    let procs = tree_dir.pstree().expect("pstree");
    assert_eq!(
        procs.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![24175, 24176, 24177, 24178]
    );
    assert!(procs[1..].iter().all(|p| p.ppid == 24175));
    let pipes: Vec<PipeDataEntry> = tree_dir
        .read_all(ImageKind::PipesData, 0)
        .expect("pipes-data");
    assert_eq!(pipes.len(), 3);
    assert!(pipes.iter().all(|p| p.size == Some(65536)));

    let pidns = ImagesDir::open(common::images("pidns")).expect("open pidns images");
    assert_eq!(pidns.pstree().expect("pstree")[0].pid, 1);
    assert_eq!(
        pidns.core(1).expect("core-1").tc.map(|tc| tc.comm),
        Some("pidns".to_owned())
    );
}

#[test]
fn typed_reader_reads_pagemap_entries_in_order() {
    let path = common::images("loop").join("pagemap-24125.img");
    let mut reader = ImageReader::open(&path, ImageKind::Pagemap).expect("open pagemap");
    let head = reader
        .read_entry::<criu_proto::images::PagemapHead>()
        .expect("head");
    assert_eq!(head.map(|h| h.pages_id), Some(1));
    let entries: Vec<PagemapEntry> = reader.read_all().expect("entries");
    assert_eq!(entries.len(), 17);
    assert_eq!(reader.entries_read(), 18);
    assert_eq!(
        reader.offset(),
        std::fs::metadata(&path).expect("stat").len()
    );
}
