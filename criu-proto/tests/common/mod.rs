//! Helpers shared by the image tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

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

/// The image directory of one scenario (`loop`, `threads`, `tree`, `pidns`).
pub fn images(scenario: &str) -> PathBuf {
    testdata().join(scenario).join("images")
}

/// Every scenario's image directory.
pub fn all_image_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata directory is readable")
        .filter_map(|e| e.ok().map(|e| e.path().join("images")))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 4,
        "expected at least 4 scenarios, found {dirs:?}"
    );
    dirs
}
