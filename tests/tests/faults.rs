//! Faults in the middle of work: the target or the worker killed during a
//! dump, an images directory that is full or read-only, the worker killed
//! during a restore, and a task that cannot be stopped. Each time the client
//! gets a clear error (or a closed socket when the worker itself died), the
//! target keeps running, and no directory looks like a complete dump.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReq, CriuReqType as T};
use criu_tests::{
    alive, become_subreaper, bin, kill_and_reap, req, require_root, task_state, TempDir, Workload,
};
use criu_transport::client::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn dump_req(dir: &std::fs::File, pid: i32, leave_running: bool) -> CriuReq {
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        leave_running: Some(leave_running),
        notify_scripts: Some(true),
        log_to_stderr: Some(true),
        log_level: Some(1),
        ..Default::default()
    });
    r
}

/// Anonymous executable mappings: the injection stub would be one; the
/// workload has none of its own.
fn anon_exec_mappings(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5 && f[1].contains('x')
        })
        .map(str::to_owned)
        .collect()
}

/// Alive, not stopped, reporting, and without an injection stub.
fn assert_intact(w: &Workload) {
    assert!(alive(w.pid), "target {} alive", w.pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(task_state(w.pid), Some('t' | 'T')) {
        assert!(Instant::now() < deadline, "target {} left stopped", w.pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = w.wait_for_line_after(None);
    w.wait_for_line_after(Some(line.n));
    assert_eq!(
        anon_exec_mappings(w.pid),
        Vec::<String>::new(),
        "no stub left"
    );
}

fn no_complete_dump(dir: &Path) {
    assert!(
        !dir.join("inventory.img").exists(),
        "a failed dump must not look complete"
    );
}

fn worker_of(client: &Client) -> Pid {
    Pid::from_raw(i32::try_from(client.worker_pid().expect("swrk worker")).unwrap())
}

#[test]
fn target_killed_during_the_dump_fails_it_cleanly() {
    require_root();
    become_subreaper();
    let w = Workload::start(4, None);
    let dir = TempDir::new("fault-target");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
    let pid = w.pid;
    let resp = client
        .call_with_notify(&dump_req(&handle, pid, true), |n, _| {
            if n.script.as_deref() == Some("query-ext-files") {
                // The task is frozen now; it dies under the dump.
                kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
            }
            true
        })
        .expect("DUMP answered");
    assert!(!resp.success, "{resp:?}");
    assert!(resp.cr_errmsg.is_some_and(|m| !m.is_empty()));
    no_complete_dump(dir.path());
    kill_and_reap(pid);
    let _ = client.wait();
}

#[test]
fn worker_killed_during_the_dump_leaves_the_target_running() {
    require_root();
    become_subreaper();
    let w = Workload::start(4, None);
    let dir = TempDir::new("fault-worker-dump");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
    let worker = worker_of(&client);
    let result = client.call_with_notify(&dump_req(&handle, w.pid, true), |n, _| {
        if n.script.as_deref() == Some("query-ext-files") {
            // The target is seized and frozen by the worker.
            kill(worker, Signal::SIGKILL).unwrap();
        }
        true
    });
    assert!(result.is_err(), "the socket closes: {result:?}");
    let _ = client.wait();
    // The kernel detaches the tracees of a dead tracer.
    assert_intact(&w);
    no_complete_dump(dir.path());
}

#[test]
fn worker_killed_during_the_restore_leaves_no_half_restored_task() {
    require_root();
    become_subreaper();
    let w = Workload::start(16, None);
    let before = w.wait_for_line_after(None);
    let dir = TempDir::new("fault-worker-restore");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut r = dump_req(&handle, w.pid, false);
    r.opts.as_mut().unwrap().notify_scripts = None;
    let c = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
    assert!(c.call(&r).unwrap().success);
    let _ = c.wait();
    kill_and_reap(w.pid);

    // The worker dies while the task is being built (some milliseconds
    // after the restore started), or once it is complete but not resumed
    // (post-restore, pre-resume). Until its final registers are set the task
    // has SIGKILL as parent-death signal and dies with the worker; after
    // that it is a complete copy and may run on. Either way, nothing
    // half-restored runs.
    for (script, delay_ms) in [
        ("pre-restore", 20),
        ("pre-restore", 60),
        ("post-restore", 0),
    ] {
        let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
        let worker = worker_of(&client);
        let mut r = req(T::Restore);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            notify_scripts: Some(true),
            log_to_stderr: Some(true),
            log_level: Some(1),
            ..Default::default()
        });
        let result = client.call_with_notify(&r, |n, _| {
            if n.script.as_deref() == Some(script) {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    let _ = kill(worker, Signal::SIGKILL);
                });
            }
            true
        });
        let _ = client.wait();
        if result.as_ref().is_ok_and(|r| r.success) {
            // The restore won the race.
            assert_intact(&w);
        } else {
            std::thread::sleep(Duration::from_millis(300));
            if alive(w.pid) {
                let line = w.wait_for_line_after(None);
                assert_eq!(
                    line.checksum, before.checksum,
                    "a task left running after the worker died at {script} is complete"
                );
                assert_eq!(
                    anon_exec_mappings(w.pid),
                    Vec::<String>::new(),
                    "no stub left"
                );
            }
        }
        kill_and_reap(w.pid);
    }
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(tag: &str, options: &str) -> Tmpfs {
        let dir = TempDir::new(tag);
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .expect("mount a tmpfs (needs CAP_SYS_ADMIN)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_or_read_only_images_directory_fails_the_dump_and_keeps_the_target() {
    require_root();
    become_subreaper();
    let w = Workload::start(4, None);
    for (tag, options, expect) in [
        ("fault-full", "size=1m", "ENOSPC"),
        ("fault-ro", "ro,size=1m", "EROFS"),
    ] {
        let fs = Tmpfs::mount(tag, options);
        let handle = std::fs::File::open(fs.0.path()).unwrap();
        let mut r = dump_req(&handle, w.pid, false);
        r.opts.as_mut().unwrap().notify_scripts = None;
        let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
        let resp = client.call(&r).expect("DUMP answered");
        let _ = client.wait();
        assert!(!resp.success, "{tag}: {resp:?}");
        let msg = resp.cr_errmsg.unwrap_or_default();
        assert!(
            msg.contains(expect) || msg.contains("No space left") || msg.contains("Read-only"),
            "{tag}: the error names the cause ({expect}): {msg}"
        );
        no_complete_dump(fs.0.path());
        drop(handle);
        assert_intact(&w);
    }
}

/// `criu-vfork-sleeper` and its sibling child, killed on drop.
struct Sleeper {
    pid: i32,
    child: Option<i32>,
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        for pid in self.child.into_iter().chain([self.pid]) {
            kill_and_reap(pid);
        }
    }
}

