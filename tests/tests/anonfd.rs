//! Checkpoint and restore of anonymous-inode descriptors (eventfd,
//! signalfd, timerfd, epoll, inotify, fanotify) held by `criu-wl-anonfd`: each is
//! dumped, the target killed and restored, and the workload then reports
//! from the inside that its object still behaves as before. The kinds still
//! refused fail the dump clearly and leave the target running.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReqType as T, CriuResp};
use criu_tests::{
    alive, become_subreaper, bin, kill_and_reap, log_of, req, require_root, Connect, TempDir,
};

/// A running `criu-wl-anonfd` and its control directory.
struct Wl {
    pid: i32,
    dir: TempDir,
    asked: std::cell::Cell<u64>,
    /// Its children, as seen once it was ready.
    children: Vec<i32>,
}

impl Wl {
    fn start(kinds: &[&str]) -> Wl {
        become_subreaper();
        let dir = TempDir::new("anonfd");
        let out = std::process::Command::new(bin("criu-wl-anonfd"))
            .arg(dir.path())
            .args(kinds)
            .output()
            .expect("start criu-wl-anonfd");
        assert!(out.status.success(), "criu-wl-anonfd failed to start");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("criu-wl-anonfd prints its pid");
        let mut w = Wl {
            pid,
            dir,
            asked: 0.into(),
            children: Vec::new(),
        };
        // Its first answer means every object exists.
        w.ask();
        w.children = w.children();
        w
    }

    /// Asks for a report and returns it (one line per kind).
    fn ask(&self) -> String {
        let n = self.asked.get() + 1;
        self.asked.set(n);
        let out = self.dir.path().join(format!("out-{n}"));
        std::fs::write(self.dir.path().join(format!("go-{n}")), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&out) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "workload {} did not answer request {n}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The line of `kind` in a new report.
    fn report(&self, kind: &str) -> String {
        let text = self.ask();
        text.lines()
            .find(|l| l.split(' ').next() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} line in {text:?}"))
            .to_owned()
    }

    fn children(&self) -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Descriptor numbers of the workload whose link is `link`.
    fn fds_of(&self, link: &str) -> Vec<i32> {
        let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == link))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        fds
    }

    /// The fdinfo lines of `fd` starting with one of `prefixes`, with
    /// whitespace normalized and what follows ` pos:` (the target's inode
    /// and position in epoll lines) cut off.
    fn fdinfo(&self, fd: i32, prefixes: &[&str]) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", self.pid))
            .unwrap()
            .lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .map(|l| {
                let l = l.split_once(" pos:").map_or(l, |(head, _)| head);
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect()
    }

    /// Kills it and its children (which come to us, the subreaper, to be
    /// reaped once it is gone).
    fn kill(&self) {
        kill_and_reap(self.pid);
        for &c in &self.children {
            kill_and_reap(c);
        }
    }
}

impl Drop for Wl {
    fn drop(&mut self) {
        if alive(self.pid) {
            self.kill();
        }
    }
}

fn call(r: criu_proto::rpc::CriuReq) -> CriuResp {
    let c = Connect::Swrk(bin("criu"));
    let client = c.open();
    let resp = client.call(&r).expect("answered");
    let _ = client.wait();
    resp
}

fn dump(w: &Wl, dir: &Path, leave_running: bool) -> CriuResp {
    let handle = std::fs::File::open(dir).unwrap();
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        pid: Some(w.pid),
        leave_running: Some(leave_running),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    call(r)
}

fn restore(w: &Wl, dir: &Path) {
    let handle = std::fs::File::open(dir).unwrap();
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let resp = call(r);
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(dir, "restore.log")
    );
    assert_eq!(resp.restore.map(|r| r.pid), Some(w.pid), "same pid");
}

/// Dumps (killing the target), reaps it and restores it.
fn dump_kill_restore(w: &Wl) -> TempDir {
    let dir = TempDir::new("anonfd-img");
    let resp = dump(w, dir.path(), false);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(dir.path(), "dump.log")
    );
    w.kill();
    restore(w, dir.path());
    dir
}

/// A dump that must fail: the message names the task and `words`, and the
/// target keeps running and answering.
fn assert_refused(w: &Wl, words: &[&str]) {
    let dir = TempDir::new("anonfd-refused");
    let resp = dump(w, dir.path(), false);
    assert!(!resp.success, "dump must fail");
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(msg.contains(&w.pid.to_string()), "{msg}");
    for word in words {
        assert!(msg.contains(word), "{word:?} in {msg}");
    }
    assert!(alive(w.pid), "target left running");
    w.ask();
    assert!(!dir.path().join("inventory.img").exists());
}

