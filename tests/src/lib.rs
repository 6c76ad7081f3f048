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
/// The test executables live in `target/<profile>/deps/`, so the binaries are
/// one directory up. Panics with a clear message when the binary was not
/// built: the README's test command builds all of them first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
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
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("criu-rs-test-{tag}-{}-{n}", std::process::id()));
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
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

/// Exit code of a finished worker (panics when it died of a signal).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| panic!("worker killed by signal {:?}", status.signal()))
}
