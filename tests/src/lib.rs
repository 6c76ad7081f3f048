//! Helpers shared by the end-to-end tests: where the built binaries are,
//! preconditions stated by each test, and small process utilities.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The front-ends under test. Every one of them accepts `swrk <fd>` and
/// `service --address PATH`, so each test runs against all three.
pub const FRONTENDS: [&str; 3] = ["criu", "criu-swrk", "criu-serviced"];

/// Path of a binary built from this workspace (`target/<profile>/<name>`).
///
/// Test executables live in `target/<profile>/deps/` and the demo and
/// benchmark binaries in `target/<profile>/`, so the binaries are found next
/// to the running executable or one directory up. Panics with a clear
/// message when the binary was not built: the README's commands build all of
/// them first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own executable path");
    let here = exe.parent().expect("executable directory");
    let candidates = [here.join(name), here.parent().unwrap_or(here).join(name)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "binary {name} is missing next to {}: run `cargo build --workspace --bins` first",
                exe.display()
            )
        })
}

/// Fails the test, naming the need, unless we run as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it ptraces processes and opens /proc/<pid>/fd)"
    );
}

/// A fresh temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `/tmp/criu-rs-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// Creates one in tmpfs (`/dev/shm`) when there is one, as benchmarks
    /// want (no disk in the figures), else in `/tmp`.
    pub fn in_memory(tag: &str) -> Self {
        let shm = Path::new("/dev/shm");
        Self::new_in(if shm.is_dir() { shm } else { Path::new("/tmp") }, tag)
    }

    fn new_in(base: &Path, tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("criu-rs-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running service daemon (`<binary> service --address <sock>`), killed on drop.
pub struct Service {
    child: Child,
    /// The listening socket's path.
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Service {
    /// Starts `binary service --address <tmp>/criu.sock` and waits until the
    /// socket accepts connections.
    pub fn start(binary: &Path) -> Self {
        let dir = TempDir::new("service");
        let socket = dir.path().join("criu.sock");
        let child = Command::new(binary)
            .arg("service")
            .arg("--address")
            .arg(&socket)
            .spawn()
            .expect("start service");
        // The socket file appears at bind(), before listen(): only a
        // successful connection proves the service is ready. The probe
        // connection closes at once; its worker sees EOF and exits.
        let deadline = Instant::now() + Duration::from_secs(10);
        while criu_transport::client::Client::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "service never started listening");
            std::thread::sleep(Duration::from_millis(5));
        }
        Service {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Pid of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request of type `ty` with nothing else set.
pub fn req(ty: criu_proto::rpc::CriuReqType) -> criu_proto::rpc::CriuReq {
    criu_proto::rpc::CriuReq {
        r#type: ty as i32,
        ..Default::default()
    }
}

/// Options naming `dir` as the images directory by path (`images_dir`).
pub fn opts_with_dir(dir: &Path) -> criu_proto::rpc::CriuOpts {
    criu_proto::rpc::CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(dir.display().to_string()),
        ..Default::default()
    }
}

/// How a test reaches a server: a swrk worker it spawns, or a service.
#[derive(Debug, Clone)]
pub enum Connect {
    /// `<binary> swrk <fd>` started per connection.
    Swrk(PathBuf),
    /// A running service's socket.
    Service(PathBuf),
}

impl Connect {
    /// Opens one connection.
    pub fn open(&self) -> criu_transport::client::Client {
        use criu_transport::client::Client;
        match self {
            Connect::Swrk(bin) => Client::spawn_swrk(bin, &[]).expect("spawn swrk worker"),
            Connect::Service(sock) => Client::connect(sock).expect("connect to service"),
        }
    }

    /// True for a swrk worker (whose exit status the test can read).
    pub fn is_swrk(&self) -> bool {
        matches!(self, Connect::Swrk(_))
    }
}

/// The log file `name` in `dir`, or an empty string when there is none.
pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Runs our `criu` with `args` and asserts it succeeded; a failure shows
/// its stderr and its log file `log` in `dir`.
pub fn criu_ok(args: &[&str], dir: &Path, log: &str) {
    let out = Command::new(bin("criu")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "criu {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_of(dir, log)
    );
}

/// Exit code of a finished worker (panics when it died of a signal).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| panic!("worker killed by signal {:?}", status.signal()))
}

/// How every test workload goes to the background: forks; the parent
/// prints the child's pid on stdout and exits; the child returns, leading a
/// new session with its stdio on `/dev/null`. Call it single-threaded.
pub fn daemonize() {
    let fail = |what: &str, err: nix::Error| -> ! {
        eprintln!("{what}: {err}");
        std::process::exit(1)
    };
    // SAFETY: callers are single-threaded here; the child goes on with the
    // caller's plain code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            use std::io::Write;
            println!("{child}");
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(err) => fail("fork", err),
    }
    nix::unistd::setsid().unwrap_or_else(|err| fail("setsid", err));
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap_or_else(|err| {
            eprintln!("/dev/null: {err}");
            std::process::exit(1)
        });
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null))
        .unwrap_or_else(|err| fail("dup2", err));
}

/// Makes the test process a child subreaper, so that orphaned targets and
/// detached restored tasks become our children and are reaped at once (PID 1
/// of these machines reaps only after seconds, which would keep a dumped pid
/// busy). Idempotent.
pub fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Kills `pid` and waits until it is gone, reaping it once it is our child
/// (directly, or through [`become_subreaper`]). Only this pid is waited for,
/// so concurrent tests keep their own children.
pub fn kill_and_reap(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = waitpid(p, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL));
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} never went away");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A uid (and gid) with no passwd entry that the tests use as an unprivileged
/// client of the service.
pub const USER: u32 = 4242;

