//! Damaged images must give precise errors, never panics.

mod common;

use std::path::Path;

use criu_proto::images::{FsEntry, PstreeEntry, TimensEntry};
use criu_proto::img::magic::{IMG_COMMON_MAGIC, PIPES_DATA_MAGIC, PSTREE_MAGIC};
use criu_proto::img::{decode_any_bytes, ImageError, ImageKind, ImageReader, PagesReader};

fn header(magic: u32) -> Vec<u8> {
    [IMG_COMMON_MAGIC, magic]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn with_entry(mut bytes: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    bytes.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn reference(name: &str) -> Vec<u8> {
    std::fs::read(common::images("loop").join(name)).expect("reference image")
}

fn read_pstree(bytes: &[u8]) -> Result<Vec<PstreeEntry>, ImageError> {
    ImageReader::new(bytes, ImageKind::Pstree, "pstree.img")?.read_all()
}

#[test]
fn wrong_type_magic() {
    let bytes = reference("pstree.img");
    let err = ImageReader::new(&bytes[..], ImageKind::Core, "pstree.img").unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::BadMagic {
                offset: 4,
                found: PSTREE_MAGIC,
                kind: ImageKind::Core,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "image pstree.img has magic 0x50273030 at offset 4, expected 0x55053847 for CORE"
    );
}

#[test]
fn wrong_common_magic_and_unknown_magic() {
    let mut bytes = reference("pstree.img");
    bytes[0] ^= 0xff;
    let err = read_pstree(&bytes).unwrap_err();
    assert!(
        matches!(err, ImageError::BadMagic { offset: 0, .. }),
        "{err:?}"
    );
    let err = decode_any_bytes(&bytes, Path::new("pstree.img")).unwrap_err();
    assert!(matches!(err, ImageError::UnknownMagic { .. }), "{err:?}");
    let err = decode_any_bytes(&header(0x1234_5678), Path::new("x.img")).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::UnknownMagic {
                magic: 0x1234_5678,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_header() {
    let bytes = reference("pstree.img");
    let err = read_pstree(&bytes[..6]).unwrap_err();
    assert!(
        matches!(err, ImageError::TruncatedHeader { len: 6, .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_size_word() {
    let mut bytes = header(PSTREE_MAGIC);
    bytes.extend_from_slice(&[0x0e, 0x00]);
    let err = read_pstree(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TruncatedSize {
                entry: 0,
                offset: 8,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "image pstree.img: size word of entry 0 at offset 8 is cut short (2 of 4 bytes)"
    );
}

#[test]
fn truncated_payload() {
    let bytes = reference("pstree.img");
    let err = read_pstree(&bytes[..bytes.len() - 3]).unwrap_err();
    match err {
        ImageError::TruncatedPayload {
            entry: 0,
            offset: 8,
            size,
            got,
            ..
        } => {
            assert_eq!(u64::from(size), got + 3);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_required_fields() {
    // pstree_entry { pid = 1 } only.
    let bytes = with_entry(header(PSTREE_MAGIC), &[0x08, 0x01]);
    let err = read_pstree(&bytes).unwrap_err();
    assert!(
        matches!(&err, ImageError::MissingField { field, entry: 0, offset: 8, .. } if field == "ppid"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "image pstree.img: entry 0 at offset 8 (criu.images.pstree_entry) lacks required field ppid"
    );

    // fs_entry { cwd_id = 1 } lacks root_id.
    let bytes = with_entry(header(ImageKind::Fs.magic()), &[0x08, 0x01]);
    let mut reader =
        ImageReader::new(&bytes[..], ImageKind::Fs, "fs-1.img").expect("header is fine");
    let err = reader.read_single::<FsEntry>().unwrap_err();
    assert!(
        matches!(&err, ImageError::MissingField { field, .. } if field == "root_id"),
        "{err:?}"
    );

    // timens_entry whose monotonic clock lacks tv_nsec (nested).
    let payload = [0x0a, 0x02, 0x08, 0x01, 0x12, 0x04, 0x08, 0x00, 0x10, 0x00];
    let bytes = with_entry(header(ImageKind::Timens.magic()), &payload);
    let err = ImageReader::new(&bytes[..], ImageKind::Timens, "timens-0.img")
        .expect("header is fine")
        .read_single::<TimensEntry>()
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::MissingField { field, .. } if field == "monotonic.tv_nsec"),
        "{err:?}"
    );
    // decode_any applies the same check.
    let err = decode_any_bytes(&bytes, Path::new("timens-0.img")).unwrap_err();
    assert!(matches!(err, ImageError::MissingField { .. }), "{err:?}");
}

#[test]
fn huge_size_word() {
    let mut bytes = header(PSTREE_MAGIC);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    let err = read_pstree(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::EntryTooLarge {
                size: u32::MAX,
                entry: 0,
                offset: 8,
                ..
            }
        ),
        "{err:?}"
    );
    // Under the limit but beyond the end: truncated, without allocating 1 GiB.
    let mut bytes = header(PSTREE_MAGIC);
    bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let err = ImageReader::new(&bytes[..], ImageKind::Pstree, "pstree.img")
        .expect("header is fine")
        .with_entry_limit(u32::MAX)
        .read_raw_entry()
        .unwrap_err();
    assert!(
        matches!(err, ImageError::TruncatedPayload { got: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn garbage_payload() {
    let bytes = with_entry(header(PSTREE_MAGIC), &[0xff, 0xff, 0xff]);
    let err = read_pstree(&bytes).unwrap_err();
    assert!(
        matches!(err, ImageError::Decode { entry: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_extra_payload() {
    // pipe_data_entry { pipe_id = 7, bytes = 100 } followed by 10 bytes.
    let mut bytes = with_entry(header(PIPES_DATA_MAGIC), &[0x08, 0x07, 0x10, 100]);
    bytes.extend_from_slice(&[0xaa; 10]);
    let err = decode_any_bytes(&bytes, Path::new("pipes-data.img")).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TruncatedExtra {
                entry: 0,
                offset: 16,
                expected: 100,
                got: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn pages_read_beyond_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pages-1.img");
    std::fs::write(&path, vec![0u8; 8192]).expect("write pages");
    let pages = PagesReader::open(&path).expect("open pages");
    let mut buf = vec![0u8; 4096];
    pages.read_at(4096, &mut buf).expect("second page is there");
    let err = pages.read_at(4097, &mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::PagesOutOfRange {
                offset: 4097,
                end: 8193,
                file_len: 8192,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Every prefix and many single-byte corruptions of every reference image
/// decode or fail cleanly.
#[test]
fn no_panic_on_damaged_reference_images() {
    let mut state: u32 = 0x1234_5678;
    for dir in common::all_image_dirs() {
        for entry in std::fs::read_dir(&dir).expect("image dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.ends_with(".log") || name.starts_with("pages-") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("image");
            for len in 0..bytes.len() {
                // Cutting between entries may decode; then it must be exactly
                // the shorter file. Anything else must be an error.
                if let Ok(image) = decode_any_bytes(&bytes[..len], &path) {
                    assert_eq!(image.encode(), &bytes[..len], "{name} cut at {len}");
                }
            }
            for _ in 0..200 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let mut damaged = bytes.clone();
                let at = (state >> 8) as usize % damaged.len();
                damaged[at] ^= (state as u8) | 1;
                let _ = decode_any_bytes(&damaged, &path);
            }
        }
    }
}
