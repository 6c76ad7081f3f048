//! Restore of images written by real CRIU 4.2 (`/work/shared/testdata/criu-4.2`).
//!
//! Restore forks without exec, so it refuses to run in a multi-threaded
//! process; libtest runs tests on threads, hence this file has its own
//! `main` (`harness = false`) that runs the cases one after another on the
//! main thread, as a child subreaper so that killed tasks are reaped at once.
//!
//! Needs: root with `CAP_CHECKPOINT_RESTORE`, `clone3` with `set_tid`, pid
//! 24125 free, and the test data directory.

mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criu_engine::notify::Notify;
use criu_engine::restore::{ImagesError, RestoreError, RestoreOutcome, TreeError};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Root of the CRIU 4.2 reference images (`CRIU_TESTDATA` overrides it).
fn testdata() -> PathBuf {
    std::env::var_os("CRIU_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/testdata/criu-4.2"))
}
const RUN_DIR: &str = "/tmp/criu-testdata";
const LOOP_PID: i32 = 24125;
const LOOP_CHECKSUM: &str = "b10eaa975fac0000";

/// Records every notification and answers `false` to the one named `refuse`.
#[derive(Default)]
struct Recorder {
    seen: Vec<(&'static str, Option<i32>)>,
    refuse: Option<&'static str>,
}

impl Notify for Recorder {
    fn notify(&mut self, script: &'static str, pid: Option<i32>) -> bool {
        self.seen.push((script, pid));
        self.refuse != Some(script)
    }
}

fn require() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let caps = caps::read(None, caps::CapSet::Effective).expect("read capabilities");
    assert!(
        caps.contains(&caps::Capability::CAP_CHECKPOINT_RESTORE),
        "needs CAP_CHECKPOINT_RESTORE"
    );
    assert!(
        testdata().is_dir(),
        "needs {} (set CRIU_TESTDATA)",
        testdata().display()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        fs::copy(entry.path(), &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Puts the executables and the log of the `loop` scenario where the
/// images expect them; returns a fresh copy of the images.
fn prepare_loop() -> tempfile::TempDir {
    let bin = Path::new(RUN_DIR).join("bin");
    fs::create_dir_all(&bin).unwrap();
    for entry in fs::read_dir(testdata().join("bin")).unwrap() {
        let entry = entry.unwrap();
        let dst = bin.join(entry.file_name());
        if dst.exists() && fs::read(&dst).unwrap() == fs::read(entry.path()).unwrap() {
            continue;
        }
        let _ = fs::remove_file(&dst);
        fs::copy(entry.path(), &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy_dir(
        &testdata().join("loop/files"),
        &Path::new(RUN_DIR).join("loop"),
    );
    images_copy("loop")
}

fn images_copy(scenario: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&testdata().join(scenario).join("images"), dir.path());
    dir
}

fn restore(dir: &Path, notify: &mut Recorder) -> Result<RestoreOutcome, RestoreError> {
    let args = ["restore", "-D", dir.to_str().unwrap()].map(String::from);
    let cfg = criu_engine::config::parse_args(args).unwrap();
    let opts = criu_engine::opts::from_config(&cfg).unwrap();
    criu_engine::restore::run(&opts, notify)
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie of ours is gone as far as restore is concerned.
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn kill_and_reap(pid: i32) {
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// `(fd, link target)` of every descriptor of `pid`, ascending.
fn task_fds(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                let target = fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// The `flags:` (octal) of `/proc/<pid>/fdinfo/<fd>`.
fn fdinfo_flags(pid: i32, fd: i32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0)
}

fn log_path() -> PathBuf {
    Path::new(RUN_DIR).join("loop/loop.log")
}

/// Lines of the loop log after its dump-time contents.
fn new_log_lines() -> Vec<String> {
    let dumped = fs::read_to_string(testdata().join("loop/files/loop.log")).unwrap();
    let now = fs::read_to_string(log_path()).unwrap();
    assert!(
        now.starts_with(&dumped),
        "the log was rewritten, not appended"
    );
    now[dumped.len()..].lines().map(str::to_owned).collect()
}

/// The restored `loop` carries on: same pid, same checksum, counter goes on.
fn loop_keeps_logging() {
    let images = prepare_loop();
    let mut rec = Recorder::default();
    let out = restore(images.path(), &mut rec).unwrap_or_else(|e| panic!("restore failed: {e:?}"));
    assert_eq!(out.root_pid, LOOP_PID);
    assert_eq!(
        rec.seen,
        [
            ("pre-restore", None),
            ("post-restore", Some(LOOP_PID)),
            ("pre-resume", None),
            ("post-resume", None),
        ]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = new_log_lines();
        if lines.len() >= 5 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let comm = fs::read_to_string(format!("/proc/{LOOP_PID}/comm")).unwrap_or_default();
    let fds = task_fds(LOOP_PID);
    let exe = fs::read_link(format!("/proc/{LOOP_PID}/exe")).ok();
    let maps = fs::read_to_string(format!("/proc/{LOOP_PID}/maps")).unwrap_or_default();
    let log_flags = fdinfo_flags(LOOP_PID, 3);
    let still_alive = alive(LOOP_PID);
    kill_and_reap(LOOP_PID);
    assert!(still_alive, "the restored task died; log: {lines:?}");
    assert_eq!(comm.trim(), "loop");
    assert_eq!(
        exe.as_deref(),
        Some(Path::new("/tmp/criu-testdata/bin/loop"))
    );
    let fd_names: Vec<(i32, String)> = fds.iter().map(|(fd, p)| (*fd, p.clone())).collect();
    assert_eq!(
        fd_names.iter().map(|(fd, _)| *fd).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 10, 251],
        "{fd_names:?}"
    );
    assert_eq!(fd_names[0].1, "/dev/null");
    assert_eq!(fd_names[3].1, log_path().to_str().unwrap());
    assert_eq!(fd_names[4].1, "/tmp/criu-testdata/bin/loop");
    assert!(fd_names[6].1.starts_with("pipe:["), "{fd_names:?}");
    assert_eq!(log_flags & libc::O_ACCMODE, libc::O_WRONLY);
    assert_ne!(log_flags & libc::O_APPEND, 0, "fd 3 lost O_APPEND");
    assert!(
        maps.lines()
            .any(|l| l.starts_with("7fcf4ea55000-7fcf4ea57000") && l.ends_with("[vdso]")),
        "vdso not at its dumped address:\n{maps}"
    );
    assert!(
        maps.lines()
            .any(|l| l.starts_with("7fcf4e400000-7fcf4e800000 rw-p")),
        "the 4 MiB pattern area is missing:\n{maps}"
    );
    assert!(lines.len() >= 5, "too few new lines: {lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let (n, sum) = line.split_once(' ').unwrap();
        assert_eq!(
            n.parse::<u64>().unwrap(),
            16 + i as u64,
            "counter in {line:?}"
        );
        assert_eq!(sum, LOOP_CHECKSUM, "checksum in {line:?}");
    }
}

/// A second restore while the first runs finds its pid taken: EEXIST, and
/// the first one is left alone.
fn taken_pid_is_eexist() {
    let images = prepare_loop();
    let first = restore(images.path(), &mut Recorder::default()).unwrap();
    let again = images_copy("loop");
    let mut rec = Recorder::default();
    let err = restore(again.path(), &mut rec).unwrap_err();
    let first_alive = alive(first.root_pid);
    kill_and_reap(first.root_pid);
    assert!(
        matches!(
            err,
            RestoreError::Tree(TreeError::PidTaken { pid: LOOP_PID })
        ),
        "{err:?}"
    );
    assert_eq!(err.cr_errno(), Some(libc::EEXIST));
    assert!(err.to_string().contains("24125"), "{err}");
    assert!(first_alive, "the running task was harmed");
    assert_eq!(rec.seen, [("pre-restore", None)]);
}

/// A pages file shorter than its pagemap: refused before anything exists.
fn truncated_pages_refused() {
    let images = prepare_loop();
    let pages = images.path().join("pages-1.img");
    let len = fs::metadata(&pages).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pages)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    let err = restore(images.path(), &mut Recorder::default()).unwrap_err();
    assert!(
        matches!(err, RestoreError::Images(ImagesError::PagesTooShort { need, have, .. }) if need == len && have == len - 4096),
        "{err:?}"
    );
    assert!(err.to_string().contains("pages-1.img"), "{err}");
    assert!(!alive(LOOP_PID));
}

/// A damaged core image: a clear error naming it, nothing left running.
fn damaged_core_refused() {
    let images = prepare_loop();
    let core = images.path().join(format!("core-{LOOP_PID}.img"));
    let mut bytes = fs::read(&core).unwrap();
    // The entry size word right after the two magics: claim more than the file has.
    bytes[8..12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    fs::write(&core, &bytes).unwrap();
    let err = restore(images.path(), &mut Recorder::default()).unwrap_err();
    assert!(
        matches!(err, RestoreError::Images(ImagesError::Read { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("core-24125.img"), "{err}");
    assert!(!alive(LOOP_PID));
}

/// A client refusing `post-restore` makes the restore fail and the
/// half-restored task disappear.
fn refused_post_restore_kills() {
    let images = prepare_loop();
    let mut rec = Recorder {
        refuse: Some("post-restore"),
        ..Recorder::default()
    };
    let err = restore(images.path(), &mut rec).unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Aborted {
                script: "post-restore"
            }
        ),
        "{err:?}"
    );
    assert!(!alive(LOOP_PID), "the task survived a failed restore");
    assert_eq!(
        rec.seen,
        [("pre-restore", None), ("post-restore", Some(LOOP_PID))]
    );
    // Its pid is free again at once (we reaped it).
    assert_eq!(kill(Pid::from_raw(LOOP_PID), None), Err(Errno::ESRCH));
}

/// A refused `pre-restore` stops everything before the images are read.
fn refused_pre_restore_aborts() {
    let mut rec = Recorder {
        refuse: Some("pre-restore"),
        ..Recorder::default()
    };
    let images = tempfile::tempdir().unwrap();
    let err = restore(images.path(), &mut rec).unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Aborted {
                script: "pre-restore"
            }
        ),
        "{err:?}"
    );
}

/// A worker with a second thread must not fork without exec.
fn multi_threaded_worker_refused() {
    let images = prepare_loop();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let err = restore(images.path(), &mut Recorder::default()).unwrap_err();
    drop(tx);
    helper.join().unwrap();
    assert!(
        matches!(
            err,
            RestoreError::Tree(TreeError::MultiThreaded { threads: 2 })
        ),
        "{err:?}"
    );
    assert!(!alive(LOOP_PID));
}

fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("tests live in target/<profile>/deps");
    let bin = target.join("debug").join("criu-workload");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p criu-tests --bin criu-workload` first",
        bin.display()
    );
    bin
}

fn workload_lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_workload_lines(log: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = workload_lines(log);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Our own dump of `criu-workload`, restored: same pid, same checksum, the
/// SIGUSR1 handler still counts, the read fd keeps its offset.
fn own_dump_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("workload.log");
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let out = std::process::Command::new(workload_bin())
        .arg(&log)
        .arg("8")
        .output()
        .expect("run criu-workload");
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let before = wait_workload_lines(&log, 3);
    let args = [
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]
    .map(String::from);
    let cfg = criu_engine::config::parse_args(args).unwrap();
    let opts = criu_engine::opts::from_config(&cfg).unwrap();
    let dumped = criu_engine::dump::run(&opts, &mut criu_engine::notify::NoNotify);
    if let Err(e) = dumped {
        kill_and_reap(pid);
        panic!("dump failed: {e:?}");
    }
    // The dump killed it; we are its reaper.
    kill_and_reap(pid);
    let n_dumped = workload_lines(&log).len();
    let mut rec = Recorder::default();
    let restored = restore(&images, &mut rec).unwrap_or_else(|e| panic!("restore failed: {e:?}"));
    assert_eq!(restored.root_pid, pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
    let after = wait_workload_lines(&log, n_dumped + 5);
    let still_alive = alive(pid);
    kill_and_reap(pid);
    assert!(still_alive, "restored workload died; log: {after:?}");
    assert!(after.len() >= n_dumped + 5, "too few new lines: {after:?}");
    let fields = |l: &str| l.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let reference = fields(&before[2]);
    let last = fields(after.last().unwrap());
    assert_eq!(
        last[1], reference[1],
        "checksum changed: {before:?} / {after:?}"
    );
    assert_eq!(last[2], "1", "SIGUSR1 handler did not count: {after:?}");
    assert_eq!(last[3], reference[3], "read fd offset changed");
    let counters: Vec<u64> = after[n_dumped..]
        .iter()
        .map(|l| fields(l)[0].parse().unwrap())
        .collect();
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
}

fn main() {
    let cases: &[(&str, fn())] = &[
        ("refused_pre_restore_aborts", refused_pre_restore_aborts),
        ("truncated_pages_refused", truncated_pages_refused),
        ("damaged_core_refused", damaged_core_refused),
        (
            "multi_threaded_worker_refused",
            multi_threaded_worker_refused,
        ),
        ("loop_keeps_logging", loop_keeps_logging),
        ("taken_pid_is_eexist", taken_pid_is_eexist),
        ("refused_post_restore_kills", refused_post_restore_kills),
        ("own_dump_round_trip", own_dump_round_trip),
    ];
    harness::run(cases, || {
        require();
        assert!(
            !alive(LOOP_PID),
            "pid {LOOP_PID} is in use; the tests need it free"
        );
    });
}
