//! Start-up of a `swrk <fd>` worker: taking over the inherited connection
//! socket and making sure descriptors 0-2 are occupied (rpc-protocol.md 2.1,
//! 2.2).
//!
//! CRIU counterpart: the `swrk` branch of `criu/crtools.c` and
//! `cr_service_work()` in `criu/cr-service.c`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::fds;
use crate::seqpacket::{SeqPacket, SeqPacketError};
use crate::service::SERVICE_SPARE_ENV;

/// Errors of worker start-up.
#[derive(Debug, thiserror::Error)]
pub enum SwrkError {
    /// The `<fd>` argument is not a non-negative decimal number.
    #[error("invalid connection fd argument {arg:?}")]
    BadFdArg {
        /// The argument as given.
        arg: String,
    },
    /// The descriptor is not open.
    #[error("connection fd {fd} is not open")]
    NotOpen {
        /// The descriptor.
        fd: RawFd,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The descriptor is not a usable seqpacket socket.
    #[error("connection fd is unusable")]
    Socket(#[from] SeqPacketError),
    /// Setting close-on-exec on the connection failed.
    #[error("cannot set close-on-exec on connection fd {fd}")]
    Cloexec {
        /// The descriptor.
        fd: RawFd,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A spare service worker got no connection from the daemon.
    #[error("the service daemon closed the control socket of a spare worker")]
    NoHandoff,
    /// `/dev/null` could not be opened for a closed standard descriptor.
    #[error("cannot open /dev/null for the standard descriptors")]
    DevNull(#[source] io::Error),
}

/// Parses a decimal descriptor number given on the command line (`swrk
/// <fd>`, `--status-fd <fd>`) and takes ownership of that inherited
/// descriptor after checking that it is open.
///
/// Call it once per number, at start-up, for descriptors the parent passed:
/// nothing else in the process may own that number.
pub fn inherited_fd_from_arg(arg: &str) -> Result<OwnedFd, SwrkError> {
    let bad = || SwrkError::BadFdArg {
        arg: arg.to_owned(),
    };
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let raw: RawFd = arg.parse().map_err(|_| bad())?;
    fds::claim_inherited(raw).map_err(|source| SwrkError::NotOpen { fd: raw, source })
}

/// Takes over the connection socket named by the `<fd>` of `swrk <fd>`
/// ([`inherited_fd_from_arg`]), checks that it is an `AF_UNIX`/
/// `SOCK_SEQPACKET` socket and marks it close-on-exec (so that `exec_cmd`
/// never inherits it).
///
/// Call it once, at start-up, after [`ensure_std_fds`].
///
/// A spare service worker (started with [`SERVICE_SPARE_ENV`] set) is given
/// a control socket instead: it blocks there until the daemon sends the
/// accepted connection, and serves that one.
pub fn connection_from_arg(arg: &str) -> Result<SeqPacket, SwrkError> {
    let mut fd = inherited_fd_from_arg(arg)?;
    if std::env::var_os(SERVICE_SPARE_ENV).is_some_and(|v| v == "1") {
        std::env::remove_var(SERVICE_SPARE_ENV);
        let ctl = SeqPacket::from_fd(fd)?;
        fd = match ctl.recv_with_fd()? {
            Some((_, Some(conn))) => conn,
            _ => return Err(SwrkError::NoHandoff),
        };
    }
    let raw = fd.as_raw_fd();
    let conn = SeqPacket::from_fd(fd)?;
    fcntl(conn.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|source| SwrkError::Cloexec { fd: raw, source })?;
    Ok(conn)
}

/// Opens `/dev/null` on each of the descriptors 0, 1 and 2 that is closed
/// (pycriu closes them before exec), so that no socket or log file the worker
/// opens later lands on a standard descriptor.
pub fn ensure_std_fds() -> Result<(), SwrkError> {
    loop {
        // open(2) returns the lowest free number, so this fills the gaps in
        // 0-2 in order and stops at the first descriptor above them.
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(SwrkError::DevNull)?;
        if file.as_raw_fd() > 2 {
            return Ok(());
        }
        // Standard descriptors are inherited by children, like real stdio.
        fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| SwrkError::DevNull(e.into()))?;
        let fd = file.into_raw_fd();
        tracing::debug!(fd, "standard descriptor was closed, now /dev/null");
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, IntoRawFd};
    use std::os::unix::fs::PermissionsExt;

    use criu_proto::rpc::{CriuReq, CriuReqType};
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

    use super::{connection_from_arg, SwrkError};
    use crate::client::Client;
    use crate::seqpacket::SeqPacket;
    use crate::test_util::{example_bin, TempDir};

    #[test]
    fn connection_from_arg_takes_an_inherited_socket() {
        let (a, b) = SeqPacket::pair().expect("pair");
        // Give up ownership, as a parent process would across exec.
        let raw = b.into_fd().into_raw_fd();
        let conn = connection_from_arg(&raw.to_string()).expect("claim");
        let flags = fcntl(conn.as_fd(), FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        a.send(b"ping").expect("send");
        assert_eq!(conn.recv().expect("recv").as_deref(), Some(&b"ping"[..]));
    }

    #[test]
    fn connection_from_arg_rejects_bad_arguments() {
        for arg in ["", "-1", "+3", "3x", " 3", "99999999999"] {
            assert!(
                matches!(connection_from_arg(arg), Err(SwrkError::BadFdArg { .. })),
                "{arg:?} accepted"
            );
        }
    }

    #[test]
    fn connection_from_arg_rejects_closed_and_non_socket_fds() {
        // Far above anything a test process opens.
        assert!(matches!(
            connection_from_arg("999999"),
            Err(SwrkError::NotOpen { fd: 999999, .. })
        ));
        let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let raw = r.into_raw_fd();
        assert!(matches!(
            connection_from_arg(&raw.to_string()),
            Err(SwrkError::Socket(_))
        ));
    }

    fn version() -> CriuReq {
        CriuReq {
            r#type: CriuReqType::Version as i32,
            ..Default::default()
        }
    }

    #[test]
    fn worker_fills_closed_standard_descriptors() {
        let dir = TempDir::new("swrk-std");
        let wrapper = dir.path().join("closed-stdio.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/bash\nexec {} \"$@\" <&- >&- 2>&-\n",
                example_bin("version_worker").display()
            ),
        )
        .expect("write wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let client = Client::spawn_swrk(&wrapper, &[]).expect("spawn");
        let r = client.call(&version()).expect("version");
        let report = r.version.and_then(|v| v.gitid).expect("fd report");
        assert_eq!(report, "/dev/null,/dev/null,/dev/null env=false");
        assert!(client.wait().expect("wait").success());
    }
}
