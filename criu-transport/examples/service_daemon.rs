//! Runs the service daemon in the background:
//! `service_daemon <address> <pidfile> <status-fd> <worker_exe>`.
//!
//! It shows how a service binary drives [`criu_transport::service::run`];
//! the crate's tests use it to check daemonization for real.

use std::path::PathBuf;
use std::process::ExitCode;

use criu_transport::service::{run, ServiceConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, pidfile, status_fd, worker_exe] = args.as_slice() else {
        eprintln!("usage: service_daemon <address> <pidfile> <status-fd> <worker_exe>");
        return ExitCode::from(1);
    };
    if let Err(err) = criu_transport::ignore_sigpipe() {
        eprintln!("service_daemon: cannot ignore SIGPIPE: {err}");
        return ExitCode::from(1);
    }
    let status_fd = match criu_transport::inherited_fd_from_arg(status_fd) {
        Ok(fd) => fd,
        Err(err) => {
            eprintln!("service_daemon: {err}");
            return ExitCode::from(1);
        }
    };
    let config = ServiceConfig {
        address: PathBuf::from(address),
        access: criu_transport::SocketAccess::Everyone,
        daemon: true,
        pidfile: Some(PathBuf::from(pidfile)),
        status_fd: Some(status_fd),
        worker_exe: PathBuf::from(worker_exe),
        spare_workers: 0,
    };
    match run(config) {
        Ok(never) => match never {},
        Err(err) => {
            eprintln!("service_daemon: {err}");
            ExitCode::from(1)
        }
    }
}
