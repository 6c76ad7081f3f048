//! Unix sockets and FIFOs across a dump and restore (`criu-wl-sockets`):
//! socketpairs of every type (one shared with a child process), an
//! accepted connection, one not accepted yet, listeners on a path and an abstract name, a
//! datagram server, shutdown and half-closed connections, a FIFO, each
//! with data queued before the dump that the restored process then
//! receives; new messages and new connections go through. A peer outside
//! the tree makes the dump fail clearly and leaves the target as it was.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReqType as T, CriuResp};
use criu_tests::{
    alive, become_subreaper, bin, kill_and_reap, log_of, req, require_root, Connect, TempDir,
};

/// The checks the workload reports, in order.
const CHECKS: [&str; 11] = [
    "stream",
    "dgram",
    "seqpacket",
    "accepted",
    "in-flight",
    "shutdown",
    "dgram-server",
    "semi-closed",
    "fifo",
    "listen-path",
    "listen-abstract",
];

/// A running `criu-wl-sockets` and its helper child.
struct Wl {
    pid: i32,
    helper: i32,
    name: String,
    dir: TempDir,
}

impl Wl {
    fn start(extra: Option<String>) -> Wl {
        become_subreaper();
        let dir = TempDir::new("wl-sockets");
        // The directory name is unique among concurrent tests.
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut cmd = std::process::Command::new(bin("criu-wl-sockets"));
        cmd.arg(dir.path()).arg(&name);
        if let Some(e) = extra {
            cmd.arg(e);
        }
        let out = cmd.output().expect("start criu-wl-sockets");
        assert!(out.status.success(), "criu-wl-sockets failed to start");
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let mut wl = Wl {
            pid,
            helper: 0,
            name,
            dir,
        };
        let report = wl.wait_report("ready");
        wl.helper = report
            .lines()
            .find_map(|l| l.strip_prefix("helper "))
            .and_then(|p| p.parse().ok())
            .expect("helper pid reported");
        wl
    }

    fn report(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("report")).unwrap_or_default()
    }

    /// Waits (20 s at most) for a report line `line`.
    fn wait_report(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.report();
            if r.lines().any(|l| l == line) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "workload {} never reported {line:?}; report so far:\n{r}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the checks, plays the outside client of both listeners and
    /// asserts every check passed.
    fn check(&self) {
        std::fs::write(self.dir.path().join("go"), b"").unwrap();
        let path = self.dir.path().join("listen.sock");
        hello(UnixStream::connect(&path).expect("connect to the path listener"));
        let addr = SocketAddr::from_abstract_name(self.name.as_bytes()).unwrap();
        hello(UnixStream::connect_addr(&addr).expect("connect to the abstract listener"));
        let report = self.wait_report("done");
        for c in CHECKS {
            assert!(
                report.lines().any(|l| l == format!("{c} ok")),
                "check {c} failed; report:\n{report}"
            );
        }
    }
}

impl Drop for Wl {
    fn drop(&mut self) {
        for pid in [self.pid, self.helper] {
            if pid > 0 && alive(pid) {
                kill_and_reap(pid);
            }
        }
    }
}

/// Says `hello`, expects `welcome`.
fn hello(mut s: UnixStream) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).expect("an answer from the listener");
    assert_eq!(&buf, b"welcome");
}

fn call(ty: T, dir: &Path, opts: impl FnOnce(&mut CriuOpts)) -> CriuResp {
    let handle = std::fs::File::open(dir).unwrap();
    let mut o = CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        log_file: Some(format!("{}.log", ty.as_str_name().to_lowercase())),
        log_level: Some(4),
        ..Default::default()
    };
    opts(&mut o);
    let mut r = req(ty);
    r.opts = Some(o);
    let c = Connect::Swrk(bin("criu"));
    let client = c.open();
    let resp = client.call(&r).expect("answered");
    let _ = client.wait();
    resp
}

fn wait_gone(pids: [i32; 2]) {
    // Killed (or still running) processes, zombies included, go away.
    for pid in pids {
        if Path::new(&format!("/proc/{pid}")).exists() {
            kill_and_reap(pid);
        }
    }
}

