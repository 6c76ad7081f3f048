//! Golden outputs of the CRIU 4.2 reference images: `decode` (plain and
//! `--pretty`) of every image and `x DIR ps|fds|mems|rss` of every
//! scenario, compared byte for byte with the files under `tests/golden/`.
//!
//! The golden files were produced by this tool and checked to be identical
//! to the output of `crit` built from CRIU v4.2's sources, and reviewed
//! against `docs/image-format.md`. Run with `CRIT_BLESS=1` to rewrite them
//! after an intended change.

mod common;

use std::path::Path;

use common::{crit_ok, decodable, golden_dir, images, s, SCENARIOS};

fn check(golden: &Path, actual: &[u8], failures: &mut Vec<String>) {
    if std::env::var_os("CRIT_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().expect("parent")).expect("mkdir");
        std::fs::write(golden, actual).expect("write golden");
        return;
    }
    match std::fs::read(golden) {
        Ok(expected) if expected == actual => {}
        Ok(_) => failures.push(format!("{} differs", golden.display())),
        Err(e) => failures.push(format!("{}: {e}", golden.display())),
    }
}

#[test]
fn decode_matches_golden() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for scenario in SCENARIOS {
        for file in decodable(scenario) {
            let name = file.file_name().and_then(|n| n.to_str()).expect("name");
            let dir = golden_dir().join(scenario);
            let plain = crit_ok(&["decode", "-i", s(&file)]);
            check(&dir.join(format!("{name}.json")), &plain, &mut failures);
            let pretty = crit_ok(&["decode", "-i", s(&file), "--pretty"]);
            check(
                &dir.join(format!("{name}.pretty.json")),
                &pretty,
                &mut failures,
            );
            checked += 2;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 100, "only {checked} outputs checked");
}

#[test]
fn explorers_match_golden() {
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        for what in ["ps", "fds", "mems", "rss"] {
            let out = crit_ok(&["x", s(&images(scenario)), what]);
            assert!(!out.is_empty());
            check(
                &golden_dir().join(scenario).join(format!("x-{what}.txt")),
                &out,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn reference_images_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    for scenario in SCENARIOS {
        for file in decodable(scenario) {
            for pretty in [false, true] {
                let json = tmp.path().join("img.json");
                let back = tmp.path().join("img.bin");
                let mut args = vec!["decode", "-i", s(&file), "-o", s(&json)];
                if pretty {
                    args.push("--pretty");
                }
                crit_ok(&args);
                crit_ok(&["encode", "-i", s(&json), "-o", s(&back)]);
                let original = std::fs::read(&file).expect("read image");
                let again = std::fs::read(&back).expect("read encoded");
                assert!(
                    original == again,
                    "{} (pretty {pretty}) differs",
                    file.display()
                );
                n += 1;
            }
        }
    }
    assert!(n >= 100);
}
