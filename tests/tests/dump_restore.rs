//! Checkpoint and restore of a real process through every front-end: the
//! restored process has the same pid, the same memory checksum, the same fd
//! offsets, its signal handler and mask, and keeps working.

use std::os::fd::AsRawFd;

use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{
    alive, bin, kill_and_reap, log_of, req, require_root, Connect, Service, TempDir, Workload,
    FRONTENDS,
};

/// Blocked signals of a task, from /proc/<pid>/status.
fn sig_blocked(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn caught(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn sigusr1(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGUSR1).unwrap();
}

/// The state the restored process must carry on with.
struct Before {
    line: criu_tests::WorkloadLine,
    blocked: u64,
    caught: u64,
}

fn before(w: &Workload) -> Before {
    // One SIGUSR1 before the dump: the count must survive.
    sigusr1(w.pid);
    let mut line = w.wait_for_line_after(None);
    while line.sigusr1 == 0 {
        line = w.wait_for_line_after(Some(line.n));
    }
    Before {
        line,
        blocked: sig_blocked(w.pid),
        caught: caught(w.pid),
    }
}

fn assert_carries_on(w: &Workload, b: &Before) {
    assert!(alive(w.pid), "restored process {} is running", w.pid);
    let line = w.wait_for_line_after(Some(b.line.n));
    assert_eq!(line.checksum, b.line.checksum, "memory checksum unchanged");
    assert_eq!(line.offset, b.line.offset, "read fd offset unchanged");
    assert!(line.sigusr1 >= b.line.sigusr1);
    assert_eq!(sig_blocked(w.pid), b.blocked, "signal mask restored");
    assert_eq!(caught(w.pid), b.caught, "handlers restored");
    // The handler still runs.
    sigusr1(w.pid);
    let mut after = w.wait_for_line_after(Some(line.n));
    while after.sigusr1 <= b.line.sigusr1 {
        after = w.wait_for_line_after(Some(after.n));
    }
    assert_eq!(after.checksum, b.line.checksum);
}

fn rpc_dump(
    c: &Connect,
    w: &Workload,
    dir: &std::path::Path,
    extra: impl FnOnce(&mut CriuOpts),
) -> criu_proto::rpc::CriuResp {
    let handle = std::fs::File::open(dir).unwrap();
    let mut opts = CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        pid: Some(w.pid),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    };
    extra(&mut opts);
    let mut r = req(T::Dump);
    r.opts = Some(opts);
    let client = c.open();
    let resp = client.call(&r).expect("DUMP answered");
    if c.is_swrk() {
        let _ = client.wait();
    }
    resp
}

fn rpc_restore(c: &Connect, dir: &std::path::Path) -> criu_proto::rpc::CriuResp {
    let handle = std::fs::File::open(dir).unwrap();
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let client = c.open();
    let resp = client.call(&r).expect("RESTORE answered");
    if c.is_swrk() {
        let _ = client.wait();
    }
    resp
}

#[test]
fn dump_kill_restore_through_every_front_end() {
    require_root();
    for name in FRONTENDS {
        let service = Service::start(&bin(name));
        for c in [
            Connect::Swrk(bin(name)),
            Connect::Service(service.socket.clone()),
        ] {
            let w = Workload::start(16, None);
            let b = before(&w);
            let dir = TempDir::new("dump");
            let resp = rpc_dump(&c, &w, dir.path(), |_| {});
            assert!(
                resp.success,
                "{c:?} dump: {resp:?}\n{}",
                log_of(dir.path(), "dump.log")
            );
            assert_eq!(resp.dump.and_then(|d| d.restored), Some(false));
            assert!(
                !alive(w.pid),
                "a dump without leave_running kills the target"
            );
            kill_and_reap(w.pid);
            let resp = rpc_restore(&c, dir.path());
            assert!(
                resp.success,
                "{c:?} restore: {resp:?}\n{}",
                log_of(dir.path(), "restore.log")
            );
            assert_eq!(resp.restore.map(|r| r.pid), Some(w.pid), "same pid");
            assert_carries_on(&w, &b);
        }
    }
}

