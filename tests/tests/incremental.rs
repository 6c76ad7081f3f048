//! Incremental checkpoints end to end: a workload that keeps writing a
//! known fraction of its memory (and replaces a mapping every half second)
//! is pre-dumped several times, dumped, and restored; the restored memory
//! must be exactly the final state (the workload checks itself: `ok`).

use std::os::fd::AsRawFd;
use std::path::Path;

use criu_proto::rpc::{CriuOpts, CriuPreDumpMode, CriuReqType as T};
use criu_tests::{
    alive, bin, criu_ok, kill_and_reap, log_of, req, require_root, Connect, TempDir, Workload,
};

fn uffd_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .ok()
                    .and_then(|e| std::fs::read_link(e.path()).ok())
                    .is_some_and(|l| l.to_string_lossy() == "anon_inode:[userfaultfd]")
            })
            .count()
        })
        .unwrap_or(0)
}

/// Waits for a few reports after a restore and checks them.
fn assert_restored_consistent(w: &Workload, last_before: u64) {
    assert!(alive(w.pid));
    let mut line = w.wait_for_line_after(Some(last_before));
    for _ in 0..3 {
        assert_eq!(
            line.consistent,
            Some(true),
            "restored memory is stale: {line:?}"
        );
        line = w.wait_for_line_after(Some(line.n));
    }
    assert_eq!(uffd_fds(w.pid), 0, "no tracker in the restored task");
}

#[test]
fn cli_three_pre_dumps_dump_restore() {
    require_root();
    let w = Workload::start(64, Some("dirty=5 remap"));
    let top = TempDir::new("incr-cli");
    let pid = w.pid.to_string();
    let dirs: Vec<_> = ["1", "2", "3", "4"]
        .iter()
        .map(|d| {
            let p = top.path().join(d);
            std::fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let mut seen = w.wait_for_line_after(None).n;
    // Three separate CLI invocations: splice, splice, read.
    for (i, mode) in ["splice", "splice", "read"].iter().enumerate() {
        let d = s(&dirs[i]);
        let mut args = vec![
            "pre-dump",
            "-t",
            &pid,
            "-D",
            &d,
            "-o",
            "pre.log",
            "-v4",
            "--pre-dump-mode",
            mode,
        ];
        let parent = format!("../{i}");
        if i > 0 {
            args.extend(["--prev-images-dir", &parent]);
        }
        criu_ok(&args, &dirs[i], "pre.log");
        assert_eq!(uffd_fds(w.pid), 1, "one tracker between pre-dumps");
        // The task runs on between pre-dumps, still consistent.
        let line = w.wait_for_line_after(Some(seen));
        assert_eq!(line.consistent, Some(true));
        seen = w.wait_for_line_after(Some(line.n)).n;
    }
    let d = s(&dirs[3]);
    criu_ok(
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            &d,
            "-o",
            "dump.log",
            "-v4",
            "--prev-images-dir",
            "../3",
        ],
        &dirs[3],
        "dump.log",
    );
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);
    // The final dump only holds what changed since the last pre-dump.
    let size = |p: &Path| std::fs::metadata(p.join("pages-1.img")).unwrap().len();
    assert!(
        size(&dirs[3]) < size(&dirs[0]) / 2,
        "final pages file is small"
    );
    criu_ok(
        &["restore", "-d", "-D", &d, "-o", "restore.log", "-v4"],
        &dirs[3],
        "restore.log",
    );
    assert_restored_consistent(&w, last);
}

fn images_opts(dir: &std::fs::File, pid: i32) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        log_file: Some("rpc.log".into()),
        log_level: Some(4),
        ..Default::default()
    }
}

#[test]
fn rpc_pre_dump_loop_then_dump_and_restore() {
    require_root();
    let w = Workload::start(32, Some("dirty=10"));
    let top = TempDir::new("incr-rpc");
    let dirs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|d| {
            let p = top.path().join(d);
            std::fs::create_dir(&p).unwrap();
            (p.clone(), std::fs::File::open(&p).unwrap())
        })
        .collect();
    let c = Connect::Swrk(bin("criu-swrk"));
    let client = c.open();
    // PRE_DUMP, PRE_DUMP (VM_READ), DUMP on one connection.
    let mut r = req(T::PreDump);
    r.opts = Some(images_opts(&dirs[0].1, w.pid));
    let resp = client.call(&r).unwrap();
    assert!(resp.success, "{resp:?}\n{}", log_of(&dirs[0].0, "rpc.log"));
    assert_eq!(resp.r#type, T::PreDump as i32);
    let line = w.wait_for_line_after(None);
    let mut r = req(T::PreDump);
    r.opts = Some(CriuOpts {
        parent_img: Some("../a".into()),
        pre_dump_mode: Some(CriuPreDumpMode::VmRead as i32),
        ..images_opts(&dirs[1].1, w.pid)
    });
    let resp = client.call(&r).unwrap();
    assert!(resp.success, "{resp:?}\n{}", log_of(&dirs[1].0, "rpc.log"));
    let line = w.wait_for_line_after(Some(line.n));
    assert_eq!(line.consistent, Some(true));
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        parent_img: Some("../b".into()),
        track_mem: Some(true),
        ..images_opts(&dirs[2].1, w.pid)
    });
    let resp = client.call(&r).unwrap();
    assert!(resp.success, "{resp:?}\n{}", log_of(&dirs[2].0, "rpc.log"));
    let _ = client.wait();
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);

    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: dirs[2].1.as_raw_fd(),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let client = c.open();
    let resp = client.call(&r).unwrap();
    let _ = client.wait();
    assert!(
        resp.success,
        "{resp:?}\n{}",
        log_of(&dirs[2].0, "restore.log")
    );
    assert_restored_consistent(&w, last);
}

#[test]
fn single_pre_dump_leaves_the_task_running() {
    require_root();
    let w = Workload::start(8, Some("dirty=1"));
    let dir = TempDir::new("incr-single");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut r = req(T::SinglePreDump);
    r.opts = Some(CriuOpts {
        // Ignored by a pre-dump: the task always resumes.
        leave_stopped: Some(true),
        ..images_opts(&handle, w.pid)
    });
    let c = Connect::Swrk(bin("criu-swrk"));
    let client = c.open();
    let resp = client.call(&r).unwrap();
    assert_eq!(resp.r#type, T::SinglePreDump as i32);
    assert!(resp.success, "{resp:?}\n{}", log_of(dir.path(), "rpc.log"));
    let status = client.wait();
    assert!(status.is_ok());
    let line = w.wait_for_line_after(None);
    w.wait_for_line_after(Some(line.n));
    assert!(dir.path().join("inventory.img").exists());
    assert!(!dir
        .path()
        .join("core-".to_owned() + &w.pid.to_string() + ".img")
        .exists());
    assert_eq!(uffd_fds(w.pid), 1);
}
