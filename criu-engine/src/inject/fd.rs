//! Descriptors across the task boundary: pipes made inside the task and
//! descriptors taken from it.
//!
//! CRIU moves descriptors over a unix socket with the parasite
//! (`parasite_drain_fds`, `send_fds`); we take them with `pidfd_getfd`.
//!
//! # References
//!
//! - [pipe2(2)](https://man7.org/linux/man-pages/man2/pipe2.2.html)
//! - [pidfd_getfd(2)](https://man7.org/linux/man-pages/man2/pidfd_getfd.2.html)

use std::os::fd::{AsFd, OwnedFd};

use super::{InjectError, Injection};
use crate::arch::nr;
use crate::pstree::RealPid;
use crate::sys::probe::{pidfd_getfd, pidfd_open};

/// Creates a pipe inside the task (injected `pipe2(flags)`); returns its
/// `(read, write)` descriptor numbers in the task's table. Uses the last 8
/// bytes of the scratch area for the result.
pub fn remote_pipe(inj: &Injection<'_>, flags: i32) -> Result<(i32, i32), InjectError> {
    let offset = Injection::SCRATCH_LEN - 8;
    let fds = inj.scratch().offset(offset as u64);
    inj.syscall_ok(nr::PIPE2, &[fds.0, u64::from(flags as u32)])?;
    let mut raw = [0u8; 8];
    inj.read_scratch(offset, &mut raw)?;
    let [r0, r1, r2, r3, w0, w1, w2, w3] = raw;
    Ok((
        i32::from_ne_bytes([r0, r1, r2, r3]),
        i32::from_ne_bytes([w0, w1, w2, w3]),
    ))
}

/// Duplicates descriptor `remote_fd` of process `pid` into the engine
/// (`pidfd_open` + `pidfd_getfd`, which needs ptrace access to the task).
/// `pid` must be a thread-group leader. The copy shares the open file
/// description, as `dup` would.
pub fn steal_fd(pid: RealPid, remote_fd: i32) -> Result<OwnedFd, InjectError> {
    let pidfd =
        pidfd_open(pid.as_nix()).map_err(|source| InjectError::PidfdOpen { pid, source })?;
    pidfd_getfd(pidfd.as_fd(), remote_fd).map_err(|source| InjectError::PidfdGetfd {
        pid,
        fd: remote_fd,
        source,
    })
}

/// Closes descriptor `fd` inside the task (injected `close`).
pub fn close_remote(inj: &Injection<'_>, fd: i32) -> Result<(), InjectError> {
    inj.syscall_ok(nr::CLOSE, &[u64::from(fd as u32)]).map(drop)
}
