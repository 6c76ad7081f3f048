//! The service daemon: a named `SOCK_SEQPACKET` listener whose connections
//! are each served by a freshly executed worker (`<worker_exe> swrk <fd>`
//! with [`SERVICE_WORKER_ENV`] set), and the worker's side of that hand-off.
//!
//! Start-up follows rpc-protocol.md 3.2: bind (replacing a stale file), listen,
//! daemonize, write the pidfile, signal readiness, accept. As upstream, the
//! socket is mode 0666 (every local user may connect; the engine authorizes
//! each request from the peer's credentials), or, with a group given
//! ([`SocketAccess::Group`]), mode 0660 owned by that group. Unlike upstream,
//! `accept` errors caused by the client or by resource shortage are retried
//! instead of ending the service.
//!
//! The accept loop is single-threaded. Workers are reaped with
//! [`Child::try_wait`] after every accept and, while some are alive, at least
//! once a second (the listener is polled with a timeout), so no signal handler
//! is needed and children the process did not start here are never reaped.
//!
//! CRIU counterpart: `cr_service()` in `criu/cr-service.c`.
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
//! - [accept4(2)](https://man7.org/linux/man-pages/man2/accept4.2.html)
//! - [daemon(3)](https://man7.org/linux/man-pages/man3/daemon.3.html)

use std::convert::Infallible;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;

use crate::fds;
use crate::seqpacket::SeqPacket;

/// Environment variable that tells a re-executed worker it serves a service
/// connection (value `1`), so it applies service semantics (rpc-protocol.md
/// 3.3): swrk-only options refused, default configuration files not applied.
pub const SERVICE_WORKER_ENV: &str = "CRIU_SERVICE_WORKER";

/// Environment variable that tells a service worker (value `1`) that the
/// descriptor on its command line is a control socket on which the daemon
/// will send the connection to serve, instead of the connection itself.
pub const SERVICE_SPARE_ENV: &str = "CRIU_SERVICE_SPARE";

/// Listen backlog, as upstream.
const BACKLOG: i32 = 16;

/// Capacity of `sun_path`; a pathname must be shorter to keep its NUL.
const SUN_PATH_LEN: usize = 108;

/// Delay before retrying `accept` after a resource shortage.
const RESOURCE_RETRY: Duration = Duration::from_millis(100);

/// How often live workers are checked for exit while no client connects.
const REAP_INTERVAL_MS: u16 = 1000;