/// A second unprivileged uid (and gid), someone else to the first.
pub const OTHER_USER: u32 = 4243;

/// A directory owned by `uid`:`uid`, mode 0700.
pub fn user_dir(tag: &str, uid: u32) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Sends `req` to the service at `socket` from a `criu-rpc-client` running
/// as `uid`:`gid` without supplementary groups; with `dir`, the client opens
/// it itself and names it by `images_dir_fd`. `Err` carries the client's
/// stderr when no response arrived.
pub fn call_as(
    uid: u32,
    gid: u32,
    socket: &Path,
    req: &criu_proto::rpc::CriuReq,
    dir: Option<&Path>,
) -> Result<criu_proto::rpc::CriuResp, String> {
    use criu_proto::Message;
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = Command::new(bin("criu-rpc-client"));
    cmd.arg(socket);
    if let Some(dir) = dir {
        cmd.arg(dir);
    }
    let mut child = cmd
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start criu-rpc-client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&req.encode_to_vec())
        .expect("send the request to criu-rpc-client");
    let out = child.wait_with_output().expect("criu-rpc-client output");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    criu_proto::rpc::CriuResp::decode(out.stdout.as_slice()).map_err(|e| e.to_string())
}

/// `State:` letter of a task (`None` when it is gone).
pub fn task_state(pid: i32) -> Option<char> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|v| v.trim().chars().next())
}

/// A running `criu-workload` (see its source): memory with a known pattern,
/// a private file mapping, an O_APPEND log, a read fd at offset 1234, a
/// SIGUSR1 handler and SIGUSR2 blocked; it appends `n checksum sigusr1 offset`
/// lines to its log every 100 ms.
pub struct Workload {
    /// Its pid.
    pub pid: i32,
    /// Its log file.
    pub log: PathBuf,
    _dir: TempDir,
}

/// One line of the workload's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadLine {
    /// Iteration counter.
    pub n: u64,
    /// Checksum of its memory (hex as printed).
    pub checksum: String,
    /// SIGUSR1 deliveries so far.
    pub sigusr1: u64,
    /// Offset of the read fd on its executable.
    pub offset: i64,
    /// Counters of the extra threads (`threads N`).
    pub counters: Vec<u64>,
    /// With `dirty=` or `remap`: whether memory matched what the workload
    /// wrote.
    pub consistent: Option<bool>,
}

impl Workload {
    /// Starts `criu-workload LOG MIB [extra...]` (`extra` split at spaces)
    /// and waits for its first report.
    pub fn start(mib: usize, extra: Option<&str>) -> Workload {
        Workload::start_with(mib, extra, None)
    }

    /// Starts `criu-workload LOG MIB` as `uid`:`gid` (no supplementary
    /// groups), with its log in a directory that user owns.
    pub fn start_as(uid: u32, gid: u32, mib: usize) -> Workload {
        Workload::start_with(mib, None, Some((uid, gid)))
    }

    fn start_with(mib: usize, extra: Option<&str>, ids: Option<(u32, u32)>) -> Workload {
        use std::os::unix::process::CommandExt;
        become_subreaper();
        let dir = TempDir::new("workload");
        let log = dir.path().join("workload.log");
        let mut cmd = Command::new(bin("criu-workload"));
        cmd.arg(&log).arg(mib.to_string());
        if let Some(extra) = extra {
            cmd.args(extra.split_whitespace());
        }
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown workload dir");
            // std drops the supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("start criu-workload");
        assert!(out.status.success(), "criu-workload failed to start");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("criu-workload prints its pid");
        let w = Workload {
            pid,
            log,
            _dir: dir,
        };
        w.wait_for_line_after(None);
        w
    }

    /// The last complete report line.
    pub fn last_line(&self) -> Option<WorkloadLine> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .filter(|l| !l.starts_with("fds "))
            .filter_map(|l| {
                let mut words: Vec<&str> = l.split_whitespace().collect();
                let consistent = match words.last() {
                    Some(&"ok") => Some(true),
                    Some(&"bad") => Some(false),
                    _ => None,
                };
                if consistent.is_some() {
                    words.pop();
                }
                let mut it = words.into_iter();
                Some(WorkloadLine {
                    n: it.next()?.parse().ok()?,
                    checksum: it.next()?.to_owned(),
                    sigusr1: it.next()?.parse().ok()?,
                    offset: it.next()?.parse().ok()?,
                    counters: it.map(|c| c.parse().ok()).collect::<Option<_>>()?,
                    consistent,
                })
            })
            .next_back()
    }

    /// Waits (up to 10 s) for a report newer than `after` and returns it.
    pub fn wait_for_line_after(&self, after: Option<u64>) -> WorkloadLine {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.last_line() {
                if after.is_none_or(|n| line.n > n) {
                    return line;
                }
            }
            assert!(
                Instant::now() < deadline,
                "workload {} reported nothing new after {after:?}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if alive(self.pid) {
            kill_and_reap(self.pid);
        }
    }
}

/// The median of benchmark timings (the upper one of an even count).
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `dump` part of the `stats-dump` image in `dir`, if there is one
/// (frozen time, pages written, ...), as the benchmarks report it.
pub fn dump_stats(dir: &Path) -> Option<criu_proto::images::DumpStatsEntry> {
    let images = criu_proto::img::ImagesDir::open(dir).ok()?;
    let stats: criu_proto::images::StatsEntry = images
        .read_single(criu_proto::img::ImageKind::StatsDump, 0)
        .ok()
        .flatten()?;
    stats.dump
}
