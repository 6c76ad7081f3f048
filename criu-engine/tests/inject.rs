//! Seizing and syscall injection against real child processes.
//!
//! Needs: root (or CAP_SYS_PTRACE over the children, and CAP_SYS_ADMIN for
//! `PTRACE_O_SUSPEND_SECCOMP`), `sleep`, `cat`, `sh`, and the `seccomp_echo`
//! example, which `cargo test` builds.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criu_engine::arch::x86_64::restart::ERESTARTSYS;
use criu_engine::arch::{nr, RemoteAddr};
use criu_engine::inject::{close_remote, remote_pipe, steal_fd, InjectError, Injection};
use criu_engine::pstree::RealPid;
use criu_engine::seize::{SeizeError, SeizeOptions, SeizedTask};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A child that is killed and reaped when the test ends, however it ends.
struct Kid(Child);

impl Kid {
    fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().expect("spawn the test child"))
    }

    fn pid(&self) -> RealPid {
        RealPid(i32::try_from(self.0.id()).expect("pid fits i32"))
    }

    fn stdin(&mut self) -> ChildStdin {
        self.0.stdin.take().expect("piped stdin")
    }

    fn stdout(&mut self) -> BufReader<ChildStdout> {
        BufReader::new(self.0.stdout.take().expect("piped stdout"))
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Kid {
    Kid::spawn(Command::new("sleep").arg("100"))
}

fn piped(program: &str, args: &[&str]) -> Kid {
    Kid::spawn(
        Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
}

fn opts() -> SeizeOptions {
    SeizeOptions {
        timeout: Duration::from_secs(5),
    }
}

fn stat_state(pid: RealPid) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

/// Polls until `pred` holds (5 s at most).
fn wait_for(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `pid` sleeps inside syscall `nr`.
fn wait_in_syscall(pid: RealPid, nr: i64) {
    wait_for("the child to block in its syscall", || {
        let sys = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        stat_state(pid) == 'S' && sys.split_whitespace().next() == Some(&nr.to_string())
    });
}

fn maps(pid: RealPid) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps")
}

fn echo_round_trip(stdin: &mut ChildStdin, stdout: &mut BufReader<ChildStdout>, text: &str) {
    stdin
        .write_all(text.as_bytes())
        .expect("write to the child");
    stdin.flush().expect("flush");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read from the child");
    assert_eq!(line, text);
}

#[test]
fn seize_sleeping_child_and_inject_getpid() {
    let kid = sleeper();
    wait_for("sleep to sleep", || stat_state(kid.pid()) == 'S');
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    assert_eq!(task.pid(), kid.pid());
    assert_eq!(task.proc_state(), 'S');
    assert_eq!(task.stop_signal(), None);
    assert_eq!(stat_state(kid.pid()), 't', "held in a ptrace stop");
    let regs = task.regs().expect("regs");
    assert_eq!(regs.cs, 0x33);
    assert!(!task.xstate().expect("xstate").is_empty());
    task.fpregs().expect("fpregs");

    let inj = Injection::new(&task).expect("inject");
    assert_eq!(inj.stub_len(), 4096 + Injection::SCRATCH_LEN);
    const { assert!(Injection::SCRATCH_LEN >= 64 * 1024 + 1024 * 16) };
    let got = inj.syscall(nr::GETPID, &[]).expect("getpid");
    assert_eq!(got, i64::from(kid.pid().0));
    assert_eq!(
        task.regs().expect("regs"),
        regs,
        "registers are back between syscalls"
    );
    inj.cure().expect("cure");
    task.detach().expect("detach");
    wait_for("sleep to run again", || stat_state(kid.pid()) == 'S');
}

#[test]
fn syscall_batch_runs_in_order_with_one_trap() {
    let kid = sleeper();
    wait_for("sleep to sleep", || stat_state(kid.pid()) == 'S');
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let regs = task.regs().expect("regs");
    let inj = Injection::new(&task).expect("inject");
    let out = inj.scratch().0;
    // getpid; a failing call in the middle; write 8 bytes into the scratch
    // with a pipe and read them back: later calls see earlier effects.
    inj.write_scratch(64, b"batched!").expect("scratch");
    let pipe_at = inj.scratch().offset(128);
    let rets = inj
        .syscall_batch(&[
            (nr::GETPID, &[]),
            (nr::CLOSE, &[u64::MAX >> 33]),
            (nr::PIPE2, &[pipe_at.0, 0]),
        ])
        .expect("batch");
    assert_eq!(rets.len(), 3);
    assert_eq!(rets[0], i64::from(kid.pid().0));
    assert_eq!(rets[1], -i64::from(libc::EBADF));
    assert_eq!(rets[2], 0);
    let mut fds = [0u8; 8];
    inj.read_scratch(128, &mut fds).expect("fds");
    let rfd = u64::from(u32::from_le_bytes(fds[..4].try_into().unwrap()));
    let wfd = u64::from(u32::from_le_bytes(fds[4..].try_into().unwrap()));
    let rets = inj
        .syscall_batch(&[
            (nr::WRITE, &[wfd, out + 64, 8]),
            (nr::READ, &[rfd, out + 256, 8]),
            (nr::CLOSE, &[rfd]),
            (nr::CLOSE, &[wfd]),
        ])
        .expect("batch");
    assert_eq!(rets, vec![8, 8, 0, 0]);
    let mut back = [0u8; 8];
    inj.read_scratch(256, &mut back).expect("read back");
    assert_eq!(&back, b"batched!");
    assert!(inj.syscall_batch(&[]).expect("empty batch").is_empty());
    assert_eq!(task.regs().expect("regs"), regs, "registers are back");
    inj.cure().expect("cure");
    task.detach().expect("detach");
    wait_for("sleep to run again", || stat_state(kid.pid()) == 'S');
}

#[test]
fn mmap_munmap_and_scratch_round_trip() {
    let kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let inj = Injection::new(&task).expect("inject");

    let len = 3 * 4096u64;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = inj
        .syscall_ok(nr::MMAP, &[0, len, prot, flags, u64::MAX, 0])
        .expect("mmap");
    let start = format!("{addr:x}-{:x} rw-p", addr + len);
    assert!(maps(kid.pid()).contains(&start), "new mapping listed");
    task.write_mem(RemoteAddr(addr + 100), b"in the task")
        .expect("write_mem");
    let mut back = [0u8; 11];
    task.read_mem(RemoteAddr(addr + 100), &mut back)
        .expect("read_mem");
    assert_eq!(&back, b"in the task");
    inj.syscall_ok(nr::MUNMAP, &[addr, len]).expect("munmap");
    assert!(!maps(kid.pid()).contains(&start), "mapping gone");

    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let at = inj.write_scratch(1000, &payload).expect("write scratch");
    assert_eq!(at, inj.scratch().offset(1000));
    let mut out = vec![0u8; payload.len()];
    inj.read_scratch(1000, &mut out).expect("read scratch");
    assert_eq!(out, payload);
    assert!(matches!(
        inj.write_scratch(Injection::SCRATCH_LEN - 4, &[0; 8]),
        Err(InjectError::ScratchRange { .. })
    ));

    let err = inj
        .syscall_ok(nr::CLOSE, &[9999])
        .expect_err("closing a bad fd fails");
    assert!(
        matches!(
            err,
            InjectError::Syscall {
                source: nix::errno::Errno::EBADF,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(inj.syscall(nr::CLOSE, &[9999]).expect("raw"), -9);
    inj.cure().expect("cure");
}

#[test]
fn remote_pipe_and_steal_fd() {
    let kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let inj = Injection::new(&task).expect("inject");
    let (rfd, wfd) = remote_pipe(&inj, libc::O_CLOEXEC).expect("pipe2");
    assert!(rfd >= 0 && wfd >= 0 && rfd != wfd);
    let fd_path = |fd: i32| PathBuf::from(format!("/proc/{}/fd/{fd}", kid.pid()));
    assert!(fd_path(rfd).exists());

    let stolen = steal_fd(kid.pid(), wfd).expect("steal");
    let mut w = std::fs::File::from(stolen);
    w.write_all(b"through the pipe").expect("write stolen fd");
    let n = inj
        .syscall_ok(nr::READ, &[rfd as u64, inj.scratch().0, 64])
        .expect("injected read");
    assert_eq!(n, 16);
    let mut got = [0u8; 16];
    inj.read_scratch(0, &mut got).expect("read scratch");
    assert_eq!(&got, b"through the pipe");

    close_remote(&inj, rfd).expect("close r");
    close_remote(&inj, wfd).expect("close w");
    assert!(!fd_path(rfd).exists() && !fd_path(wfd).exists());
    assert!(matches!(
        steal_fd(kid.pid(), wfd),
        Err(InjectError::PidfdGetfd { fd, .. }) if fd == wfd
    ));
    inj.cure().expect("cure");
}

#[test]
fn cure_leaves_maps_and_registers_as_found() {
    let mut kid = piped("cat", &[]);
    let (mut stdin, mut stdout) = (kid.stdin(), kid.stdout());
    echo_round_trip(&mut stdin, &mut stdout, "before\n");
    wait_in_syscall(kid.pid(), nr::READ);

    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let regs = task.regs().expect("regs");
    let mask = task.sigmask().expect("sigmask");
    let xstate = task.xstate().expect("xstate");
    let before = maps(kid.pid());
    // cat was interrupted inside read(): the kernel will restart it.
    assert_eq!(regs.orig_rax, nr::READ as u64);
    assert_eq!(regs.rax as i64, -ERESTARTSYS);

    let inj = Injection::new(&task).expect("inject");
    assert_ne!(maps(kid.pid()), before, "stub visible while injected");
    let stub = inj.stub_addr();
    inj.syscall_ok(nr::GETPPID, &[]).expect("getppid");
    inj.cure().expect("cure");

    assert_eq!(maps(kid.pid()), before);
    assert!(!maps(kid.pid()).contains(&format!("{:x}-", stub.0)));
    assert_eq!(task.regs().expect("regs"), regs);
    assert_eq!(task.sigmask().expect("sigmask"), mask);
    assert_eq!(task.xstate().expect("xstate"), xstate);
    task.detach().expect("detach");

    echo_round_trip(&mut stdin, &mut stdout, "after\n");
    drop(stdin);
    let status = kid.0.wait().expect("wait");
    assert!(status.success(), "cat exits normally: {status}");
}

#[test]
fn dropped_injection_is_cured() {
    let kid = sleeper();
    wait_in_syscall(kid.pid(), libc::SYS_clock_nanosleep);
    let before = maps(kid.pid());
    {
        let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
        let inj = Injection::new(&task).expect("inject");
        inj.syscall_ok(nr::GETPID, &[]).expect("getpid");
        // Neither cure nor detach: both guards clean up.
    }
    assert_eq!(maps(kid.pid()), before);
    wait_for("sleep to run again", || stat_state(kid.pid()) == 'S');
}

#[test]
fn injection_at_a_chosen_address() {
    let kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let want = RemoteAddr(0x3f00_0000_0000);
    let inj = Injection::new_at(&task, want).expect("inject at");
    assert_eq!(inj.stub_addr(), want);
    assert_eq!(inj.scratch(), want.offset(4096));
    assert_eq!(
        inj.syscall(nr::GETPID, &[]).expect("getpid"),
        i64::from(kid.pid().0)
    );
    // The same place again is taken: MAP_FIXED_NOREPLACE refuses.
    let err = Injection::new_at(&task, want).expect_err("occupied");
    assert!(
        matches!(
            err,
            InjectError::StubMap {
                source: nix::errno::Errno::EEXIST,
                ..
            }
        ),
        "{err}"
    );
    inj.cure().expect("cure");
}

#[test]
fn blocked_read_continues_after_seize_inject_cure_detach() {
    let mut kid = piped("cat", &[]);
    let (mut stdin, mut stdout) = (kid.stdin(), kid.stdout());
    wait_in_syscall(kid.pid(), nr::READ);
    for round in 0..3 {
        let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
        let inj = Injection::new(&task).expect("inject");
        let (r, w) = remote_pipe(&inj, 0).expect("pipe");
        close_remote(&inj, r).expect("close");
        close_remote(&inj, w).expect("close");
        inj.cure().expect("cure");
        task.detach().expect("detach");
        echo_round_trip(&mut stdin, &mut stdout, &format!("round {round}\n"));
        wait_in_syscall(kid.pid(), nr::READ);
    }
}

#[test]
fn seccomp_filter_is_suspended_for_injected_syscalls() {
    let exe = std::env::current_exe().expect("test exe");
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples/seccomp_echo"))
        .expect("target dir");
    assert!(
        example.exists(),
        "needs the seccomp_echo example at {} (cargo test builds it)",
        example.display()
    );
    let mut kid = piped(example.to_str().expect("utf-8 path"), &[]);
    let (mut stdin, mut stdout) = (kid.stdin(), kid.stdout());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert_eq!(line, "ready\n");
    wait_in_syscall(kid.pid(), nr::READ);

    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    assert_eq!(task.seccomp_mode(), 2);
    // The filter kills on mmap, and the stub itself is mapped with mmap.
    let inj = Injection::new(&task).expect("inject despite the filter");
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = inj
        .syscall_ok(
            nr::MMAP,
            &[0, 4096, libc::PROT_READ as u64, flags, u64::MAX, 0],
        )
        .expect("injected mmap");
    inj.syscall_ok(nr::MUNMAP, &[addr, 4096]).expect("munmap");
    inj.cure().expect("cure");
    task.detach().expect("detach");

    echo_round_trip(&mut stdin, &mut stdout, "still filtered and alive\n");
    drop(stdin);
    assert!(kid.0.wait().expect("wait").success());
}

#[test]
fn vanished_pid_is_named() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = RealPid(i32::try_from(child.id()).expect("pid"));
    child.wait().expect("reap");
    let err = SeizedTask::seize(pid, &opts()).expect_err("gone");
    assert!(
        matches!(err, SeizeError::Vanished { pid: p } if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&pid.to_string()));
}

#[test]
fn zombie_is_reported() {
    let kid = Kid::spawn(&mut Command::new("true"));
    wait_for("the child to become a zombie", || {
        stat_state(kid.pid()) == 'Z'
    });
    let err = SeizedTask::seize(kid.pid(), &opts()).expect_err("zombie");
    assert!(
        matches!(err, SeizeError::Zombie { pid } if pid == kid.pid()),
        "{err}"
    );
}

#[test]
fn stopped_task_stays_stopped() {
    let kid = sleeper();
    let pid = Pid::from_raw(kid.pid().0);
    kill(pid, Signal::SIGSTOP).expect("stop");
    wait_for("the child to stop", || stat_state(kid.pid()) == 'T');

    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    assert_eq!(task.proc_state(), 'T');
    assert_eq!(task.stop_signal(), Some(Signal::SIGSTOP));
    let inj = Injection::new(&task).expect("inject");
    assert_eq!(
        inj.syscall(nr::GETPID, &[]).expect("getpid"),
        i64::from(kid.pid().0)
    );
    inj.cure().expect("cure");
    task.detach().expect("detach");
    wait_for("the child to be stopped again", || {
        stat_state(kid.pid()) == 'T'
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(stat_state(kid.pid()), 'T', "still stopped");

    kill(pid, Signal::SIGCONT).expect("cont");
    wait_for("the child to run", || stat_state(kid.pid()) == 'S');
}

#[test]
fn detach_stopped_leaves_the_task_stopped() {
    let kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    task.detach_stopped().expect("detach stopped");
    wait_for("the child to stop", || stat_state(kid.pid()) == 'T');
}

#[test]
fn attach_child_stopped_then_resume() {
    let mut kid = piped("sh", &["-c", "kill -STOP $$; echo resumed"]);
    let mut stdout = kid.stdout();
    let task = SeizedTask::attach_child_stopped(kid.pid()).expect("attach");
    assert_eq!(stat_state(kid.pid()), 't');
    let inj = Injection::new(&task).expect("inject");
    assert_eq!(
        inj.syscall(nr::GETPID, &[]).expect("getpid"),
        i64::from(kid.pid().0)
    );
    inj.cure().expect("cure");
    task.detach().expect("detach");
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read");
    assert_eq!(out, "resumed\n");
    assert!(kid.0.wait().expect("wait").success());
}

#[test]
fn kill_reaps_the_task() {
    let mut kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    task.kill();
    assert!(
        !PathBuf::from(format!("/proc/{}", kid.pid())).exists(),
        "reaped"
    );
    // std's handle has nothing left to wait for.
    assert!(kid.0.try_wait().is_err());
}

/// Reads numbered lines and checks they follow on from `last`.
fn expect_counting(stdout: &mut BufReader<ChildStdout>, last: &mut u64, lines: usize) {
    let mut line = String::new();
    for _ in 0..lines {
        line.clear();
        stdout.read_line(&mut line).expect("read a number");
        let n: u64 = line.trim().parse().expect("a number");
        assert_eq!(n, *last + 1, "the loop counts on");
        *last = n;
    }
}

#[test]
fn finish_with_regs_resumes_a_looping_task() {
    let mut kid = piped("sh", &["-c", "i=0; while :; do i=$((i+1)); echo $i; done"]);
    let mut stdout = kid.stdout();
    let mut last = 0;
    expect_counting(&mut stdout, &mut last, 100);

    for _ in 0..3 {
        let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
        let saved = task.regs().expect("regs");
        let xstate = task.xstate().expect("xstate");
        let mask = task.sigmask().expect("sigmask");
        let inj = Injection::new(&task).expect("inject");
        let stub = inj.stub_addr();
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let extra = inj
            .syscall_ok(
                nr::MMAP,
                &[0, 4096, libc::PROT_READ as u64, flags, u64::MAX, 0],
            )
            .expect("mmap");
        // Scribble over the registers as a restore would.
        let mut junk = saved;
        junk.rip = stub.0;
        junk.rsp = 0;
        task.set_regs(&junk).expect("junk regs");
        inj.finish_with_regs(&saved, Some(&xstate)).expect("finish");
        let now = maps(kid.pid());
        assert!(!now.contains(&format!("{:x}-", stub.0)), "stub gone");
        assert!(now.contains(&format!("{extra:x}-")), "other work kept");
        assert_eq!(task.sigmask().expect("sigmask"), mask);
        task.detach().expect("detach");
        expect_counting(&mut stdout, &mut last, 20_000);
    }
}

#[test]
fn finish_with_regs_restarts_an_interrupted_read() {
    let mut kid = piped("cat", &[]);
    let (mut stdin, mut stdout) = (kid.stdin(), kid.stdout());
    wait_in_syscall(kid.pid(), nr::READ);
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let saved = task.regs().expect("regs");
    assert_eq!(saved.rax as i64, -ERESTARTSYS);
    let inj = Injection::new(&task).expect("inject");
    inj.syscall_ok(nr::GETPID, &[]).expect("getpid");
    inj.finish_with_regs(&saved, None).expect("finish");
    task.detach().expect("detach");
    echo_round_trip(&mut stdin, &mut stdout, "read restarted\n");
    drop(stdin);
    assert!(kid.0.wait().expect("wait").success());
}

#[test]
fn seizing_a_traced_task_fails_at_once() {
    let kid = sleeper();
    let task = SeizedTask::seize(kid.pid(), &opts()).expect("seize");
    let started = Instant::now();
    let err = SeizedTask::seize(kid.pid(), &opts()).expect_err("already traced");
    assert!(matches!(err, SeizeError::Attach { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(task);
}

/// A cgroup-v1 freezer group holding one task, thawed and removed on drop.
struct Frozen(PathBuf);

impl Frozen {
    fn new(pid: RealPid) -> Self {
        let root = PathBuf::from("/sys/fs/cgroup/freezer");
        assert!(
            root.join("freezer.state").exists() || root.join("tasks").exists(),
            "needs a cgroup-v1 freezer hierarchy at {}",
            root.display()
        );
        let dir = root.join(format!("criu-engine-inject-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create freezer cgroup");
        let group = Self(dir);
        std::fs::write(group.0.join("tasks"), pid.to_string()).expect("join the freezer");
        std::fs::write(group.0.join("freezer.state"), "FROZEN").expect("freeze");
        wait_for("the freezer to freeze", || {
            std::fs::read_to_string(group.0.join("freezer.state"))
                .unwrap_or_default()
                .trim()
                == "FROZEN"
        });
        group
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let root = self.0.parent().expect("parent").join("tasks");
        if let Ok(tasks) = std::fs::read_to_string(self.0.join("tasks")) {
            for pid in tasks.lines() {
                let _ = std::fs::write(&root, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn seize_times_out_on_a_frozen_task() {
    let kid = sleeper();
    wait_in_syscall(kid.pid(), libc::SYS_clock_nanosleep);
    let frozen = Frozen::new(kid.pid());
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = SeizedTask::seize(kid.pid(), &SeizeOptions { timeout }).expect_err("frozen");
    assert!(
        matches!(err, SeizeError::Timeout { pid, .. } if pid == kid.pid()),
        "{err}"
    );
    assert!(started.elapsed() >= timeout);
    assert!(started.elapsed() < timeout * 10);
    drop(frozen);
}