/// Errors of the service daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The socket path does not fit `sun_path`.
    #[error("socket path {} is {len} bytes long, the limit is {} bytes", path.display(), SUN_PATH_LEN - 1)]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// Creating the socket failed.
    #[error("cannot create the service socket")]
    Socket(#[source] Errno),
    /// Removing the stale socket file failed.
    #[error("cannot remove stale socket file {}", path.display())]
    Unlink {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `bind` failed.
    #[error("cannot bind the service socket to {}", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Setting the socket file's mode or group failed.
    #[error("cannot set mode {mode:#o} on {}", path.display())]
    Chmod {
        /// The mode wanted.
        mode: u32,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `listen` failed.
    #[error("cannot listen on {}", path.display())]
    Listen {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// `daemon(3)` failed.
    #[error("cannot daemonize")]
    Daemon(#[source] Errno),
    /// The pidfile could not be created (an existing file is an error).
    #[error("cannot write pidfile {}", path.display())]
    Pidfile {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing the readiness byte failed.
    #[error("cannot signal readiness on status fd {fd}")]
    StatusFd {
        /// The descriptor.
        fd: RawFd,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `poll` or `accept` failed in a way that retrying cannot fix.
    #[error("cannot accept connections on {}", path.display())]
    Accept {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// Who may connect to the service socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketAccess {
    /// Mode 0666: every local user (CRIU's choice).
    #[default]
    Everyone,
    /// Mode 0660, owned by this group: root and the group's members.
    Group(u32),
}

impl SocketAccess {
    /// The socket file's mode.
    pub fn mode(self) -> u32 {
        match self {
            SocketAccess::Everyone => 0o666,
            SocketAccess::Group(_) => 0o660,
        }
    }
}

/// How to run the service.
#[derive(Debug)]
pub struct ServiceConfig {
    /// Pathname of the listening socket (an existing file there is replaced).
    pub address: PathBuf,
    /// Who may connect.
    pub access: SocketAccess,
    /// Detach with `daemon(nochdir = 1, noclose = 0)` once listening.
    pub daemon: bool,
    /// File to receive the (daemonized) pid; must not exist.
    pub pidfile: Option<PathBuf>,
    /// Descriptor that receives one `\0` byte once the service accepts, and is
    /// then closed.
    pub status_fd: Option<OwnedFd>,
    /// Program run for each connection as `<worker_exe> swrk <fd>`.
    pub worker_exe: PathBuf,
    /// How many workers to start ahead of time (0: none). Only for a worker
    /// program that takes its connection with [`crate::swrk::connection_from_arg`],
    /// which understands [`SERVICE_SPARE_ENV`].
    pub spare_workers: usize,
}

/// Runs the service: [`Listener::bind`], daemonize if asked, write the
/// pidfile, [`signal_ready`], then [`Listener::accept_loop`] forever.
///
/// With `daemon` set the process forks, so call this while the process is
/// single-threaded.
#[doc(alias = "cr_service")]
pub fn run(config: ServiceConfig) -> Result<Infallible, ServiceError> {
    // The pidfile is claimed before anything else, so that a second daemon
    // started with the same pidfile fails visibly (exit status of the
    // starting process) and never replaces the first one's socket. CRIU
    // claims it only after daemonizing, where the failure is silent.
    let pidfile = config
        .pidfile
        .as_deref()
        .map(|path| create_pidfile(path).map(|file| (path, file)))
        .transpose()?;
    let listener = Listener::bind(&config.address, config.access)?;
    if config.daemon {
        nix::unistd::daemon(true, false).map_err(ServiceError::Daemon)?;
    }
    if let Some((path, mut file)) = pidfile {
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(|source| ServiceError::Pidfile {
                path: path.to_owned(),
                source,
            })?;
    }
    if let Some(fd) = config.status_fd {
        signal_ready(fd)?;
    }
    tracing::info!(address = %config.address.display(), "service ready");
    listener.accept_loop(&config.worker_exe, config.spare_workers)
}

/// A listening service socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    /// Creates the listening socket at `path`: rejects paths of 108 bytes or
    /// more, removes whatever file is there, binds, gives the file the mode
    /// (and group) of `access` and listens with a backlog of 16. The socket
    /// file is never removed by us.
    pub fn bind(path: &Path, access: SocketAccess) -> Result<Listener, ServiceError> {
        let len = path.as_os_str().as_bytes().len();
        if len >= SUN_PATH_LEN {
            return Err(ServiceError::PathTooLong {
                path: path.to_owned(),
                len,
            });
        }
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(ServiceError::Socket)?;
        match std::fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed stale socket file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ServiceError::Unlink {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let bind_err = |source| ServiceError::Bind {
            path: path.to_owned(),
            source,
        };
        // bind(2) creates the file with the socket inode's mode minus the
        // umask, so restricting the inode first leaves no window in which
        // others could connect before the group is set; the chown and chmod
        // below then give the exact group and mode.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(bind_err)?;
        let addr = UnixAddr::new(path).map_err(bind_err)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(bind_err)?;
        let mode = access.mode();
        let chmod_err = |source| ServiceError::Chmod {
            path: path.to_owned(),
            mode,
            source,
        };
        if let SocketAccess::Group(gid) = access {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(chmod_err)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(chmod_err)?;
        let backlog = Backlog::new(BACKLOG).expect("16 is a valid backlog");
        socket::listen(&fd, backlog).map_err(|source| ServiceError::Listen {
            path: path.to_owned(),
            source,
        })?;
        Ok(Listener {
            fd,
            path: path.to_owned(),
        })
    }

    /// Path the socket is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, starting one worker per connection.
    /// Returns only on an `accept`/`poll` error that retrying cannot fix.
    /// `spares` workers are kept started ahead of time (see
    /// [`ServiceConfig::spare_workers`]).
    pub fn accept_loop(
        &self,
        worker_exe: &Path,
        spares: usize,
    ) -> Result<Infallible, ServiceError> {
        let mut workers: Vec<Child> = Vec::new();
        let spares = (spares > 0).then(|| Spare::pool(worker_exe, spares));
        loop {
            reap(&mut workers);
            if !self.wait_readable(!workers.is_empty())? {
                continue;
            }
            match fds::accept_cloexec(self.fd.as_fd()) {
                Ok(conn) => {
                    // The spare worker is already running and waits for a
                    // connection: handing it over costs one sendmsg instead of
                    // a fork and an exec. Without one, start a worker for it.
                    let conn = match spares.as_ref().and_then(|rx| rx.try_recv().ok()) {
                        Some(worker) => match worker.hand_over(conn) {
                            Ok(child) => {
                                workers.push(child);
                                continue;
                            }
                            Err(conn) => conn,
                        },
                        None => conn,
                    };
                    if let Some(child) = spawn_worker(worker_exe, conn) {
                        workers.push(child);
                    }
                }
                Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EAGAIN) => {}
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    tracing::warn!(error = %e, "accept failed for lack of resources, retrying");
                    std::thread::sleep(RESOURCE_RETRY);
                }
                Err(source) => {
                    return Err(ServiceError::Accept {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits until a connection is pending; with `timed`, returns false after
    /// [`REAP_INTERVAL_MS`] without one.
    fn wait_readable(&self, timed: bool) -> Result<bool, ServiceError> {
        let timeout = if timed {
            PollTimeout::from(REAP_INTERVAL_MS)
        } else {
            PollTimeout::NONE
        };
        let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, timeout) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(source) => Err(ServiceError::Accept {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Starts `<worker_exe> swrk <fd>` for one accepted connection. The socket is
/// passed under its own number and closed here once the worker has it; a
/// failure is logged and drops the connection (the client sees EOF).
fn spawn_worker(worker_exe: &Path, conn: OwnedFd) -> Option<Child> {
    let mut cmd = Command::new(worker_exe);
    cmd.env(SERVICE_WORKER_ENV, "1");
    let fd = fds::pass_across_exec(&mut cmd, conn);
    cmd.arg("swrk").arg(fd.to_string());
    match cmd.spawn() {
        Ok(child) => {
            tracing::debug!(pid = child.id(), fd, "worker started");
            Some(child)
        }
        Err(err) => {
            tracing::error!(worker = %worker_exe.display(), error = %err, "cannot start a worker");
            None
        }
    }
}

/// A worker started ahead of time: `<worker_exe> swrk <ctl>` with
/// [`SERVICE_SPARE_ENV`] set, blocked until the daemon sends it the accepted
/// connection over the control socket `ctl` (one `SCM_RIGHTS` packet).
struct Spare {
    child: Child,
    ctl: SeqPacket,
}

impl Spare {
    /// Keeps up to `count` started spare workers ready, from a thread of
    /// its own so that starting them never delays an accept. Safe with other
    /// threads spawning: the control socket is inherited only by the child
    /// it is meant for ([`fds::pass_across_exec`]).
    fn pool(worker_exe: &Path, count: usize) -> std::sync::mpsc::Receiver<Spare> {
        let (tx, rx) = std::sync::mpsc::sync_channel(count.saturating_sub(1));
        let exe = worker_exe.to_owned();
        let spawned = std::thread::Builder::new()
            .name("spare-workers".into())
            .spawn(move || loop {
                let Some(spare) = Spare::start(&exe) else {
                    std::thread::sleep(RESOURCE_RETRY);
                    continue;
                };
                if tx.send(spare).is_err() {
                    return;
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "no spare workers: every connection starts its own");
        }
        rx
    }

    fn start(worker_exe: &Path) -> Option<Spare> {
        let (ours, theirs) = match SeqPacket::pair() {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "cannot create a spare worker's control socket");
                return None;
            }
        };
        let mut cmd = Command::new(worker_exe);
        cmd.env(SERVICE_WORKER_ENV, "1").env(SERVICE_SPARE_ENV, "1");
        let fd = fds::pass_across_exec(&mut cmd, theirs.into_fd());
        cmd.arg("swrk").arg(fd.to_string());
        match cmd.spawn() {
            Ok(child) => Some(Spare { child, ctl: ours }),
            Err(err) => {
                tracing::warn!(worker = %worker_exe.display(), error = %err, "cannot start a spare worker");
                None
            }
        }
    }

    /// Gives `conn` to the spare; on failure (the spare died) the connection
    /// comes back for another worker.
    fn hand_over(mut self, conn: OwnedFd) -> Result<Child, OwnedFd> {
        match self.ctl.send_with_fd(&[1], conn.as_fd()) {
            Ok(()) => {
                tracing::debug!(
                    pid = self.child.id(),
                    "connection handed to the spare worker"
                );
                Ok(self.child)
            }
            Err(err) => {
                tracing::warn!(pid = self.child.id(), error = %err, "spare worker gone");
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(conn)
            }
        }
    }
}

/// Collects exited workers and logs how they ended.
fn reap(workers: &mut Vec<Child>) {
    workers.retain_mut(|child| match child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            tracing::info!(pid = child.id(), %status, "worker exited");
            false
        }
        Err(err) => {
            tracing::warn!(pid = child.id(), error = %err, "cannot check a worker");
            false
        }
    });
}

/// Creates `path` exclusively (mode 0600) and writes `pid` in decimal
/// without a newline. An existing file is an error.
pub fn write_pidfile(path: &Path, pid: u32) -> Result<(), ServiceError> {
    create_pidfile(path)?
        .write_all(pid.to_string().as_bytes())
        .map_err(|source| ServiceError::Pidfile {
            path: path.to_owned(),
            source,
        })
}

/// Creates `path` exclusively (mode 0600), empty. An existing file is an error.
fn create_pidfile(path: &Path) -> Result<std::fs::File, ServiceError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| ServiceError::Pidfile {
            path: path.to_owned(),
            source,
        })
}

/// Writes one `\0` byte to the status descriptor and closes it.
pub fn signal_ready(fd: OwnedFd) -> Result<(), ServiceError> {
    let raw = fd.as_raw_fd();
    let mut file = std::fs::File::from(fd);
    file.write_all(&[0])
        .map_err(|source| ServiceError::StatusFd { fd: raw, source })
}

/// Whether this process is a service worker (the daemon set
/// [`SERVICE_WORKER_ENV`] to `1`). Does not change the environment.
pub fn is_service_worker() -> bool {
    std::env::var_os(SERVICE_WORKER_ENV).is_some_and(|v| v == "1")
}

/// [`is_service_worker`], then removes the variable so that restored tasks
/// and `exec_cmd` do not inherit it. Call it at the start of `main`, while the
/// process is single-threaded.
pub fn take_service_worker_flag() -> bool {
    let worker = is_service_worker();
    std::env::remove_var(SERVICE_WORKER_ENV);
    worker
}

#[cfg(test)]
mod tests;
