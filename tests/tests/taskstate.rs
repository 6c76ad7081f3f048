//! Per-task kernel state across dump and restore, checked from the inside
//! by `criu-wl-taskstate`: pending signals (shared and per-thread, a
//! real-time signal queued twice), the blocked and ignored sets, interval
//! and POSIX timers (same ids, clocks, targets and intervals), `prctl`
//! state, credentials, seccomp filters, rseq, `madvise`/`mlock` state,
//! growsdown stacks and guard pages; also with `leave_running`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use criu_proto::images::{CoreEntry, SeccompEntry};
use criu_proto::img::{ImageKind, ImagesDir};
use criu_proto::rpc::{CriuOpts, CriuReqType as T, CriuResp};
use criu_tests::{
    alive, become_subreaper, bin, kill_and_reap, req, require_root, Connect, TempDir,
};

/// What every round of checks reports.
const CHECKS: [&str; 11] = [
    "signals",
    "itimers",
    "posix-timers",
    "prctl",
    "creds",
    "seccomp",
    "rseq",
    "memory",
    "thread-signals",
    "thread-seccomp",
    "thread-rseq",
];

/// A running `criu-wl-taskstate`.
struct Target {
    pid: i32,
    dir: TempDir,
    /// Kernel ids of its timers A, C, D and of the deleted one.
    timers: [i32; 4],
}

impl Target {
    fn start(extra: &[&str]) -> Target {
        become_subreaper();
        let dir = TempDir::new("taskstate");
        let out = std::process::Command::new(bin("criu-wl-taskstate"))
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("start criu-wl-taskstate");
        assert!(out.status.success(), "criu-wl-taskstate failed to start");
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("criu-wl-taskstate prints its pid");
        let line = wait_line(dir.path(), |l| l.starts_with("ready "));
        let ids: Vec<i32> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().expect("timer id"))
            .collect();
        Target {
            pid,
            dir,
            timers: ids.try_into().expect("four timer ids"),
        }
    }

    /// Asks for one round of checks under `tag`; returns `name -> result`.
    fn check(&self, tag: &str) -> Vec<(String, String)> {
        std::fs::write(self.dir.path().join("go"), tag).unwrap();
        let done = format!("{tag} done");
        wait_line(self.dir.path(), |l| l == done);
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap();
        log.lines()
            .filter_map(|l| l.strip_prefix(&format!("{tag} ")))
            .filter(|l| *l != "done")
            .map(|l| {
                let (name, result) = l.split_once(' ').unwrap();
                (name.to_owned(), result.to_owned())
            })
            .collect()
    }

    fn assert_all_ok(&self, tag: &str, extra: &[&str]) {
        let results = self.check(tag);
        let failed: Vec<String> = results
            .iter()
            .filter(|(_, r)| r != "ok")
            .map(|(n, r)| format!("{n}: {r}"))
            .collect();
        assert!(
            failed.is_empty(),
            "{tag}: checks of pid {} failed:\n{}",
            self.pid,
            failed.join("\n")
        );
        let mut names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
        let mut want: Vec<&str> = CHECKS.iter().chain(extra).copied().collect();
        names.sort_unstable();
        want.sort_unstable();
        assert_eq!(names, want, "{tag}: every check reported once");
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if alive(self.pid) {
            kill_and_reap(self.pid);
        }
    }
}

/// Waits up to 20 s for a log line matching `pred` and returns it.
fn wait_line(dir: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| pred(l)) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no awaited line in the workload log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn call(ty: T, opts: CriuOpts) -> CriuResp {
    let c = Connect::Swrk(bin("criu"));
    let mut r = req(ty);
    r.opts = Some(opts);
    let client = c.open();
    let resp = client.call(&r).expect("request answered");
    let _ = client.wait();
    resp
}

fn dump(pid: i32, images: &Path, leave_running: bool) -> CriuResp {
    let handle = std::fs::File::open(images).unwrap();
    call(
        T::Dump,
        CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            pid: Some(pid),
            log_file: Some("dump.log".into()),
            log_level: Some(4),
            leave_running: Some(leave_running),
            ..Default::default()
        },
    )
}

fn restore(images: &Path) -> CriuResp {
    let handle = std::fs::File::open(images).unwrap();
    call(
        T::Restore,
        CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            log_file: Some("restore.log".into()),
            log_level: Some(4),
            ..Default::default()
        },
    )
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The images say what the workload set up, in CRIU's layout.
fn assert_images(t: &Target, images: &Path) {
    let dir = ImagesDir::open(images).unwrap();
    let core: CoreEntry = dir
        .read_single(ImageKind::Core, t.pid as u64)
        .unwrap()
        .expect("core image of the leader");
    let tc = core.tc.as_ref().expect("tc");
    let mut ids: Vec<u32> = tc
        .timers
        .as_ref()
        .expect("timers")
        .posix
        .iter()
        .map(|p| p.it_id)
        .collect();
    ids.sort_unstable();
    let mut want: Vec<u32> = t.timers[..3].iter().map(|&i| i as u32).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "posix timer ids");
    let shared = &tc.signals_s.as_ref().expect("shared signals").signals;
    assert!(shared.len() >= 2, "the RT signal queued twice is dumped");
    let th = core.thread_core.as_ref().expect("thread_core");
    assert_eq!(th.seccomp_mode, Some(2));
    let seccomp: SeccompEntry = dir
        .read_single(ImageKind::Seccomp, 0)
        .unwrap()
        .expect("seccomp.img");
    assert_eq!(
        seccomp.seccomp_filters.len(),
        3,
        "two filters of the leader and one of the thread"
    );
    let at = th.seccomp_filter.expect("leader's filter index") as usize;
    assert!(at < 3);
}

#[test]
fn task_state_survives_dump_and_restore() {
    require_root();
    let t = Target::start(&["guard"]);
    let images = TempDir::new("taskstate-img");
    let resp = dump(t.pid, images.path(), false);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    assert_images(&t, images.path());
    kill_and_reap(t.pid);
    let resp = restore(images.path());
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    assert_eq!(resp.restore.map(|r| r.pid), Some(t.pid));
    t.assert_all_ok("restored", &["guard"]);
}

#[test]
fn task_state_survives_leave_running_and_restore() {
    require_root();
    let t = Target::start(&["guard"]);
    let images = TempDir::new("taskstate-img");
    let resp = dump(t.pid, images.path(), true);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    assert!(alive(t.pid), "leave_running keeps the target");
    t.assert_all_ok("original", &["guard"]);
    kill_and_reap(t.pid);
    std::fs::remove_file(t.dir.path().join("go")).unwrap();
    let resp = restore(images.path());
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    t.assert_all_ok("restored", &["guard"]);
}
