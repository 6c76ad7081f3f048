//! Terminals end to end (`criu-wl-tty`): a shell job dumped with
//! `shell_job` and restored onto the terminal of the restoring `criu`, as a
//! session leader and as a background job of the restorer's session; a pty
//! pair inside the tree with its queued bytes, window size and controlling
//! terminal; and the `orphan_pts_master` hand-over to an RPC client.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use criu_proto::images::{TtyDataEntry, TtyInfoEntry};
use criu_proto::img::{ImageKind, ImagesDir};
use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{become_subreaper, bin, kill_and_reap, req, require_root, TempDir};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Pty indices are a machine-wide resource and a restore wants its dumped
/// index back: the tests of this file take turns.
static PTYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    PTYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills and reaps the listed processes when the test ends, even when it
/// fails half-way.
struct Cleanup(Vec<i32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        for &pid in &self.0 {
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::SIGKILL);
            for _ in 0..200 {
                if waitpid(p, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)).is_err()
                    || std::fs::metadata(format!("/proc/{pid}")).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A pty made by the test: its master and the slave's path.
struct Pty {
    master: OwnedFd,
    slave: String,
    seen: String,
}

impl Pty {
    fn open() -> Pty {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        // Tests run in parallel: no other test's child may inherit it.
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let slave = nix::pty::ptsname_r(&master).unwrap();
        Pty {
            master: master.into(),
            slave,
            seen: String::new(),
        }
    }

    fn from_master(master: OwnedFd) -> Pty {
        Pty {
            master,
            slave: String::new(),
            seen: String::new(),
        }
    }

    /// Runs `cmd` with the slave as its standard streams, leading a new
    /// session whose controlling terminal is the slave.
    fn spawn(&self, cmd: &mut Command) -> Child {
        self.spawn_with(cmd, false)
    }

    /// [`Pty::spawn`]; with `dev_tty` the process also holds `/dev/tty`
    /// open.
    fn spawn_with(&self, cmd: &mut Command, dev_tty: bool) -> Child {
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&self.slave)
                .unwrap()
        };
        use std::os::unix::fs::OpenOptionsExt;
        cmd.stdin(open()).stdout(open()).stderr(open());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if dev_tty && libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    fn write(&self, text: &str) {
        nix::unistd::write(&self.master, text.as_bytes()).unwrap();
    }

    /// Reads the terminal until a line starting with `prefix` comes (10 s
    /// at most) and returns it; earlier output is dropped.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while let Some(end) = self.seen.find('\n') {
                let line = self.seen[..end].trim_end_matches('\r').to_owned();
                self.seen.drain(..=end);
                if line.starts_with(prefix) {
                    return line;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no line starting with {prefix:?} on the terminal (left: {:?})",
                self.seen
            );
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) == 0 {
                continue;
            }
            let mut buf = [0u8; 1024];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                // No slave open for a moment (between dump and restore).
                Err(nix::errno::Errno::EIO) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("read the terminal: {e}"),
            }
        }
    }

    /// `who` answered by the shell workload: (pid, pgid, sid, fg).
    fn who(&mut self) -> (i32, i32, i32, i32) {
        self.write("who\n");
        let line = self.wait_line("who ");
        let field = |name: &str| -> i32 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
        };
        (field("pid="), field("pgid="), field("sid="), field("fg="))
    }
}

fn criu(args: &[&str]) -> Output {
    Command::new(bin("criu"))
        .args(args)
        .env_remove("CRIU_CONFIG_FILE")
        .output()
        .unwrap()
}

fn text(dir: &Path, out: &Output, log: &str) -> String {
    format!(
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join(log)).unwrap_or_default()
    )
}

fn dump(dir: &Path, pid: i32, extra: &[&str]) -> Output {
    let d = dir.display().to_string();
    let pid = pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", &d, "-v4", "-o", "dump.log"];
    args.extend_from_slice(extra);
    criu(&args)
}

/// Starts `criu restore --shell-job` on a terminal of its own (`pty`), as
/// a shell would: it leads the terminal's session and waits for the tree.
fn restore_on(pty: &Pty, dir: &Path) -> Child {
    let mut cmd = Command::new(bin("criu"));
    cmd.args(["restore", "-D"])
        .arg(dir)
        .args(["--shell-job", "-v4", "-o", "restore.log"])
        .env_remove("CRIU_CONFIG_FILE");
    pty.spawn(&mut cmd)
}

fn finish_restorer(mut restorer: Child) {
    let _ = restorer.kill();
    let _ = restorer.wait();
}

