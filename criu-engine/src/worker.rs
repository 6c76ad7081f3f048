//! Entry points shared by the three front-ends: a swrk worker serving one
//! connection, and the service daemon handing each connection to a worker
//! (CRIU's `cr_service()` / `cr_service_work()`).

use std::path::PathBuf;

use criu_transport::requests::{self, Mode};
use criu_transport::{service, swrk};

use crate::config::{self, Config};
use crate::serve::Engine;

/// Why a front-end could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The swrk socket argument is not a usable socket.
    #[error("bad swrk socket argument {arg:?}")]
    SwrkSocket {
        /// The argument given.
        arg: String,
        /// Why it was refused.
        #[source]
        source: criu_transport::swrk::SwrkError,
    },
    /// The default configuration files could not be read.
    #[error("cannot read the default configuration")]
    Config(#[source] config::ConfigError),
    /// The service could not listen or accept.
    #[error("service failed")]
    Service(#[source] criu_transport::service::ServiceError),
}

/// Serves the connection given as `criu swrk <fd>` and returns the exit
/// status CRIU's worker would have (rpc-protocol.md 2.4).
///
/// A worker started by our service (see [`service::is_service_worker`])
/// applies service semantics: swrk-only options refused, no default
/// configuration files. `defaults` holds what the command line and the
/// configuration files gave a plain swrk worker.
pub fn run_swrk(fd_arg: &str, defaults: Config) -> Result<u8, WorkerError> {
    criu_transport::ignore_sigpipe();
    swrk::ensure_stdio();
    let (mode, defaults) = if service::is_service_worker() {
        (Mode::Service, Config::default())
    } else {
        (Mode::Swrk, defaults)
    };
    let conn = swrk::connection_from_arg(fd_arg).map_err(|source| WorkerError::SwrkSocket {
        arg: fd_arg.to_owned(),
        source,
    })?;
    let mut engine = Engine::new(mode, defaults);
    Ok(requests::serve(&conn, mode, &mut engine))
}

/// Runs the service daemon until it is killed: listens on `address`, hands
/// every connection to a fresh worker (this executable re-run as
/// `swrk <fd>`), and keeps serving whatever a client does.
pub fn run_service(
    address: PathBuf,
    daemon: bool,
    pidfile: Option<PathBuf>,
    status_fd: Option<std::os::fd::OwnedFd>,
) -> Result<(), WorkerError> {
    criu_transport::ignore_sigpipe();
    let cfg = service::ServiceConfig {
        address,
        daemon,
        pidfile,
        status_fd,
        worker_exe: PathBuf::from("/proc/self/exe"),
    };
    service::run(cfg).map_err(WorkerError::Service)
}
