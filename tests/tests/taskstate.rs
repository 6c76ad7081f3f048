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
    alive, become_subreaper, bin, kill_and_reap, log_of, req, require_root, Connect, TempDir,
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

/// The images say what the workload set up, in CRIU's layout.
fn assert_images(t: &Target, images: &Path, tsync: bool) {
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
    let filters = &seccomp.seccomp_filters;
    let at = th.seccomp_filter.expect("leader's filter index") as usize;
    assert!(at < filters.len());
    let tid = core.thread_core.as_ref().map(|_| ()).and_then(|()| {
        let pstree = dir.pstree().unwrap();
        pstree[0].threads.get(1).copied()
    });
    let thread: CoreEntry = dir
        .read_single(ImageKind::Core, tid.expect("a second thread").into())
        .unwrap()
        .expect("core image of the thread");
    let tth = thread.thread_core.expect("thread_core");
    if tsync {
        assert_eq!(filters.len(), 2, "one chain, kept by the leader");
        assert!(
            filters.iter().all(|f| f.flags.unwrap_or(0) & 1 != 0),
            "TSYNC"
        );
        assert_eq!((tth.seccomp_mode, tth.seccomp_filter), (None, None));
    } else {
        assert_eq!(
            filters.len(),
            3,
            "two filters of the leader, one of the thread"
        );
        assert_eq!(tth.seccomp_mode, Some(2));
    }
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
    assert_images(&t, images.path(), false);
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
fn threads_sharing_a_seccomp_chain_get_it_back_through_the_leader() {
    require_root();
    let t = Target::start(&["tsync"]);
    let images = TempDir::new("taskstate-img");
    let resp = dump(t.pid, images.path(), false);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    assert_images(&t, images.path(), true);
    kill_and_reap(t.pid);
    let resp = restore(images.path());
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    t.assert_all_ok("restored", &[]);
}

#[test]
fn task_state_survives_in_a_pid_namespace() {
    require_root();
    let mut t = Target::start(&["pidns"]);
    let images = TempDir::new("taskstate-img");
    let resp = dump(t.pid, images.path(), false);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    let dir = ImagesDir::open(images.path()).unwrap();
    let core: CoreEntry = dir
        .read_single(ImageKind::Core, 1)
        .unwrap()
        .expect("core-1.img");
    let posix = core.tc.expect("tc").timers.expect("timers").posix;
    let targeted: Vec<Option<i32>> = posix.iter().map(|p| p.notify_thread_id).collect();
    assert!(
        targeted.contains(&Some(2)),
        "the thread-targeted timer names the thread by its id in the namespace: {targeted:?}"
    );
    kill_and_reap(t.pid);
    let resp = restore(images.path());
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    t.pid = resp.restore.expect("restore answer").pid;
    t.assert_all_ok("restored", &[]);
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

/// Children of `pid` (its main thread's).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

#[test]
fn a_task_in_its_own_time_namespace_is_refused_clearly() {
    require_root();
    become_subreaper();
    // `setsid` makes `unshare` a session leader; its child `sleep` runs in a
    // new time namespace.
    let mut child = std::process::Command::new("setsid")
        .args([
            "unshare",
            "--time",
            "--boottime",
            "1000",
            "--fork",
            "sleep",
            "60",
        ])
        // It complains about signals the test harness blocks.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start unshare");
    let pid = i32::try_from(child.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let inner = loop {
        if let Some(&c) = children(pid).first() {
            let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/time")).ok();
            if ns(c).is_some() && ns(c) != ns(pid) {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "unshare --time never forked");
        std::thread::sleep(Duration::from_millis(10));
    };
    let images = TempDir::new("taskstate-timens");
    let resp = dump(pid, images.path(), false);
    let msg = resp.cr_errmsg.clone().unwrap_or_default();
    assert!(!resp.success, "{resp:?}");
    assert!(
        msg.contains("time namespace") && msg.contains(&inner.to_string()),
        "{msg}"
    );
    assert!(alive(pid) && alive(inner), "the tree is left running");
    kill_and_reap(inner);
    child.kill().unwrap();
    child.wait().unwrap();
}