#[test]
fn shell_job_session_leader_comes_back_on_the_restorers_terminal() {
    require_root();
    become_subreaper();
    let _turn = take_turn();
    let dir = TempDir::new("tty-shell");
    let mut a = Pty::open();
    let mut target = a.spawn(Command::new(bin("criu-wl-tty")).arg("shell"));
    let pid = target.id() as i32;
    let mut cleanup = Cleanup(vec![pid]);
    a.wait_line("tick");

    // Without shell_job the inherited terminal is refused and the job
    // carries on untouched.
    let out = dump(dir.path(), pid, &[]);
    let msg = text(dir.path(), &out, "dump.log");
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("shell_job"), "{msg}");
    a.write("still\n");
    a.wait_line("got still");

    let out = dump(dir.path(), pid, &["--shell-job"]);
    assert!(
        out.status.success(),
        "{}",
        text(dir.path(), &out, "dump.log")
    );
    target.wait().unwrap();

    // No terminal to hand over: a clear failure, nothing left running.
    let d = dir.path().display().to_string();
    let out = criu(&["restore", "-D", &d, "--shell-job", "-o", "r0.log"]);
    assert!(!out.status.success());
    let msg = text(dir.path(), &out, "r0.log");
    assert!(msg.contains("standard input is not a terminal"), "{msg}");
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());

    let mut b = Pty::open();
    let restorer = restore_on(&b, dir.path());
    cleanup.0.push(restorer.id() as i32);
    b.wait_line("tick");
    b.write("hello\n");
    b.wait_line("got hello");
    let (p, pgid, sid, _) = b.who();
    assert_eq!(
        (p, pgid, sid),
        (pid, pid, pid),
        "still its own session leader"
    );
    kill_and_reap(pid);
    finish_restorer(restorer);
}

#[test]
fn shell_job_background_job_joins_the_restorers_session_in_the_foreground() {
    require_root();
    become_subreaper();
    let _turn = take_turn();
    let dir = TempDir::new("tty-job");
    let mut a = Pty::open();
    let mut shell = a.spawn(Command::new(bin("criu-wl-tty")).arg("job"));
    let mut cleanup = Cleanup(vec![shell.id() as i32]);
    let line = a.wait_line("job ");
    let pid: i32 = line[4..].trim().parse().unwrap();
    cleanup.0.insert(0, pid);
    a.wait_line("tick");
    let (_, pgid, sid, fg) = a.who();
    assert_eq!((pgid, sid, fg), (pid, shell.id() as i32, pid));

    let out = dump(dir.path(), pid, &["--shell-job"]);
    assert!(
        out.status.success(),
        "{}",
        text(dir.path(), &out, "dump.log")
    );
    let infos: Vec<TtyInfoEntry> = ImagesDir::open(dir.path())
        .unwrap()
        .read_all(ImageKind::TtyInfo, 0)
        .unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_eq!(infos[0].sid, shell.id(), "session of the shell");
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut b = Pty::open();
    let restorer = restore_on(&b, dir.path());
    cleanup.0.push(restorer.id() as i32);
    b.wait_line("tick");
    let (p, pgid, sid, fg) = b.who();
    assert_eq!((p, pgid), (pid, pid));
    assert_eq!(sid, restorer.id() as i32, "in the restorer's session");
    assert_eq!(fg, pid, "the foreground job of the terminal");
    b.write("again\n");
    b.wait_line("got again");
    kill_and_reap(pid);
    finish_restorer(restorer);
    let _ = shell.kill();
    let _ = shell.wait();
}

