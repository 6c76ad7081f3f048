//! A tree whose processes share private memory copy-on-write
//! (`criu-wl-cow`): each keeps its own view of the region after a restore
//! (pages rewritten, dropped or still shared, by the root and by its
//! children), and the restore maps the shared memory once before the fork.

use std::path::Path;
use std::time::{Duration, Instant};

use criu_tests::{become_subreaper, bin, criu_ok, kill_and_reap, log_of, require_root, TempDir};

const NAMES: [&str; 4] = ["root", "same", "rewrite", "drop"];

/// Waits until every process has logged `count` lines from byte `from` of
/// the log on; returns those lines.
fn wait_lines(dir: &Path, from: usize, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log_of(dir, "log");
        let lines: Vec<String> = log[from.min(log.len())..]
            .lines()
            .map(str::to_owned)
            .collect();
        let enough = NAMES.iter().all(|n| {
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("{n} ")) && !l.contains(" pid "))
                .count()
                >= count
        });
        if enough {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "too few lines in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shared_private_memory_keeps_every_view() {
    require_root();
    become_subreaper();
    let dir = TempDir::new("cow");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let out = std::process::Command::new(bin("criu-wl-cow"))
        .arg(dir.path())
        .output()
        .expect("start criu-wl-cow");
    assert!(out.status.success(), "criu-wl-cow failed to start");
    let root: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let before = wait_lines(dir.path(), 0, 2);
    assert!(before.iter().all(|l| !l.contains(" bad")), "{before:?}");
    let mut pids: Vec<i32> = before
        .iter()
        .filter_map(|l| l.split_once(" pid ").map(|(_, p)| p.parse().unwrap()))
        .collect();
    assert_eq!(pids.len(), 4, "{before:?}");
    // The root first: children killed before it would stay its zombies.
    pids.sort_by_key(|&p| p != root);
    let img = images.to_str().unwrap();
    criu_ok(
        &[
            "dump",
            "-t",
            &root.to_string(),
            "-D",
            img,
            "-o",
            "dump.log",
            "-v4",
        ],
        &images,
        "dump.log",
    );
    for &p in &pids {
        kill_and_reap(p);
    }
    let from = log_of(dir.path(), "log").len();
    criu_ok(
        &["restore", "-d", "-D", img, "-o", "restore.log", "-v4"],
        &images,
        "restore.log",
    );
    let after = wait_lines(dir.path(), from, 3);
    for &p in &pids {
        kill_and_reap(p);
    }
    let bad: Vec<&String> = after.iter().filter(|l| !l.ends_with(" ok")).collect();
    assert!(bad.is_empty(), "views differ after the restore: {bad:?}");
    let log = log_of(&images, "restore.log");
    assert!(
        log.contains("shared memory premapped"),
        "the shared region was not premapped:\n{log}"
    );
}
