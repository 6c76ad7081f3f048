//! Page pipes: a pipe created inside the frozen task, filled by the task
//! itself with an injected `vmsplice`, drained by the engine (CRIU's
//! `criu/page-pipe.c` and the parasite's `dump_pages`).
//!
//! The task's `pipe2` gives two descriptors in *its* table. We take the read
//! end into the engine with `pidfd_getfd`, close the task's copy, and keep
//! the write end there for `vmsplice`. The pipe is grown with
//! `F_SETPIPE_SZ` (halving the request on `EPERM`, which the per-user pipe
//! limits return), so that one injected syscall moves as many pages as the
//! pipe holds. The [`PagePipe`] guard closes the task's write end when
//! dropped, so nothing stays behind in the task on any path.
//!
//! # References
//!
//! - [vmsplice(2)](https://man7.org/linux/man-pages/man2/vmsplice.2.html),
//!   [pipe(7)](https://man7.org/linux/man-pages/man7/pipe.7.html) (`F_SETPIPE_SZ`)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::arch::nr;
use crate::inject::{close_remote, remote_pipe, steal_fd, InjectError, Injection};
use crate::proc::pagemap::PAGE_SIZE;
use crate::pstree::RealPid;

/// `IOV_MAX`: iovecs the kernel takes per `vmsplice`.
pub const IOV_MAX: usize = 1024;
/// Bytes of one `struct iovec`.
const IOVEC_LEN: usize = 16;
/// Smallest pipe worth using (the kernel's default).
const MIN_PIPE: usize = 16 * PAGE_SIZE as usize;

/// A page pipe could not be set up or filled.
#[derive(Debug, thiserror::Error)]
pub enum PagePipeError {
    /// An injected syscall failed to run.
    #[error("page pipe of task {pid}: injection failed")]
    Inject {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// The injected `vmsplice` returned an error.
    #[error("task {pid} cannot vmsplice {len} bytes at {addr:#x} into its page pipe")]
    Vmsplice {
        /// The task.
        pid: RealPid,
        /// First address of the batch.
        addr: u64,
        /// Bytes asked for.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// `F_SETPIPE_SZ` failed even at the smallest size.
    #[error("cannot size the page pipe of task {pid}")]
    Resize {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// A pipe whose write end lives in the task and whose read end is ours.
pub struct PagePipe<'i, 't> {
    inj: &'i Injection<'t>,
    pid: RealPid,
    read: OwnedFd,
    remote_write: Option<i32>,
    capacity: usize,
}

impl<'i, 't> PagePipe<'i, 't> {
    /// Creates the pipe in the task and sizes it to at most `want` bytes.
    pub fn open(inj: &'i Injection<'t>, pid: RealPid, want: usize) -> Result<Self, PagePipeError> {
        let err = |source| PagePipeError::Inject { pid, source };
        let (rfd, wfd) = remote_pipe(inj, libc::O_CLOEXEC).map_err(err)?;
        let mut pipe = PagePipe {
            inj,
            pid,
            read: match steal_fd(pid, rfd) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = close_remote(inj, rfd);
                    let _ = close_remote(inj, wfd);
                    return Err(err(e));
                }
            },
            remote_write: Some(wfd),
            capacity: 0,
        };
        close_remote(inj, rfd).map_err(err)?;
        pipe.capacity = grow(pipe.read.as_fd(), want.max(MIN_PIPE))
            .map_err(|source| PagePipeError::Resize { pid, source })?;
        Ok(pipe)
    }

    /// The task that fills the pipe.
    pub fn pid(&self) -> RealPid {
        self.pid
    }

    /// Bytes the pipe holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most iovecs one [`PagePipe::fill`] takes.
    pub fn max_iovs(&self) -> usize {
        IOV_MAX.min(Injection::SCRATCH_LEN / IOVEC_LEN)
    }

    /// The engine's read end.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Has the task `vmsplice` the page runs `iovs` (`(address, bytes)`,
    /// page aligned, at most [`PagePipe::max_iovs`] of them, at most
    /// [`PagePipe::capacity`] bytes in all) into the pipe; returns the bytes
    /// now in the pipe. The task must be frozen, so the pages cannot change
    /// before they are drained. One injected syscall per call.
    #[doc(alias = "dump_pages")]
    pub fn fill(&self, iovs: &[(u64, u64)]) -> Result<usize, PagePipeError> {
        let total: u64 = iovs.iter().map(|(_, l)| l).sum();
        debug_assert!(iovs.len() <= self.max_iovs() && total as usize <= self.capacity);
        let mut bytes = Vec::with_capacity(iovs.len() * IOVEC_LEN);
        for (addr, len) in iovs {
            bytes.extend_from_slice(&addr.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
        }
        let err = |source| PagePipeError::Inject {
            pid: self.pid,
            source,
        };
        let at = self.inj.write_scratch(0, &bytes).map_err(err)?;
        let wfd = self.remote_write.expect("write end open until drop");
        let flags = (libc::SPLICE_F_GIFT | libc::SPLICE_F_NONBLOCK) as u64;
        let ret = self
            .inj
            .syscall(nr::VMSPLICE, &[wfd as u64, at.0, iovs.len() as u64, flags])
            .map_err(err)?;
        if ret < 0 {
            return Err(PagePipeError::Vmsplice {
                pid: self.pid,
                addr: iovs.first().map_or(0, |i| i.0),
                len: total as usize,
                source: Errno::from_raw(-ret as i32),
            });
        }
        Ok(ret as usize)
    }

    /// Closes the task's write end now, reporting a failure.
    pub fn close(mut self) -> Result<(), PagePipeError> {
        let pid = self.pid;
        match self.remote_write.take() {
            Some(fd) => {
                close_remote(self.inj, fd).map_err(|source| PagePipeError::Inject { pid, source })
            }
            None => Ok(()),
        }
    }
}

impl Drop for PagePipe<'_, '_> {
    fn drop(&mut self) {
        if let Some(fd) = self.remote_write.take() {
            if let Err(err) = close_remote(self.inj, fd) {
                tracing::error!(pid = %self.pid, fd, ?err, "cannot close the page pipe left in the task");
            }
        }
    }
}

/// Sets the pipe size to `want` bytes, halving on `EPERM`/`EBUSY` down to
/// the default size; returns the size obtained.
fn grow(fd: BorrowedFd<'_>, want: usize) -> Result<usize, Errno> {
    let mut size = want.next_power_of_two();
    loop {
        match fcntl(fd, FcntlArg::F_SETPIPE_SZ(size as libc::c_int)) {
            Ok(got) => return Ok(got as usize),
            Err(Errno::EPERM | Errno::EBUSY) if size > MIN_PIPE => size /= 2,
            Err(e) => return Err(e),
        }
    }
}

/// The largest pipe an unprivileged grow may ask for
/// (`/proc/sys/fs/pipe-max-size`, 1 MiB when unreadable).
pub fn max_pipe_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_halves_to_what_is_allowed() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let max = max_pipe_size();
        let got = grow(r.as_fd(), max * 64).unwrap();
        assert!(got >= MIN_PIPE && got <= max * 64);
        assert_eq!(grow(r.as_fd(), MIN_PIPE).unwrap(), MIN_PIPE);
    }
}
