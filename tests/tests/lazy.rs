//! Lazy restore end to end: `criu lazy-pages` serves the memory of a
//! `restore --lazy-pages` from the images (through a chain of pre-dumps) or
//! from a `page-server --lazy-pages`; the restored workload runs before all
//! of its memory has arrived, every page arrives exactly once, and the
//! memory is exactly what was dumped (the workload checks itself: `ok`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{
    alive, bin, criu_ok, kill_and_reap, log_of, req, require_root, Connect, TempDir, Workload,
};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A running `criu lazy-pages`.
struct LazyDaemon {
    child: Child,
    work: PathBuf,
}

impl LazyDaemon {
    /// Starts the daemon with `args` after `lazy-pages` and waits for its
    /// socket in `work`.
    fn start(args: &[&str], work: &Path) -> LazyDaemon {
        let child = Command::new(bin("criu"))
            .arg("lazy-pages")
            .args(args)
            .args(["-o", "lazy.log", "-v4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut d = LazyDaemon {
            child,
            work: work.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !work.join("lazy-pages.socket").exists() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("lazy-pages exited: {status}\n{}", log_of(work, "lazy.log"));
            }
            assert!(Instant::now() < deadline, "no lazy-pages socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        d.work = work.to_owned();
        d
    }

    /// Waits (up to 60 s) for the daemon to exit once every page arrived;
    /// returns its statistics.
    fn finish(mut self) -> HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}", log_of(&self.work, "lazy.log"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lazy-pages still running\n{}",
                log_of(&self.work, "lazy.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.child.stdout.take().unwrap();
        let line = BufReader::new(out).lines().next().unwrap().unwrap();
        line.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for LazyDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every lazy page arrived once, and the program ran before they all had.
fn assert_lazy_stats(st: &HashMap<String, u64>, min_pages: u64) {
    let get = |k: &str| *st.get(k).unwrap_or_else(|| panic!("no {k} in {st:?}"));
    assert!(get("tasks") >= 1, "{st:?}");
    assert!(get("pages_total") >= min_pages, "{st:?}");
    assert_eq!(
        get("pages_copied") + get("pages_dropped"),
        get("pages_total"),
        "{st:?}"
    );
    assert_eq!(get("pages_present"), 0, "{st:?}");
    assert!(get("faults_after_finish") > 0, "{st:?}");
    assert!(get("pages_on_fault") > 0, "{st:?}");
}

fn assert_restored_consistent(w: &Workload, last_before: u64) {
    assert!(alive(w.pid));
    let mut line = w.wait_for_line_after(Some(last_before));
    for _ in 0..3 {
        assert_eq!(line.consistent, Some(true), "restored memory: {line:?}");
        line = w.wait_for_line_after(Some(line.n));
    }
}

#[test]
fn three_pre_dumps_dump_then_lazy_restore() {
    require_root();
    let w = Workload::start(64, Some("dirty=5 remap"));
    let top = TempDir::new("lazy-chain");
    let pid = w.pid.to_string();
    let dirs: Vec<PathBuf> = (1..=4)
        .map(|i| {
            let p = top.path().join(i.to_string());
            std::fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    let mut seen = w.wait_for_line_after(None).n;
    for (i, dir) in dirs.iter().enumerate() {
        let d = s(dir);
        let parent = format!("../{i}");
        let action = if i < 3 { "pre-dump" } else { "dump" };
        let mut args = vec![action, "-t", &pid, "-D", &d, "-o", "d.log", "-v4"];
        if i > 0 {
            args.extend(["--prev-images-dir", &parent]);
        }
        criu_ok(&args, dir, "d.log");
        if i < 3 {
            seen = w.wait_for_line_after(Some(seen)).n;
        }
    }
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);

    let d = s(&dirs[3]);
    let daemon = LazyDaemon::start(&["-D", &d], &dirs[3]);
    criu_ok(
        &[
            "restore",
            "-d",
            "-D",
            &d,
            "--lazy-pages",
            "-o",
            "restore.log",
            "-v4",
        ],
        &dirs[3],
        "restore.log",
    );
    let st = daemon.finish();
    // 64 MiB of pattern, spread over the four images of the chain.
    assert_lazy_stats(&st, 64 * 256);
    assert_restored_consistent(&w, last);
}

#[test]
fn lazy_restore_from_a_remote_page_server_over_rpc() {
    require_root();
    let w = Workload::start(32, Some("dirty=5"));
    let top = TempDir::new("lazy-remote");
    let images = top.path().join("images");
    let local = top.path().join("local");
    std::fs::create_dir(&images).unwrap();
    std::fs::create_dir(&local).unwrap();
    let pid = w.pid.to_string();
    let i = s(&images);
    criu_ok(
        &["dump", "-t", &pid, "-D", &i, "-o", "dump.log", "-v4"],
        &images,
        "dump.log",
    );
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);
    // The daemon's side holds only the layout: no pages file.
    for e in std::fs::read_dir(&images).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("mm-") || name.starts_with("pagemap-") || name == "pstree.img" {
            std::fs::copy(images.join(&name), local.join(&name)).unwrap();
        }
    }

    let mut server = Command::new(bin("criu"))
        .args(["page-server", "--lazy-pages", "-D", &i, "--port", "0"])
        .args(["-o", "ps.log", "-v4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim().to_owned();
    let l = s(&local);
    let daemon = LazyDaemon::start(
        &[
            "-D",
            &l,
            "--page-server",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
        ],
        &local,
    );

    // RESTORE over RPC, the lazy-pages socket in the work directory.
    let images_fd = std::fs::File::open(&images).unwrap();
    let work_fd = std::fs::File::open(&local).unwrap();
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: images_fd.as_raw_fd(),
        work_dir_fd: Some(work_fd.as_raw_fd()),
        lazy_pages: Some(true),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let c = Connect::Swrk(bin("criu-swrk"));
    let client = c.open();
    let resp = client.call(&r).unwrap();
    let _ = client.wait();
    assert!(resp.success, "{resp:?}\n{}", log_of(&local, "restore.log"));
    let st = daemon.finish();
    assert_lazy_stats(&st, 32 * 256);
    assert_eq!(st["pages_remote"], st["pages_copied"], "{st:?}");
    let status = server.wait().unwrap();
    assert!(status.success(), "{}", log_of(&images, "ps.log"));
    assert_restored_consistent(&w, last);
}

#[test]
fn lazy_restore_without_a_daemon_fails_clearly() {
    require_root();
    let w = Workload::start(4, None);
    let dir = TempDir::new("lazy-nodaemon");
    let d = s(dir.path());
    let pid = w.pid.to_string();
    criu_ok(
        &["dump", "-t", &pid, "-D", &d, "-o", "dump.log"],
        dir.path(),
        "dump.log",
    );
    kill_and_reap(w.pid);
    let out = Command::new(bin("criu"))
        .args(["restore", "-d", "-D", &d, "--lazy-pages"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the lazy-pages daemon"),
        "{err}"
    );
    assert!(!alive(w.pid), "nothing restored");
    // Lazy dumps are refused by name.
    let out = Command::new(bin("criu"))
        .args(["dump", "-t", "1", "-D", &d, "--lazy-pages"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lazy-pages"));
}

/// `N ok|bad` lines of a `criu-wl-lazyfork` log: (last N, all ok).
fn fork_log(log: &Path) -> (Option<u64>, bool) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut last = None;
    let mut all_ok = true;
    for l in text.lines() {
        if let Some((n, v)) = l.split_once(' ') {
            last = n.parse().ok();
            all_ok &= v == "ok";
        }
    }
    (last, all_ok)
}

fn wait_fork_log_after(log: &Path, after: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Some(n), _) = fork_log(log) {
            if after.is_none_or(|a| n > a + 2) {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "no new checks after {after:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lazy_restore_of_a_program_that_keeps_forking() {
    require_root();
    criu_tests::become_subreaper();
    let top = TempDir::new("lazy-fork");
    let log = top.path().join("wl.log");
    let images = top.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let out = Command::new(bin("criu-wl-lazyfork"))
        .arg(&log)
        .arg("32")
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    wait_fork_log_after(&log, None);
    let i = s(&images);
    criu_ok(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            &i,
            "-o",
            "dump.log",
            "-v4",
        ],
        &images,
        "dump.log",
    );
    // A checker caught by the dump is gone with it: reap every task of the
    // images so that their pids are free again.
    let tree = criu_proto::img::ImagesDir::open(&images)
        .unwrap()
        .pstree()
        .unwrap();
    for t in &tree {
        kill_and_reap(i32::try_from(t.pid).unwrap());
    }
    let (last, ok) = fork_log(&log);
    assert!(ok, "checks failed before the dump");

    let daemon = LazyDaemon::start(&["-D", &i], &images);
    criu_ok(
        &[
            "restore",
            "-d",
            "-D",
            &i,
            "--lazy-pages",
            "-o",
            "restore.log",
            "-v4",
        ],
        &images,
        "restore.log",
    );
    let st = daemon.finish();
    assert_lazy_stats(&st, 32 * 256);
    wait_fork_log_after(&log, last);
    let (_, ok) = fork_log(&log);
    assert!(alive(pid));
    kill_and_reap(pid);
    assert!(ok, "a forked checker saw wrong memory: {st:?}");
}