/// `kcmp(KCMP_FILE)` of the same descriptor number in two tasks.
fn same_file(pid1: i32, pid2: i32, fd: i32) -> bool {
    // SAFETY: KCMP_FILE takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, 0, fd, fd) };
    r == 0
}

#[test]
fn eventfd_counter_flags_and_sharing_survive() {
    require_root();
    let w = Wl::start(&["eventfd", "fork"]);
    let efd = w.fds_of("anon_inode:[eventfd]");
    assert_eq!(efd.len(), 1);
    let before = w.report("eventfd");
    assert_eq!(before, "eventfd count=5 nonblock=1");
    let _images = dump_kill_restore(&w);
    assert_eq!(w.report("eventfd"), before, "semaphore counter and flags");
    let children = w.children();
    assert_eq!(children.len(), 1, "the child is restored too");
    assert!(
        same_file(w.pid, children[0], efd[0]),
        "parent and child share one eventfd again"
    );
}

#[test]
fn signalfd_receives_a_signal_raised_after_restore() {
    require_root();
    let w = Wl::start(&["signalfd"]);
    let fd = w.fds_of("anon_inode:[signalfd]")[0];
    let mask = w.fdinfo(fd, &["sigmask"]);
    assert_eq!(w.report("signalfd"), "signalfd signo=0");
    let _images = dump_kill_restore(&w);
    assert_eq!(w.fdinfo(fd, &["sigmask"]), mask);
    assert_eq!(w.report("signalfd"), "signalfd signo=0");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.pid),
        nix::sys::signal::SIGWINCH,
    )
    .unwrap();
    assert_eq!(w.report("signalfd"), "signalfd signo=28");
}

#[test]
fn timerfd_keeps_firing_with_its_interval_and_ticks() {
    require_root();
    let w = Wl::start(&["timerfd"]);
    let fds = w.fds_of("anon_inode:[timerfd]");
    assert_eq!(fds.len(), 2);
    let before = w.report("timerfd");
    assert_eq!(before, "timerfd fired=1 interval_ms=50 stale=1");
    let settings = |w: &Wl| {
        fds.iter()
            .map(|&fd| w.fdinfo(fd, &["clockid", "settime", "it_interval"]))
            .collect::<Vec<_>>()
    };
    let was = settings(&w);
    let _images = dump_kill_restore(&w);
    assert_eq!(settings(&w), was, "clock, flags and interval");
    assert_eq!(w.report("timerfd"), before);
}

#[test]
fn epoll_wakes_on_the_same_targets_with_the_same_data() {
    require_root();
    let w = Wl::start(&["epoll"]);
    let eps = w.fds_of("anon_inode:[eventpoll]");
    assert_eq!(eps.len(), 2);
    // The kernel lists targets in an order of its own.
    let targets = |w: &Wl| {
        eps.iter()
            .map(|&fd| {
                let mut t = w.fdinfo(fd, &["tfd:"]);
                t.sort();
                t
            })
            .collect::<Vec<_>>()
    };
    let was = targets(&w);
    assert_eq!(was[0].len() + was[1].len(), 4, "{was:?}");
    let before = w.report("epoll");
    assert_eq!(before, "epoll idle=b1 ready=a1,b1,e1");
    let _images = dump_kill_restore(&w);
    assert_eq!(targets(&w), was, "targets, events and data");
    assert_eq!(w.report("epoll"), before);
}

