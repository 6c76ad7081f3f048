//! Incremental dumps of a whole tree: a root with threads that keeps
//! writing part of its memory, three workers, a zombie and a grandchild are
//! pre-dumped twice (splice, then read mode), dumped, and restored lazily.
//! Every process is tracked, so the final dump holds only what changed;
//! the restored tree carries on with exactly its dumped memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu_proto::img::pages::PE_PARENT;
use criu_proto::img::ImagesDir;
use criu_tests::{alive, bin, criu_ok, kill_and_reap, log_of, require_root, TempDir, Workload};

/// Every pid of the tree: root, w0, w1, w2, zombie, grandchild.
fn tree_pids(w: &Workload) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&w.log).unwrap_or_default();
        let find = |tag: &str| -> Option<Vec<i32>> {
            let l = text.lines().find(|l| l.starts_with(tag))?;
            l.split(' ').skip(1).map(|x| x.parse().ok()).collect()
        };
        if let (Some(t), Some(g)) = (find("tree "), find("grand ")) {
            return vec![w.pid, t[0], t[1], t[2], t[3], g[0]];
        }
        assert!(Instant::now() < deadline, "no tree pids logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Last `N` of the `TAG N` lines of the workload's log.
fn last_tagged(w: &Workload, tag: &str) -> Option<u64> {
    std::fs::read_to_string(&w.log)
        .ok()?
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .next_back()
}

fn pages_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            name.starts_with("pages-")
                .then(|| e.metadata().ok())
                .flatten()
        })
        .map(|m| m.len())
        .sum()
}

#[test]
fn tree_with_threads_pre_dumps_dump_and_lazy_restore() {
    require_root();
    let w = Workload::start(8, Some("tree threads 2 dirty=5"));
    let pids = tree_pids(&w);
    let live: Vec<u32> = [0, 1, 2, 3, 5].iter().map(|&i| pids[i] as u32).collect();
    let top = TempDir::new("incr-tree");
    let dirs: Vec<_> = (1..=3)
        .map(|i| {
            let p = top.path().join(i.to_string());
            std::fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let root = w.pid.to_string();
    let mut seen = w.wait_for_line_after(None).n;
    for (i, dir) in dirs.iter().enumerate() {
        let d = s(dir);
        let parent = format!("../{i}");
        let action = if i < 2 { "pre-dump" } else { "dump" };
        let mut args = vec![action, "-t", &root, "-D", &d, "-o", "d.log", "-v4"];
        if i == 1 {
            args.extend(["--pre-dump-mode", "read"]);
        }
        if i > 0 {
            args.extend(["--prev-images-dir", &parent]);
        }
        criu_ok(&args, dir, "d.log");
        if i < 2 {
            // Every process runs on between pre-dumps.
            let line = w.wait_for_line_after(Some(seen));
            assert_eq!(line.consistent, Some(true));
            seen = line.n;
        }
    }
    let last = w.last_line().unwrap().n;
    let worker_counts: Vec<u64> = ["w0", "w1", "w2", "g"]
        .iter()
        .map(|t| last_tagged(&w, t).unwrap())
        .collect();
    for &p in &pids {
        kill_and_reap(p);
    }
    // Every live process has its own pagemap in each image, and the final
    // one leaves unchanged pages of each of them to the parents.
    let fin = ImagesDir::open(&dirs[2]).unwrap();
    for &pid in &live {
        let map = fin.pagemap(pid).unwrap().expect("pagemap of every process");
        assert!(
            map.runs().any(|r| r.flags & PE_PARENT != 0),
            "process {pid} was dumped whole"
        );
        for d in &dirs[..2] {
            assert!(ImagesDir::open(d).unwrap().pagemap(pid).unwrap().is_some());
        }
    }
    assert!(
        pages_bytes(&dirs[2]) < pages_bytes(&dirs[0]) / 2,
        "final dump holds only what changed"
    );

    // Lazy restore of the whole tree.
    let d = s(&dirs[2]);
    let mut daemon = Command::new(bin("criu"))
        .args(["lazy-pages", "-D", &d, "-o", "lazy.log", "-v4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dirs[2].join("lazy-pages.socket").exists() {
        assert!(Instant::now() < deadline, "no lazy-pages socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = Command::new(bin("criu"))
        .args([
            "restore",
            "-d",
            "-D",
            &d,
            "--lazy-pages",
            "-o",
            "r.log",
            "-v4",
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = daemon.kill();
        let _ = daemon.wait();
        panic!(
            "restore: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_of(&dirs[2], "r.log")
        );
    }
    let status = daemon.wait().unwrap();
    let mut stats = String::new();
    std::io::Read::read_to_string(&mut daemon.stdout.take().unwrap(), &mut stats).unwrap();
    assert!(status.success(), "{}", log_of(&dirs[2], "lazy.log"));
    assert!(stats.contains("tasks=5 "), "{stats}");
    assert!(stats.contains("pages_present=0"), "{stats}");

    let mut line = w.wait_for_line_after(Some(last));
    for _ in 0..3 {
        assert_eq!(line.consistent, Some(true), "restored memory: {line:?}");
        line = w.wait_for_line_after(Some(line.n));
    }
    for (t, before) in ["w0", "w1", "w2", "g"].iter().zip(&worker_counts) {
        assert!(
            last_tagged(&w, t).unwrap() > *before,
            "{t} runs on after the restore"
        );
    }
    assert!(alive(pids[0]));
    for &p in &pids {
        kill_and_reap(p);
    }
}