/// `(session, tty_nr, tpgid)` of `/proc/<pid>/stat`.
fn stat_tty(pid: i32) -> (i32, u64, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

fn wait_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pty_pair_inside_the_tree_keeps_queued_data_window_and_ctty() {
    require_root();
    become_subreaper();
    let _turn = take_turn();
    let dir = TempDir::new("tty-pair");
    let log = dir.path().join("pair.log");
    let mut cmd = Command::new(bin("criu-wl-tty"));
    cmd.arg("pair")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
    }
    let mut root = cmd.spawn().unwrap();
    let pid = root.id() as i32;
    let first = wait_log(&log, "\n");
    let mut words = first.split_whitespace().skip(1);
    let child: i32 = words.next().unwrap().parse().unwrap();
    let index: u64 = words.next().unwrap().parse().unwrap();
    let _cleanup = Cleanup(vec![pid, child]);
    let tty_nr = (136 << 8) | (index & 0xff) | ((index & !0xff) << 12);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat_tty(child) != (child, tty_nr, child) {
        assert!(Instant::now() < deadline, "{:?}", stat_tty(child));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let `ping 0` reach the child's terminal, where it waits unread.
    std::thread::sleep(Duration::from_millis(200));

    // A dump that leaves the pair running reads the queued line and
    // writes it back: the final dump finds it again.
    let first_images = dir.path().join("img0");
    std::fs::create_dir(&first_images).unwrap();
    let out = dump(&first_images, pid, &["--leave-running"]);
    assert!(
        out.status.success(),
        "{}",
        text(&first_images, &out, "dump.log")
    );
    let data: Vec<TtyDataEntry> = ImagesDir::open(&first_images)
        .unwrap()
        .read_all(ImageKind::TtyData, 0)
        .unwrap();
    assert!(data.iter().any(|d| d.data == b"ping 0\n"), "{data:?}");

    let images = dir.path().join("img");
    std::fs::create_dir(&images).unwrap();
    let out = dump(&images, pid, &[]);
    assert!(out.status.success(), "{}", text(&images, &out, "dump.log"));
    root.wait().unwrap();
    kill_and_reap(child);
    let img = ImagesDir::open(&images).unwrap();
    let infos: Vec<TtyInfoEntry> = img.read_all(ImageKind::TtyInfo, 0).unwrap();
    assert_eq!(infos.len(), 2, "master and slave: {infos:?}");
    let data: Vec<TtyDataEntry> = img.read_all(ImageKind::TtyData, 0).unwrap();
    assert!(
        data.iter().any(|d| d.data == b"ping 0\n"),
        "queued line saved: {data:?}"
    );

    let d = images.display().to_string();
    let out = criu(&["restore", "-D", &d, "-d", "-v4", "-o", "restore.log"]);
    assert!(
        out.status.success(),
        "{}",
        text(&images, &out, "restore.log")
    );
    assert_eq!(
        stat_tty(child),
        (child, tty_nr, child),
        "controlling terminal"
    );
    std::fs::write(dir.path().join("pair.log.go"), b"").unwrap();
    wait_log(&log, "pong ping 0 33x77");
    wait_log(&log, "pong ping 2 33x77");
    // The root first: it never reaps its child.
    kill_and_reap(pid);
    kill_and_reap(child);
}

#[test]
fn orphan_pts_master_is_handed_to_the_rpc_client() {
    require_root();
    become_subreaper();
    let _turn = take_turn();
    let dir = TempDir::new("tty-orphan");
    let mut a = Pty::open();
    let mut target = a.spawn(Command::new(bin("criu-wl-tty")).arg("shell"));
    let pid = target.id() as i32;
    let _cleanup = Cleanup(vec![pid]);
    a.wait_line("tick");
    let out = dump(dir.path(), pid, &["--shell-job"]);
    assert!(
        out.status.success(),
        "{}",
        text(dir.path(), &out, "dump.log")
    );
    target.wait().unwrap();
    // The old master goes away with its pty index.
    drop(a);

    let client = criu_transport::client::Client::spawn_swrk(&bin("criu"), &[]).unwrap();
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(dir.path().display().to_string()),
        orphan_pts_master: Some(true),
        notify_scripts: Some(true),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let mut master = None;
    let resp = client
        .call_with_notify(&r, |n, fd| {
            if n.script.as_deref() == Some("orphan-pts-master") {
                master = fd;
            }
            true
        })
        .unwrap();
    assert!(
        resp.success,
        "{resp:?}\n{}",
        std::fs::read_to_string(dir.path().join("restore.log")).unwrap_or_default()
    );
    assert_eq!(resp.restore.as_ref().map(|r| r.pid), Some(pid));
    let mut m = Pty::from_master(master.expect("a master fd with the notification"));
    assert!(m.master.as_raw_fd() >= 0);
    m.wait_line("tick");
    m.write("hello\n");
    m.wait_line("got hello");
    let (p, _, sid, fg) = m.who();
    assert_eq!(
        (p, sid, fg),
        (pid, pid, pid),
        "its controlling terminal again"
    );
    kill_and_reap(pid);
    let _ = client.wait();
}

#[test]
fn dev_tty_is_refused_and_the_job_goes_on() {
    require_root();
    become_subreaper();
    let _turn = take_turn();
    let dir = TempDir::new("tty-devtty");
    let mut a = Pty::open();
    let mut target = a.spawn_with(Command::new(bin("criu-wl-tty")).arg("shell"), true);
    let pid = target.id() as i32;
    let _cleanup = Cleanup(vec![pid]);
    a.wait_line("tick");
    let out = dump(dir.path(), pid, &["--shell-job"]);
    assert!(!out.status.success());
    let msg = text(dir.path(), &out, "dump.log");
    assert!(
        msg.contains("is the current terminal /dev/tty, which cannot be dumped yet"),
        "{msg}"
    );
    a.write("after\n");
    a.wait_line("got after");
    target.kill().unwrap();
    target.wait().unwrap();
}
