//! Truncated, corrupted and malformed input gives a clear error naming the
//! file, the entry and the offset, never a panic.

mod common;

use std::path::Path;

use common::{crit, decodable, images, s, SCENARIOS};
use criu_crit::{decode_image, encode_image, DecodeOptions, ImageError};

const PLAIN: DecodeOptions = DecodeOptions {
    pretty: false,
    nopl: false,
};

#[test]
fn every_truncation_is_an_error() {
    let mut cases = 0;
    for scenario in SCENARIOS {
        for file in decodable(scenario) {
            let bytes = std::fs::read(&file).expect("read");
            let header = if bytes[..4] == [0x16, 0x31, 0x31, 0x58] {
                4
            } else {
                8
            };
            for len in 0..bytes.len() {
                let cut = &bytes[..len];
                let result = decode_image(cut, &file, PLAIN);
                match result {
                    // A cut between entries leaves a shorter valid image,
                    // which encodes back to exactly the bytes kept.
                    Ok(json) => {
                        assert!(len >= header, "{}: {len}", file.display());
                        let again =
                            encode_image(json.to_text(false).as_bytes(), &file).expect("re-encode");
                        assert!(again == cut, "{}: cut at {len}", file.display());
                    }
                    Err(err) => {
                        let err = err.to_string();
                        assert!(err.contains(s(&file)), "{err}");
                        if len > header {
                            assert!(err.contains(" at offset "), "{err}");
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 10_000, "{cases}");
}

/// A small deterministic generator (xorshift) for byte mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    let mut total = 0;
    for scenario in SCENARIOS {
        for file in decodable(scenario) {
            let bytes = std::fs::read(&file).expect("read");
            for _ in 0..300 {
                let mut m = bytes.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() as usize) % m.len();
                    m[at] = rng.next() as u8;
                }
                for pretty in [false, true] {
                    let opts = DecodeOptions {
                        pretty,
                        nopl: false,
                    };
                    match decode_image(&m, &file, opts) {
                        Ok(json) => {
                            // Whatever decodes must encode again.
                            let text = json.to_text(pretty);
                            let _ = encode_image(text.as_bytes(), &file);
                        }
                        Err(_) => errors += 1,
                    }
                    total += 1;
                }
            }
        }
    }
    assert!(errors > 0 && errors < total, "{errors} of {total}");
}

fn pstree_bytes() -> Vec<u8> {
    std::fs::read(images("loop").join("pstree.img")).expect("pstree")
}

#[test]
fn errors_say_where() {
    let path = Path::new("pstree.img");
    let good = pstree_bytes();

    let err = decode_image(&good[..10], path, PLAIN).unwrap_err();
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
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "pstree.img: entry 0 at offset 8: size word cut short (2 of 4 bytes)"
    );

    let err = decode_image(&good[..good.len() - 1], path, PLAIN).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("pstree.img: entry 0 at offset 12: payload needs"),
        "{err}"
    );

    // A second entry whose payload is not protobuf.
    let mut bad = good.clone();
    bad.extend_from_slice(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    let err = decode_image(&bad, path, PLAIN).unwrap_err();
    assert!(matches!(err, ImageError::Decode { entry: 1, .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "pstree.img: entry 1 at offset {}: not a valid pstree_entry",
            good.len()
        )),
        "{err}"
    );

    // A size word far beyond the file.
    let mut huge = good[..8].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_image(&huge, path, PLAIN).unwrap_err();
    assert!(err.to_string().contains("needs 4294967295 bytes"), "{err}");

    let err = decode_image(&[1, 2], path, PLAIN).unwrap_err();
    assert!(matches!(err, ImageError::Short { len: 2, .. }));
    let err = decode_image(&[0xde, 0xad, 0xbe, 0xef], path, PLAIN).unwrap_err();
    assert!(
        err.to_string().contains("unknown magic 0xefbeadde"),
        "{err}"
    );
}

#[test]
fn truncated_extra_payload() {
    // pipes-data entry { pipe_id: 1, bytes: 9 } with only 3 bytes of data.
    let mut img = Vec::new();
    img.extend_from_slice(&0x5456_4319u32.to_le_bytes());
    img.extend_from_slice(&0x5645_3709u32.to_le_bytes());
    img.extend_from_slice(&[4, 0, 0, 0, 0x08, 0x01, 0x10, 0x09]);
    img.extend_from_slice(b"abc");
    let err = decode_image(&img, Path::new("pipes-data.img"), PLAIN).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pipes-data.img: entry 0 at offset 16: extra payload needs 9 bytes but only 3 remain"
    );
}

#[test]
fn bad_json_is_refused() {
    let path = Path::new("in.json");
    let cases: [(&str, &str); 9] = [
        ("not json", "not valid JSON"),
        (r#"{"entries": []}"#, "no \"magic\" string"),
        (r#"{"magic": "PSTREE"}"#, "no \"entries\" array"),
        (r#"{"magic": "NOPE", "entries": []}"#, "unknown magic name"),
        (r#"{"magic": "PAGES", "entries": []}"#, "unknown magic name"),
        (
            r#"{"magic": "PSTREE", "entries": [{"pid": 1}]}"#,
            "entry 0 (pstree_entry)",
        ),
        (
            r#"{"magic": "PSTREE", "entries": [{"pid": "x", "ppid": 0, "pgid": 0, "sid": 0}]}"#,
            "entry 0 (pstree_entry)",
        ),
        (
            r#"{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 9, "extra": "YWJj\n"}]}"#,
            "entries[0].extra: 3 bytes of data but bytes says 9",
        ),
        (
            r#"{"magic": "FDINFO", "entries": [{"id": 1, "flags": 0, "type": "BOGUS", "fd": 0}]}"#,
            "entry 0 (fdinfo_entry)",
        ),
    ];
    for (json, expected) in cases {
        let err = encode_image(json.as_bytes(), path).expect_err(json);
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(text.contains(expected), "{json}: {text}");
        assert!(text.starts_with("in.json"), "{text}");
    }
}

#[test]
fn cli_reports_errors_with_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cut = tmp.path().join("core-1.img");
    let core = std::fs::read(images("loop").join("core-24125.img")).expect("core");
    std::fs::write(&cut, &core[..core.len() / 2]).expect("write");
    let out = crit(&["decode", "-i", s(&cut)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("core-1.img: entry 0 at offset 12: payload needs"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let pages = images("loop").join("pages-1.img");
    let out = crit(&["decode", "-i", s(&pages)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("raw data"));

    let out = crit(&["x", s(tmp.path()), "ps"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pstree.img"));

    let out = crit(&["decode", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let out = crit(&["info"]);
    assert_eq!(out.status.code(), Some(2));
}