fn dump_and_restore(leave_running: bool) {
    require_root();
    let wl = Wl::start(None);
    let images = TempDir::new("sockets-img");
    let resp = call(T::Dump, images.path(), |o| {
        o.pid = Some(wl.pid);
        o.leave_running = Some(leave_running);
    });
    assert!(
        resp.success,
        "dump: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    assert_eq!(alive(wl.pid), leave_running);
    wait_gone([wl.pid, wl.helper]);
    let resp = call(T::Restore, images.path(), |_| {});
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    assert!(alive(wl.pid) && alive(wl.helper), "the tree is back");
    wl.check();
}

#[test]
fn sockets_and_fifos_survive_dump_kill_restore() {
    dump_and_restore(false);
}

#[test]
fn sockets_and_fifos_survive_a_leave_running_dump() {
    dump_and_restore(true);
}

#[test]
fn a_peer_outside_the_tree_is_refused_and_the_target_unharmed() {
    require_root();
    let outside = TempDir::new("sockets-outside");
    let path = outside.path().join("ext.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let wl = Wl::start(Some(format!("external={}", path.display())));
    let (_peer, _) = listener.accept().unwrap();
    let images = TempDir::new("sockets-img");
    let resp = call(T::Dump, images.path(), |o| o.pid = Some(wl.pid));
    assert!(!resp.success, "a dump with an outside peer must fail");
    let msg = resp.cr_errmsg.clone().unwrap_or_default();
    let log = log_of(images.path(), "dump.log");
    let both = format!("{msg}\n{log}");
    assert!(
        both.contains("outside the dumped tree") && both.contains(&format!("task {}", wl.pid)),
        "the error names the task and the outside peer: {msg}\n{log}"
    );
    assert!(alive(wl.pid), "the target keeps running");
    wl.check();
}

#[test]
fn an_outside_datagram_peer_is_reconnected_with_ext_unix_sk() {
    require_root();
    let outside = TempDir::new("sockets-dgram");
    let name = outside
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let peer = UnixDatagram::bind_addr(&addr).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let wl = Wl::start(Some(format!("external-dgram={name}")));
    let images = TempDir::new("sockets-img");
    let resp = call(T::Dump, images.path(), |o| o.pid = Some(wl.pid));
    assert!(!resp.success, "an outside peer needs ext_unix_sk");
    assert!(alive(wl.pid));
    let resp = call(T::Dump, images.path(), |o| {
        o.pid = Some(wl.pid);
        o.ext_unix_sk = Some(true);
    });
    assert!(
        resp.success,
        "dump with ext_unix_sk: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    wait_gone([wl.pid, wl.helper]);
    let resp = call(T::Restore, images.path(), |_| {});
    let msg = resp.cr_errmsg.clone().unwrap_or_default();
    assert!(
        !resp.success && msg.contains("ext_unix_sk"),
        "restore without ext_unix_sk is refused: {resp:?}"
    );
    let resp = call(T::Restore, images.path(), |o| o.ext_unix_sk = Some(true));
    assert!(
        resp.success,
        "restore: {resp:?}\n{}",
        log_of(images.path(), "restore.log")
    );
    wl.check();
    let mut buf = [0u8; 16];
    let n = peer
        .recv(&mut buf)
        .expect("the restored socket reaches the outside peer");
    assert_eq!(&buf[..n], b"ext-hello");
    assert!(wl.report().lines().any(|l| l == "external-dgram ok"));
}

#[test]
fn a_descriptor_in_flight_is_refused_and_the_target_unharmed() {
    require_root();
    let wl = Wl::start(Some("scm".into()));
    let images = TempDir::new("sockets-img");
    let resp = call(T::Dump, images.path(), |o| o.pid = Some(wl.pid));
    assert!(
        !resp.success,
        "a queued SCM_RIGHTS message cannot be dumped yet"
    );
    let msg = format!(
        "{}\n{}",
        resp.cr_errmsg.clone().unwrap_or_default(),
        log_of(images.path(), "dump.log")
    );
    assert!(
        msg.contains("SCM_RIGHTS") && msg.contains(&format!("task {}", wl.pid)),
        "the error names the task and the descriptor in flight: {msg}"
    );
    assert!(alive(wl.pid), "the target keeps running");
    wl.check();
}

#[test]
fn an_outside_stream_peer_is_handed_back_with_inherit_fd() {
    use std::os::fd::AsRawFd;
    require_root();
    let outside = TempDir::new("sockets-stream");
    let path = outside.path().join("ext.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let wl = Wl::start(Some(format!("external={}", path.display())));
    let (_old_peer, _) = listener.accept().unwrap();
    let ino: u64 = wl
        .report()
        .lines()
        .find_map(|l| l.strip_prefix("external-ino "))
        .and_then(|n| n.parse().ok())
        .expect("external socket inode reported");
    let images = TempDir::new("sockets-img");
    let resp = call(T::Dump, images.path(), |o| {
        o.pid = Some(wl.pid);
        o.external = vec![format!("unix[{ino}]")];
    });
    assert!(
        resp.success,
        "dump with external unix[{ino}]: {resp:?}\n{}",
        log_of(images.path(), "dump.log")
    );
    wait_gone([wl.pid, wl.helper]);
    // The restored process gets a new connection in place of the old one.
    let (theirs, ours) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let fd = theirs.as_raw_fd();
    nix::fcntl::fcntl(
        &theirs,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let out = std::process::Command::new(bin("criu"))
        .arg("restore")
        .arg("-D")
        .arg(images.path())
        .arg("-d")
        .arg("-o")
        .arg("restore.log")
        .arg("-v4")
        .arg(format!("--inherit-fd=fd[{fd}]:socket:[{ino}]"))
        .output()
        .unwrap();
    drop(theirs);
    assert!(
        out.status.success(),
        "restore with inherit_fd: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_of(images.path(), "restore.log")
    );
    wl.check();
    let mut buf = [0u8; 10];
    (&ours)
        .read_exact(&mut buf)
        .expect("the restored socket is the handed-over one");
    assert_eq!(&buf, b"ext-stream");
}
