//! Entry points shared by the three front-ends: a swrk worker serving one
//! connection, and the service daemon handing each connection to a worker
//! (CRIU's `cr_service()` / `cr_service_work()`). Every front-end accepts
//! `swrk <fd>` and `service [options]`, so any of them can be given to a
//! client as "the criu binary".

use std::path::{Path, PathBuf};

use criu_transport::requests::{self, Mode};
use criu_transport::{service, swrk};

use crate::config::Config;
use crate::serve::Engine;

/// Why a front-end could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `swrk` needs exactly one argument, the socket's descriptor number.
    #[error("usage: swrk <fd>")]
    SwrkUsage,
    /// The swrk socket argument is not a usable socket.
    #[error("bad swrk socket argument {arg:?}")]
    SwrkSocket {
        /// The argument given.
        arg: String,
        /// Why it was refused.
        #[source]
        source: swrk::SwrkError,
    },
    /// `--status-fd` names no usable descriptor.
    #[error("bad --status-fd {fd}")]
    StatusFd {
        /// The number given.
        fd: i32,
        /// Why it was refused.
        #[source]
        source: swrk::SwrkError,
    },
    /// `--work-dir` could not be entered.
    #[error("cannot change to work directory {}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--group` names no group.
    #[error("unknown group {name:?} for the service socket")]
    Group {
        /// The name given.
        name: String,
    },
    /// The service could not listen or accept.
    #[error("service failed")]
    Service(#[source] service::ServiceError),
    /// SIGPIPE could not be ignored.
    #[error("cannot ignore SIGPIPE")]
    Sigpipe(#[source] nix::Error),
    /// The daemon's log could not be opened.
    #[error("cannot set up the service log")]
    Log(#[source] crate::log::LogError),
}

/// Serves the connection given as `swrk <fd>` and returns the exit status
/// CRIU's worker would have (rpc-protocol.md 2.4).
///
/// A worker started by our service (see [`service::take_service_worker_flag`])
/// applies service semantics: swrk-only options refused and built-in
/// defaults. Otherwise `defaults` (the configuration files and command line
/// the worker was started with) are where each request starts from.
pub fn run_swrk(fd_arg: &str, defaults: Config) -> Result<u8, WorkerError> {
    criu_transport::ignore_sigpipe().map_err(WorkerError::Sigpipe)?;
    let socket_err = |source| WorkerError::SwrkSocket {
        arg: fd_arg.to_owned(),
        source,
    };
    swrk::ensure_std_fds().map_err(socket_err)?;
    let (mode, defaults) = if service::take_service_worker_flag() {
        (Mode::Service, Config::default())
    } else {
        (Mode::Swrk, defaults)
    };
    let conn = match swrk::connection_from_arg(fd_arg) {
        Ok(conn) => conn,
        // A spare worker whose daemon went away: nothing to serve.
        Err(swrk::SwrkError::NoHandoff) => return Ok(255),
        Err(e) => return Err(socket_err(e)),
    };
    let mut engine = Engine::new(mode, defaults);
    Ok(requests::serve(&conn, mode, &mut engine))
}

/// Runs `criu service`: enters the work directory, listens on `--address`
/// (relative to it; `default_address` when absent) with mode 0666, or 0660
/// and the group of `--group` (our extension), daemonizes with
/// `--daemon`, writes `--pidfile`, signals `--status-fd`, and then serves
/// every connection with a fresh worker (this executable re-run as
/// `swrk <fd>`) until killed.
pub fn run_service(cfg: &Config, default_address: &Path) -> Result<(), WorkerError> {
    criu_transport::ignore_sigpipe().map_err(WorkerError::Sigpipe)?;
    if let Some(dir) = cfg.work_dir.as_ref().or(cfg.images_dir.as_ref()) {
        std::env::set_current_dir(dir).map_err(|source| WorkerError::WorkDir {
            path: dir.clone(),
            source,
        })?;
    }
    // The daemon's own log: stderr unless `-o` names a file (relative to the
    // work directory entered above).
    let level = cfg.log_level.max(0).unsigned_abs();
    crate::log::init_process_logging(level, cfg.log_file.as_deref()).map_err(WorkerError::Log)?;
    let status_fd = cfg
        .status_fd
        .map(|fd| {
            swrk::inherited_fd_from_arg(&fd.to_string())
                .map_err(|source| WorkerError::StatusFd { fd, source })
        })
        .transpose()?;
    let address = cfg
        .address
        .as_ref()
        .map_or_else(|| default_address.to_owned(), PathBuf::from);
    let access = match &cfg.service_group {
        None => service::SocketAccess::Everyone,
        Some(name) => service::SocketAccess::Group(group_id(name)?),
    };
    let config = service::ServiceConfig {
        address,
        access,
        daemon: cfg.restore_detached,
        pidfile: cfg.pidfile.clone(),
        status_fd,
        worker_exe: PathBuf::from("/proc/self/exe"),
        // Our workers take connections from a control socket, so two wait
        // ready: a request is then served without a fork and an exec.
        spare_workers: 2,
    };
    match service::run(config) {
        Ok(never) => match never {},
        Err(e) => Err(WorkerError::Service(e)),
    }
}

/// A group given by number or by name (`/etc/group`).
fn group_id(name: &str) -> Result<u32, WorkerError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(WorkerError::Group {
            name: name.to_owned(),
        }),
    }
}

/// Runs the `swrk` and `service` actions of any front-end; `None` when the
/// configuration names another action. The result is the exit status.
pub fn run_frontend_action(cfg: Config, default_address: &Path) -> Option<Result<u8, WorkerError>> {
    match cfg.action.as_deref()? {
        "swrk" => Some(match cfg.positional.as_slice() {
            [_, fd] => {
                let fd = fd.clone();
                run_swrk(&fd, cfg)
            }
            _ => Err(WorkerError::SwrkUsage),
        }),
        "service" => Some(run_service(&cfg, default_address).map(|()| 0)),
        _ => None,
    }
}

/// The whole `main` of a front-end that only serves (`criu-swrk`,
/// `criu-serviced`): parses CRIU's options (and configuration files), runs
/// `swrk` or `service`, and returns the process exit status. Errors are
/// printed to stderr with their causes.
pub fn serve_main(prog: &str, args: Vec<String>, default_address: &Path) -> u8 {
    let cfg = match crate::config::load_cli(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{prog}: {}", error_chain(&e));
            return 1;
        }
    };
    if cfg.version {
        print!("{}", crate::version::version_string());
        return 0;
    }
    match run_frontend_action(cfg, default_address) {
        Some(Ok(status)) => status,
        Some(Err(e)) => {
            eprintln!("{prog}: {}", error_chain(&e));
            1
        }
        None => {
            eprintln!("usage: {prog} swrk <fd> | {prog} service [--address PATH] [--daemon] [--pidfile FILE]");
            1
        }
    }
}

/// `error: cause: cause...` for messages printed by front-ends.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
