//! Page pipes: pipes created inside the frozen task, filled by the task
//! itself with injected `vmsplice`s, drained by the engine (CRIU's
//! `criu/page-pipe.c` and the parasite's `dump_pages`).
//!
//! The task's `pipe2` gives two descriptors in *its* table. We take the read
//! end into the engine with `pidfd_getfd`, close the task's copy, and keep
//! the write end there for `vmsplice`. Each pipe is grown with
//! `F_SETPIPE_SZ` (halving the request on `EPERM`, which the per-user pipe
//! limits return). Up to [`MAX_PIPES`] pipes are made as the batches need
//! them, in two sets: one trap has the task fill a whole set (a batch of
//! `vmsplice`s), so the ptrace round trips stay few whatever the memory
//! size, and while it does, the engine drains the other set. The [`PagePipe`] guard closes the task's write ends when dropped,
//! so nothing stays behind in the task on any path.
//!
//! # References
//!
//! - [vmsplice(2)](https://man7.org/linux/man-pages/man2/vmsplice.2.html),
//!   [pipe(7)](https://man7.org/linux/man-pages/man7/pipe.7.html) (`F_SETPIPE_SZ`)

use std::cell::{Cell, Ref, RefCell};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::arch::nr;
use crate::inject::batch::QueryBatch;
use crate::inject::{steal_fd, InjectError, Injection, RunningBatch};
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
    /// The task could not make a single pipe.
    #[error("task {pid} cannot make a page pipe")]
    NoPipe {
        /// The task.
        pid: RealPid,
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

/// Most pipes filled by one trap (so one trap moves up to this many pipe
/// capacities of pages).
pub const SET_PIPES: usize = 16;
/// Most pipes of a task: two sets, one filled by the task while the engine
/// drains the other.
pub const MAX_PIPES: usize = 2 * SET_PIPES;

/// One pipe: the write end in the task, the read end ours.
struct Pipe {
    read: OwnedFd,
    remote_write: Option<i32>,
    capacity: usize,
}

/// Page pipes whose write ends live in the task and whose read ends are
/// ours: up to [`MAX_PIPES`] of them, made on demand, a set of them filled
/// by the task with one trap ([`PagePipe::fill`]).
pub struct PagePipe<'i, 't> {
    inj: &'i Injection<'t>,
    pid: RealPid,
    want: usize,
    pipes: RefCell<Vec<Pipe>>,
    /// Set once the task could not make another pipe (descriptor limits).
    full: Cell<bool>,
}

impl<'i, 't> PagePipe<'i, 't> {
    /// Creates the first pipe in the task and sizes it to at most `want`
    /// bytes (later pipes get the size the first one got).
    pub fn open(inj: &'i Injection<'t>, pid: RealPid, want: usize) -> Result<Self, PagePipeError> {
        let pipe = PagePipe {
            inj,
            pid,
            want: want.max(MIN_PIPE),
            pipes: RefCell::new(Vec::new()),
            full: Cell::new(false),
        };
        if pipe.ensure(1)? == 0 {
            return Err(PagePipeError::NoPipe { pid });
        }
        Ok(pipe)
    }

    /// The task that fills the pipes.
    pub fn pid(&self) -> RealPid {
        self.pid
    }

    /// Pipes made so far.
    pub fn count(&self) -> usize {
        self.pipes.borrow().len()
    }

    /// Bytes one pipe holds.
    pub fn capacity(&self) -> usize {
        self.pipes.borrow().first().map_or(MIN_PIPE, |p| p.capacity)
    }

    /// Most iovecs one pipe takes per fill.
    pub fn max_iovs(&self) -> usize {
        IOV_MAX.min(Injection::BATCH_TABLE / IOVEC_LEN / SET_PIPES)
    }

    /// The read end of pipe `i` (do not hold it across [`PagePipe::ensure`]).
    pub fn read_end(&self, i: usize) -> Ref<'_, OwnedFd> {
        Ref::map(self.pipes.borrow(), |p| &p[i].read)
    }

    /// Makes sure there are `n` pipes (at most [`MAX_PIPES`]); returns how
    /// many there are (fewer when the task cannot open more descriptors).
    pub fn ensure(&self, n: usize) -> Result<usize, PagePipeError> {
        let n = n.min(MAX_PIPES);
        let have = self.pipes.borrow().len();
        if have >= n || self.full.get() {
            return Ok(have);
        }
        let err = |source| PagePipeError::Inject {
            pid: self.pid,
            source,
        };
        let mut batch = QueryBatch::new(self.inj);
        let made: Vec<(usize, usize)> = (have..n)
            .map(|_| {
                let (off, at) = batch.out(8);
                (
                    batch.push("pipe2", nr::PIPE2, &[at, libc::O_CLOEXEC as u64]),
                    off,
                )
            })
            .collect();
        let answers = batch.run().map_err(|e| err(e.source))?;
        let mut remote = Vec::with_capacity(made.len());
        for (i, off) in made {
            match answers.ok(i) {
                Ok(_) => {
                    let [fds] = answers.words::<1>(off);
                    remote.push((fds as u32 as i32, (fds >> 32) as u32 as i32));
                }
                Err(e) if remote.is_empty() && have == 0 => return Err(err(e.source)),
                Err(_) => {
                    self.full.set(true);
                    break;
                }
            }
        }
        // Take the read ends, then close the task's copies in one batch.
        let mut taken = Vec::with_capacity(remote.len());
        let mut failed = None;
        for &(r, _) in &remote {
            match steal_fd(self.pid, r) {
                Ok(fd) if failed.is_none() => taken.push(fd),
                Ok(_) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let mut closes: Vec<[u64; 1]> = remote.iter().map(|&(r, _)| [r as u64]).collect();
        if failed.is_some() {
            closes.extend(remote.iter().map(|&(_, w)| [w as u64]));
        }
        let calls: Vec<(i64, &[u64])> = closes.iter().map(|c| (nr::CLOSE, &c[..])).collect();
        let closed = self.inj.syscall_batch(&calls).map_err(err);
        if let Some(e) = failed {
            return Err(err(e));
        }
        for ret in closed? {
            self.inj.result_ok(nr::CLOSE, ret).map_err(err)?;
        }
        let mut pipes = self.pipes.borrow_mut();
        for (read, &(_, w)) in taken.into_iter().zip(&remote) {
            let want = pipes.first().map_or(self.want, |p| p.capacity);
            let pipe = Pipe {
                capacity: 0,
                read,
                remote_write: Some(w),
            };
            pipes.push(pipe);
            let last = pipes.last_mut().expect("just pushed");
            last.capacity =
                grow(last.read.as_fd(), want).map_err(|source| PagePipeError::Resize {
                    pid: self.pid,
                    source,
                })?;
        }
        Ok(pipes.len())
    }

    /// Has the task `vmsplice` the page runs of `chunks[i]` (`(address,
    /// bytes)`, page aligned, at most [`PagePipe::max_iovs`] of them and at
    /// most [`PagePipe::capacity`] bytes each) into pipe `i`, all with one
    /// trap; returns the bytes each pipe now holds. The task must be frozen,
    /// so the pages cannot change before they are drained. Needs
    /// [`PagePipe::ensure`]`(chunks.len())` first.
    #[doc(alias = "dump_pages")]
    pub fn fill(&self, chunks: &[&[(u64, u64)]]) -> Result<Vec<usize>, PagePipeError> {
        self.fill_start(0, chunks)?.finish()
    }

    /// [`PagePipe::fill`] into pipes `first..first + chunks.len()`, started
    /// and not awaited: the task `vmsplice`s while the engine drains other
    /// pipes; [`RunningFill::finish`] gives the bytes each pipe holds. No
    /// other injection may run before that.
    pub fn fill_start(
        &self,
        first: usize,
        chunks: &[&[(u64, u64)]],
    ) -> Result<RunningFill<'_, 't>, PagePipeError> {
        let err = |source| PagePipeError::Inject {
            pid: self.pid,
            source,
        };
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(chunks.len());
        let mut spans = Vec::with_capacity(chunks.len());
        for iovs in chunks {
            debug_assert!(iovs.len() <= self.max_iovs());
            offsets.push(bytes.len());
            spans.push((
                iovs.first().map_or(0, |i| i.0),
                iovs.iter().map(|i| i.1 as usize).sum(),
            ));
            for (addr, len) in *iovs {
                bytes.extend_from_slice(&addr.to_le_bytes());
                bytes.extend_from_slice(&len.to_le_bytes());
            }
        }
        let at = self.inj.write_scratch(0, &bytes).map_err(err)?;
        let flags = (libc::SPLICE_F_GIFT | libc::SPLICE_F_NONBLOCK) as u64;
        let args: Vec<[u64; 4]> = {
            let pipes = self.pipes.borrow();
            chunks
                .iter()
                .zip(&offsets)
                .enumerate()
                .map(|(i, (iovs, off))| {
                    let wfd = pipes[first + i]
                        .remote_write
                        .expect("write end open until drop");
                    [wfd as u64, at.0 + *off as u64, iovs.len() as u64, flags]
                })
                .collect()
        };
        let calls: Vec<(i64, &[u64])> = args.iter().map(|a| (nr::VMSPLICE, &a[..])).collect();
        let running = self.inj.syscall_batch_start(&calls).map_err(err)?;
        Ok(RunningFill {
            pid: self.pid,
            running,
            spans,
        })
    }

    /// Closes the task's write ends now (one trap), reporting a failure.
    pub fn close(self) -> Result<(), PagePipeError> {
        self.close_remote()
    }

    fn close_remote(&self) -> Result<(), PagePipeError> {
        let fds: Vec<[u64; 1]> = self
            .pipes
            .borrow_mut()
            .iter_mut()
            .filter_map(|p| p.remote_write.take())
            .map(|fd| [fd as u64])
            .collect();
        let err = |source| PagePipeError::Inject {
            pid: self.pid,
            source,
        };
        let calls: Vec<(i64, &[u64])> = fds.iter().map(|c| (nr::CLOSE, &c[..])).collect();
        for ret in self.inj.syscall_batch(&calls).map_err(err)? {
            self.inj.result_ok(nr::CLOSE, ret).map_err(err)?;
        }
        Ok(())
    }
}

/// A fill of page pipes running in the task ([`PagePipe::fill_start`]).
pub struct RunningFill<'i, 't> {
    pid: RealPid,
    running: RunningBatch<'i, 't>,
    /// First address and bytes of each pipe's share, for errors.
    spans: Vec<(u64, usize)>,
}

impl RunningFill<'_, '_> {
    /// Waits for the task's `vmsplice`s; returns the bytes each pipe holds.
    pub fn finish(self) -> Result<Vec<usize>, PagePipeError> {
        let pid = self.pid;
        let rets = self
            .running
            .finish()
            .map_err(|source| PagePipeError::Inject { pid, source })?;
        rets.into_iter()
            .zip(self.spans)
            .map(|(ret, (addr, len))| {
                if ret < 0 {
                    Err(PagePipeError::Vmsplice {
                        pid,
                        addr,
                        len,
                        source: Errno::from_raw(-ret as i32),
                    })
                } else {
                    Ok(ret as usize)
                }
            })
            .collect()
    }
}

impl Drop for PagePipe<'_, '_> {
    fn drop(&mut self) {
        if let Err(err) = self.close_remote() {
            tracing::error!(pid = %self.pid, ?err, "cannot close the page pipes left in the task");
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
