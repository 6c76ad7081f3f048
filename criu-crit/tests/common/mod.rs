//! Helpers shared by the crit tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Root of the CRIU 4.2 reference images (`CRIU_TESTDATA` overrides it).
pub fn testdata() -> PathBuf {
    let root = std::env::var_os("CRIU_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/testdata/criu-4.2"));
    assert!(
        root.join("loop/images/inventory.img").is_file(),
        "CRIU 4.2 reference images not found under {} (set CRIU_TESTDATA)",
        root.display()
    );
    root
}

/// The scenarios of the reference images.
pub const SCENARIOS: [&str; 4] = ["loop", "pidns", "threads", "tree"];

/// The image directory of one scenario.
pub fn images(scenario: &str) -> PathBuf {
    testdata().join(scenario).join("images")
}

/// The decodable images of a scenario (everything but raw pages and the
/// log), sorted by name.
pub fn decodable(scenario: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(images(scenario))
        .expect("images directory is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with("pages-") && name != "dump.log"
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{scenario}: only {files:?}");
    files
}

/// Directory of the committed golden outputs.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs our `crit` binary.
pub fn crit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crit"))
        .args(args)
        .output()
        .expect("run crit")
}

/// Runs our `crit` and returns stdout, failing the test on a non-zero exit.
pub fn crit_ok(args: &[&str]) -> Vec<u8> {
    let out = crit(args);
    assert!(
        out.status.success(),
        "crit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `path` as a `&str`.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
