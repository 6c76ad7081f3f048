//! `--auto-dedup`: a dump on top of a pre-dump punches the pages it saves
//! again out of the parent's pages file (same size, fewer blocks), and the
//! restore from the new images still gets exactly the dumped memory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use criu_tests::{alive, bin, kill_and_reap, require_root, TempDir, Workload};

fn criu(args: &[&str], dir: &Path) {
    let out = Command::new(bin("criu")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "criu {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("d.log")).unwrap_or_default()
    );
}

#[test]
fn auto_dedup_punches_the_parent_and_restores() {
    require_root();
    let w = Workload::start(16, Some("dirty=20"));
    let top = TempDir::new("dedup");
    let (one, two) = (top.path().join("1"), top.path().join("2"));
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    let pid = w.pid.to_string();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    criu(
        &["pre-dump", "-t", &pid, "-D", &s(&one), "-o", "d.log", "-v4"],
        &one,
    );
    let parent_pages = one.join("pages-1.img");
    let before = std::fs::metadata(&parent_pages).unwrap();
    // Let it rewrite part of its memory.
    let n = w.wait_for_line_after(None).n;
    w.wait_for_line_after(Some(n + 1));
    criu(
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            &s(&two),
            "--prev-images-dir",
            "../1",
            "--auto-dedup",
            "-o",
            "d.log",
            "-v4",
        ],
        &two,
    );
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);
    let after = std::fs::metadata(&parent_pages).unwrap();
    assert_eq!(after.len(), before.len(), "sizes and offsets stay");
    assert!(
        after.blocks() < before.blocks(),
        "holes punched: {} -> {} blocks",
        before.blocks(),
        after.blocks()
    );
    let log = std::fs::read_to_string(two.join("d.log")).unwrap();
    assert!(log.contains("older copies punched out"), "{log}");
    criu(&["restore", "-d", "-D", &s(&two), "-o", "r.log"], &two);
    assert!(alive(w.pid));
    let mut line = w.wait_for_line_after(Some(last));
    for _ in 0..3 {
        assert_eq!(line.consistent, Some(true), "restored memory: {line:?}");
        line = w.wait_for_line_after(Some(line.n));
    }
}