#[test]
fn cli_dump_and_restore_detached() {
    require_root();
    let w = Workload::start(32, None);
    let b = before(&w);
    let dir = TempDir::new("cli");
    let d = dir.path().to_str().unwrap();
    let out = std::process::Command::new(bin("criu"))
        .args([
            "dump",
            "-t",
            &w.pid.to_string(),
            "-D",
            d,
            "-o",
            "dump.log",
            "-v4",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", log_of(dir.path(), "dump.log"));
    kill_and_reap(w.pid);
    let pidfile = dir.path().join("restored.pid");
    let out = std::process::Command::new(bin("criu"))
        .args([
            "restore",
            "-d",
            "-D",
            d,
            "-o",
            "restore.log",
            "-v4",
            "--pidfile",
        ])
        .arg(&pidfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        log_of(dir.path(), "restore.log")
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        w.pid.to_string()
    );
    assert_carries_on(&w, &b);
}

#[test]
fn rust_criu_dumps_and_restores() {
    require_root();
    let w = Workload::start(8, None);
    let b = before(&w);
    let dir = TempDir::new("rust-criu-dr");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    criu.set_pid(w.pid);
    criu.set_images_dir_fd(handle.as_raw_fd());
    criu.set_log_file("dump.log".into());
    criu.set_log_level(4);
    criu.dump()
        .unwrap_or_else(|e| panic!("rust-criu dump: {e:?}\n{}", log_of(dir.path(), "dump.log")));
    kill_and_reap(w.pid);
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    criu.set_images_dir_fd(handle.as_raw_fd());
    criu.set_log_file("restore.log".into());
    criu.set_log_level(4);
    criu.restore().unwrap_or_else(|e| {
        panic!(
            "rust-criu restore: {e:?}\n{}",
            log_of(dir.path(), "restore.log")
        )
    });
    assert_carries_on(&w, &b);
}

#[test]
fn leave_running_keeps_the_original_and_images_are_valid() {
    require_root();
    let c = Connect::Swrk(bin("criu"));
    let w = Workload::start(8, None);
    let dir = TempDir::new("leave-running");
    let resp = rpc_dump(&c, &w, dir.path(), |o| o.leave_running = Some(true));
    assert!(resp.success, "{resp:?}\n{}", log_of(dir.path(), "dump.log"));
    let line = w.last_line().unwrap();
    w.wait_for_line_after(Some(line.n));
    // Images decode, and the pagemap agrees with the pages file.
    let images = criu_proto::img::ImagesDir::open(dir.path()).unwrap();
    let tree = images.pstree().unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!(tree[0].pid, u32::try_from(w.pid).unwrap());
    let pagemap = images.pagemap(tree[0].pid).unwrap().expect("pagemap image");
    let pages = images.open_pages(pagemap.head.pages_id).unwrap();
    assert_eq!(pagemap.present_bytes(), pages.len());
    assert!(pages.len() >= 8 << 20, "at least the workload's 8 MiB");
    // Debian's crit reads every image we wrote.
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["/usr/bin/crit", "x"])
        .arg(dir.path())
        .arg("ps")
        .output()
        .expect("crit");
    assert!(
        out.status.success(),
        "crit x ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&w.pid.to_string()));
}

#[test]
fn failures_are_clear_and_harmless() {
    require_root();
    let c = Connect::Swrk(bin("criu"));
    // A vanished pid: ESRCH.
    let dir = TempDir::new("vanished");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut r = req(T::Dump);
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        i32::try_from(pid).unwrap()
    };
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        pid: Some(gone),
        ..Default::default()
    });
    let resp = c.open().call(&r).unwrap();
    assert!(!resp.success);
    assert_eq!(resp.cr_errno, Some(3), "{resp:?}");
    assert!(resp
        .cr_errmsg
        .unwrap_or_default()
        .contains(&gone.to_string()));

    // An fd kind the dump does not support: clear error, target unharmed,
    // nothing of ours left in it.
    let w = Workload::start(4, Some("eventfd"));
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    let dir = TempDir::new("unsupported");
    let resp = rpc_dump(&c, &w, dir.path(), |_| {});
    assert!(!resp.success);
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("socket"), "{msg}");
    assert!(alive(w.pid));
    let line = w.last_line().unwrap();
    w.wait_for_line_after(Some(line.n));
    let maps_after = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    assert_eq!(maps_before, maps_after, "no leftover mapping");
    assert!(
        !dir.path().join("inventory.img").exists(),
        "no complete-looking images"
    );
}

#[test]
fn corrupted_images_fail_restore_and_leave_nothing_running() {
    require_root();
    let c = Connect::Swrk(bin("criu"));
    let w = Workload::start(4, None);
    let dir = TempDir::new("corrupt");
    let resp = rpc_dump(&c, &w, dir.path(), |_| {});
    assert!(resp.success, "{}", log_of(dir.path(), "dump.log"));
    kill_and_reap(w.pid);
    // Cut the pages file short.
    let pages = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pages-")
        })
        .unwrap();
    let len = std::fs::metadata(&pages).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pages)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let resp = rpc_restore(&c, dir.path());
    assert!(!resp.success, "restore of a cut pages file must fail");
    assert!(resp.cr_errmsg.is_some());
    assert!(!alive(w.pid), "nothing left running");
    assert_eq!(
        std::fs::metadata(&pages).unwrap().len(),
        len / 2,
        "images untouched"
    );
}

#[test]
fn notifications_arrive_in_criu_order() {
    require_root();
    let c = Connect::Swrk(bin("criu"));
    let w = Workload::start(4, None);
    let dir = TempDir::new("notify-order");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        pid: Some(w.pid),
        notify_scripts: Some(true),
        ..Default::default()
    });
    let mut seen = Vec::new();
    let client = c.open();
    let resp = client
        .call_with_notify(&r, |n, _| {
            seen.push((n.script.clone().unwrap_or_default(), n.pid));
            true
        })
        .unwrap();
    assert!(resp.success);
    let names: Vec<_> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["pre-dump", "query-ext-files", "post-dump"]);
    kill_and_reap(w.pid);

    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        notify_scripts: Some(true),
        ..Default::default()
    });
    let mut seen = Vec::new();
    let client = c.open();
    let resp = client
        .call_with_notify(&r, |n, _| {
            seen.push((n.script.clone().unwrap_or_default(), n.pid));
            true
        })
        .unwrap();
    assert!(resp.success, "{resp:?}");
    let names: Vec<_> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["pre-restore", "post-restore", "pre-resume", "post-resume"]
    );
    assert_eq!(seen[1].1, Some(w.pid), "post-restore carries the root pid");
    assert_eq!(resp.restore.map(|r| r.pid), Some(w.pid));
}