#[test]
fn epoll_target_moved_to_another_fd_follows_it() {
    require_root();
    let w = Wl::start(&["epoll-moved"]);
    let ep = w.fds_of("anon_inode:[eventpoll]")[0];
    let tfd = |w: &Wl| -> Vec<String> {
        w.fdinfo(ep, &["tfd:"])
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(tfd(&w), ["tfd: 4"]);
    assert_eq!(w.report("moved"), "moved ready=d1");
    let _images = dump_kill_restore(&w);
    // As CRIU does: registered again under the number that still holds it.
    assert_eq!(tfd(&w), ["tfd: 40"]);
    assert_eq!(w.report("moved"), "moved ready=d1");
}

#[test]
fn epoll_target_the_task_no_longer_holds_is_refused() {
    require_root();
    let w = Wl::start(&["epoll-gone"]);
    assert_refused(&w, &["epoll fd 3", "no longer holds"]);
}

#[test]
fn inotify_reports_changes_made_after_restore() {
    require_root();
    let w = Wl::start(&["inotify"]);
    let fd = w.fds_of("anon_inode:inotify")[0];
    let watches = |w: &Wl| w.fdinfo(fd, &["inotify"]);
    let was = watches(&w);
    assert_eq!(was.len(), 2, "{was:?}");
    let touch = |name: &str| {
        std::fs::write(w.dir.path().join("watched"), name).unwrap();
        std::fs::write(w.dir.path().join("sub").join(name), b"").unwrap();
    };
    touch("a");
    let before = w.report("inotify");
    assert!(before.starts_with("inotify events=1:2,"), "{before}");
    assert!(before.contains("2:100"), "{before}");
    let _images = dump_kill_restore(&w);
    assert_eq!(watches(&w), was, "same watch numbers, inodes and masks");
    assert_eq!(w.report("inotify"), "inotify events=none");
    touch("b");
    assert_eq!(w.report("inotify"), before);
}

#[test]
fn fanotify_reports_changes_made_after_restore() {
    require_root();
    let w = Wl::start(&["fanotify"]);
    let fd = w.fds_of("anon_inode:[fanotify]")[0];
    let marks = |w: &Wl| {
        let mut m = w.fdinfo(fd, &["fanotify"]);
        m.sort();
        m
    };
    let was = marks(&w);
    assert_eq!(was.len(), 3, "{was:?}");
    assert!(
        was.iter()
            .any(|l| l.contains("mflags:40 mask:2 ignored_mask:8")),
        "{was:?}"
    );
    let touch = |name: &str| {
        std::fs::write(w.dir.path().join("watched"), name).unwrap();
        std::fs::write(w.dir.path().join("sub").join(name), b"").unwrap();
    };
    touch("a");
    assert_eq!(w.report("fanotify"), "fanotify events=a:8,watched:2");
    let _images = dump_kill_restore(&w);
    assert_eq!(marks(&w), was, "same flags and marks");
    assert_eq!(w.report("fanotify"), "fanotify events=none");
    touch("b");
    assert_eq!(w.report("fanotify"), "fanotify events=b:8,watched:2");
}

#[test]
fn fanotify_filesystem_mark_is_refused_clearly() {
    require_root();
    let w = Wl::start(&["fanotify-fs"]);
    assert_refused(
        &w,
        &[
            "fd 3",
            "fanotify",
            "filesystem mark",
            "cannot be dumped yet",
        ],
    );
}

/// Our crit and Debian's decode `files.img` with every kind.
fn crit_decodes(dir: &Path) {
    let files = dir.join("files.img");
    let ours = std::process::Command::new(bin("crit"))
        .args(["decode", "-i"])
        .arg(&files)
        .output()
        .expect("run crit");
    assert!(
        ours.status.success(),
        "crit: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let text = String::from_utf8_lossy(&ours.stdout);
    for kind in [
        "EVENTFD",
        "SIGNALFD",
        "TIMERFD",
        "EVENTPOLL",
        "INOTIFY",
        "FANOTIFY",
    ] {
        assert!(text.contains(kind), "{kind} in {text}");
    }
    for field in [
        "\"counter\"",
        "\"sigmask\"",
        "\"ticks\"",
        "\"tfd\"",
        "\"f_handle\"",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
    if Path::new("/usr/bin/crit").is_file() {
        let theirs = std::process::Command::new("/usr/bin/python3")
            .args(["/usr/bin/crit", "decode", "-i"])
            .arg(&files)
            .output()
            .expect("run Debian crit");
        assert!(
            theirs.status.success(),
            "Debian crit: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let text = String::from_utf8_lossy(&theirs.stdout);
        for kind in [
            "EVENTFD",
            "SIGNALFD",
            "TIMERFD",
            "EVENTPOLL",
            "INOTIFY",
            "FANOTIFY",
        ] {
            assert!(text.contains(kind), "{kind} in Debian's {text}");
        }
    }
}

#[test]
fn every_kind_with_leave_running_then_restored() {
    require_root();
    let w = Wl::start(&[
        "eventfd", "signalfd", "timerfd", "epoll", "inotify", "fanotify",
    ]);
    let before = w.ask();
    let dir = TempDir::new("anonfd-img");
    let resp = dump(&w, dir.path(), true);
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(dir.path(), "dump.log")
    );
    assert!(alive(w.pid), "leave_running");
    assert_eq!(w.ask(), before, "untouched by the dump");
    crit_decodes(dir.path());
    w.kill();
    restore(&w, dir.path());
    assert_eq!(w.ask(), before);
}
