//! Start-up of a `swrk <fd>` worker: taking over the inherited connection
//! socket and making sure descriptors 0-2 are occupied (rpc-protocol.md 2.1,
//! 2.2).
//!
//! CRIU counterpart: the `swrk` branch of `criu/crtools.c` and
//! `cr_service_work()` in `criu/cr-service.c`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::fds;
use crate::seqpacket::{SeqPacket, SeqPacketError};

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
    /// `/dev/null` could not be opened for a closed standard descriptor.
    #[error("cannot open /dev/null for the standard descriptors")]
    DevNull(#[source] io::Error),
}

/// Parses the decimal `<fd>` of `swrk <fd>`, takes ownership of that
/// inherited descriptor, checks that it is an `AF_UNIX`/`SOCK_SEQPACKET`
/// socket and marks it close-on-exec (so that `exec_cmd` never inherits it).
///
/// Call it once, at start-up, after [`ensure_std_fds`].
pub fn connection_from_arg(arg: &str) -> Result<SeqPacket, SwrkError> {
    let bad = || SwrkError::BadFdArg {
        arg: arg.to_owned(),
    };
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let raw: RawFd = arg.parse().map_err(|_| bad())?;
    let fd = fds::claim_inherited(raw).map_err(|source| SwrkError::NotOpen { fd: raw, source })?;
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
