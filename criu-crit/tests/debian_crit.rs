//! Comparison with the `crit` of Debian's `criu` package (3.17), on the
//! fields both know.
//!
//! `crit` 3.17 predates CRIU 4.2: it drops fields added since (it does not
//! know them) and calls pagemap field 2 `nr_pages` where 4.2 says
//! `compat_nr_pages`. So every member it prints must be in our output with
//! the same value (our output may have more members), for plain and
//! `--pretty` JSON of every reference image; and its `x ps|fds|mems`
//! output must equal ours.

mod common;

use std::path::Path;
use std::process::Command;

use common::{crit_ok, decodable, images, s, SCENARIOS};
use serde_json::Value;

const CRIT: &str = "/usr/bin/crit";
const PYTHON: &str = "/usr/bin/python3";

fn debian_crit(args: &[&str]) -> Vec<u8> {
    assert!(
        Path::new(CRIT).is_file() && Path::new(PYTHON).is_file(),
        "Debian's crit is needed: apt-get install criu"
    );
    let out = Command::new(PYTHON)
        .arg(CRIT)
        .args(args)
        .output()
        .expect("run Debian crit");
    assert!(
        out.status.success(),
        "Debian crit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Checks that `theirs` is contained in `ours`; returns the number of
/// scalar values compared.
fn contained(theirs: &Value, ours: &Value, path: &str, pagemap: bool) -> usize {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => t
            .iter()
            .map(|(k, v)| {
                // 3.17's pagemap field 2 is 4.2's compat_nr_pages.
                let key = if pagemap && k == "nr_pages" {
                    "compat_nr_pages"
                } else {
                    k
                };
                let mine = o
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key}: missing in our output"));
                contained(v, mine, &format!("{path}.{key}"), pagemap)
            })
            .sum(),
        (Value::Array(t), Value::Array(o)) => {
            assert_eq!(t.len(), o.len(), "{path}: lengths differ");
            t.iter()
                .zip(o)
                .enumerate()
                .map(|(i, (a, b))| contained(a, b, &format!("{path}[{i}]"), pagemap))
                .sum()
        }
        _ => {
            assert_eq!(theirs, ours, "{path}");
            1
        }
    }
}

#[test]
fn decode_agrees_on_common_fields() {
    let mut values = 0;
    for scenario in SCENARIOS {
        for file in decodable(scenario) {
            for pretty in [false, true] {
                let mut args = vec!["decode", "-i", s(&file)];
                if pretty {
                    args.push("--pretty");
                }
                let theirs: Value = serde_json::from_slice(&debian_crit(&args)).expect("json");
                let ours: Value = serde_json::from_slice(&crit_ok(&args)).expect("json");
                assert_eq!(theirs["magic"], ours["magic"]);
                let pagemap = ours["magic"] == "PAGEMAP";
                values += contained(&theirs, &ours, s(&file), pagemap);
            }
        }
    }
    assert!(values > 10_000, "only {values} values compared");
}

#[test]
fn pagemap_counts_moved_to_field_5() {
    // 3.17 reads 4.2's zero compat count; we show the real count too.
    let file = images("loop").join("pagemap-24125.img");
    let theirs: Value =
        serde_json::from_slice(&debian_crit(&["decode", "-i", s(&file)])).expect("json");
    let ours: Value = serde_json::from_slice(&crit_ok(&["decode", "-i", s(&file)])).expect("json");
    let entry = &ours["entries"][1];
    assert_eq!(theirs["entries"][1]["nr_pages"], 0);
    assert_eq!(entry["compat_nr_pages"], 0);
    assert!(entry["nr_pages"].as_u64().expect("nr_pages") > 0);
}

#[test]
fn explorers_agree() {
    for scenario in SCENARIOS {
        let dir = images(scenario);
        for what in ["ps", "fds", "mems"] {
            let args = ["x", s(&dir), what];
            assert_eq!(
                String::from_utf8_lossy(&debian_crit(&args)),
                String::from_utf8_lossy(&crit_ok(&args)),
                "x {scenario} {what}"
            );
        }
    }
}