/// Our child running `criu-vfork-sleeper` other than `not`.
fn sibling_sleeper(not: i32) -> Option<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim();
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
        (pid != not && ppid == me && name.starts_with("criu-vfork")).then_some(pid)
    })
}

#[test]
fn timeout_is_honoured_for_a_task_that_cannot_stop() {
    require_root();
    become_subreaper();
    let spawned = std::process::Command::new(bin("criu-vfork-sleeper"))
        .spawn()
        .unwrap();
    let mut sleeper = Sleeper {
        pid: i32::try_from(spawned.id()).unwrap(),
        child: None,
    };
    let pid = sleeper.pid;
    // Wait until its sibling child exists and it sleeps in the vfork (a
    // loaded machine can show it in `D` earlier, while its pages fault in).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sleeper.child.is_none() {
            sleeper.child = sibling_sleeper(pid);
        }
        if sleeper.child.is_some() && task_state(pid) == Some('D') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleeper never blocked in vfork with its sibling child"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = TempDir::new("fault-timeout");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let mut r = dump_req(&handle, pid, true);
    {
        let o = r.opts.as_mut().unwrap();
        o.notify_scripts = None;
        o.timeout = Some(1);
        o.shell_job = Some(true);
    }
    let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
    let resp = client.call(&r).expect("DUMP answered");
    let _ = client.wait();
    assert!(!resp.success, "{resp:?}");
    assert!(
        resp.cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("did not stop within 1s"),
        "the error says the task could not be frozen in time: {resp:?}"
    );
    no_complete_dump(dir.path());
    assert_eq!(task_state(pid), Some('D'), "the sleeper is left as it was");
    drop(spawned);
}
