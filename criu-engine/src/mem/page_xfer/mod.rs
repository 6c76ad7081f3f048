//! Writing saved pages: `pagemap-<pid>.img` entries and the raw
//! `pages-<id>.img` (CRIU's `criu/page-xfer.c`, local image target).
//!
//! Runs arrive in address order. Each run becomes (part of) one pagemap
//! entry, merged with the previous entry when it continues it with the same
//! flags, so entries stay maximal whatever the batch boundaries. The pages
//! themselves are batched as iovecs up to the pipe's capacity and
//! `IOV_MAX`, put in the pipe by the task, and moved from the pipe to the
//! pages file with `splice`, never through the engine's memory. For tasks
//! that keep running (`pre_dump_mode = read`), [`PageSource::Read`] copies
//! with `process_vm_readv` through a bounded buffer instead.
//!
//! # References
//!
//! - [splice(2)](https://man7.org/linux/man-pages/man2/splice.2.html),
//!   [process_vm_readv(2)](https://man7.org/linux/man-pages/man2/process_vm_readv.2.html)

use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use criu_proto::images::{PagemapEntry, PagemapHead};
use criu_proto::img::{ImageError, ImageKind, ImageWriter, ImagesDir, Pagemap};
use nix::errno::Errno;
use nix::fcntl::{openat, splice, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};

use crate::proc::pagemap::PAGE_SIZE;
use crate::pstree::RealPid;

mod sets;

use super::page_drain::{PageDrainError, PageDrainer};
use super::page_pipe::{PagePipe, PagePipeError, SET_PIPES};
use super::page_server::{PageServerError, Sender};
use super::pagemap::{PageRun, PE_PRESENT};

/// Writing pages or their pagemap failed.
#[derive(Debug, thiserror::Error)]
pub enum PageXferError {
    /// The pagemap image could not be written.
    #[error("cannot write the pagemap")]
    Pagemap(#[source] ImageError),
    /// The pages file could not be created.
    #[error("cannot create {}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Moving pages into the pages file failed.
    #[error("cannot write pages to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pipe gave fewer bytes than the task put in it.
    #[error("page pipe of task {pid} ran dry after {got} of {want} bytes")]
    ShortSplice {
        /// The task.
        pid: RealPid,
        /// Bytes moved.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// Filling the pipe failed.
    #[error(transparent)]
    Pipe(#[from] PagePipeError),
    /// Handing the last pipes to the drainer failed.
    #[error(transparent)]
    Drain(#[from] PageDrainError),
    /// Talking to the page server failed.
    #[error(transparent)]
    PageServer(#[from] PageServerError),
    /// A piece for the page server is not made of whole pages.
    #[error("page run {addr:#x}+{len:#x} is not made of whole pages")]
    Unaligned {
        /// First address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// `process_vm_readv` failed.
    #[error("cannot read {len} bytes at {addr:#x} of task {pid}")]
    Read {
        /// The task.
        pid: RealPid,
        /// First address.
        addr: u64,
        /// Bytes asked for.
        len: usize,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// How pages leave the task.
pub enum PageSource<'p, 'i, 't> {
    /// The task `vmsplice`s them into a page pipe (the task is frozen).
    Pipe(&'p PagePipe<'i, 't>),
    /// `process_vm_readv` into a buffer of this many bytes.
    Read(RealPid, usize),
    /// Like [`PageSource::Read`] for a task that runs meanwhile: pages that
    /// can no longer be read are written as zeros.
    ReadTolerant(RealPid, usize),
}

/// Counters of one task's memory dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XferStats {
    /// Pages written to the pages file.
    pub pages_written: u64,
    /// Pagemap entries after the head.
    pub entries: u64,
    /// Injected `vmsplice` calls (pipe fills).
    pub fills: u64,
    /// Time spent moving pages into the pages file.
    pub write_time: std::time::Duration,
}

/// Where the pages and pagemap entries go.
enum Dest {
    /// `pagemap-<pid>.img` and `pages-<id>.img` in the images directory.
    Local {
        pagemap: ImageWriter,
        pending: Option<PageRun>,
        pages: File,
        pages_path: PathBuf,
    },
    /// A page server: one `PS_IOV_ADD_F` per contiguous piece, then its pages.
    Remote(Sender),
}

/// The pagemap and pages file of one task, plus the batch being built.
pub struct PageXfer<'p, 'i, 't> {
    source: PageSource<'p, 'i, 't>,
    dest: Dest,
    batch: Vec<(u64, u64)>,
    batch_flags: Vec<u32>,
    batch_bytes: usize,
    drainer: Option<&'p PageDrainer>,
    stats: XferStats,
}

impl<'p, 'i, 't> PageXfer<'p, 'i, 't> {
    /// Creates `pagemap-<pid>.img` (head naming `pages_id`) and
    /// `pages-<pages_id>.img`.
    pub fn create(
        dir: &ImagesDir,
        pid: u32,
        pages_id: u32,
        source: PageSource<'p, 'i, 't>,
    ) -> Result<Self, PageXferError> {
        let mut pagemap = dir
            .create_image(ImageKind::Pagemap, pid.into())
            .map_err(PageXferError::Pagemap)?;
        pagemap
            .write_entry(&PagemapHead { pages_id })
            .map_err(PageXferError::Pagemap)?;
        let name = ImageKind::Pages.file_name(pages_id.into());
        let pages_path = dir.path().join(&name);
        let fd: OwnedFd = openat(
            dir.fd(),
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|source| PageXferError::Create {
            path: pages_path.clone(),
            source,
        })?;
        Ok(PageXfer {
            source,
            dest: Dest::Local {
                pagemap,
                pending: None,
                pages: File::from(fd),
                pages_path,
            },
            batch: Vec::new(),
            batch_flags: Vec::new(),
            batch_bytes: 0,
            drainer: None,
            stats: XferStats::default(),
        })
    }

    /// Sends the task's pages to a page server instead, over `sender`
    /// (on which `pagemap-<pid>.img` is already open).
    pub fn remote(sender: Sender, source: PageSource<'p, 'i, 't>) -> Self {
        PageXfer {
            source,
            dest: Dest::Remote(sender),
            batch: Vec::new(),
            batch_flags: Vec::new(),
            batch_bytes: 0,
            drainer: None,
            stats: XferStats::default(),
        }
    }

    /// Lets the last set of pipes filled for a local image go to
    /// `drainer` instead of being drained before [`PageXfer::finish`]
    /// returns (see [`super::page_drain`]).
    pub fn hand_off_last(&mut self, drainer: &'p PageDrainer) {
        self.drainer = Some(drainer);
    }

    fn limits(&self) -> (usize, usize) {
        match &self.source {
            // Several sets per flush, so that filling one set overlaps
            // draining the one before.
            PageSource::Pipe(p) => (
                p.capacity() * SET_PIPES * sets::SETS_PER_FLUSH,
                p.max_iovs() * SET_PIPES * sets::SETS_PER_FLUSH,
            ),
            PageSource::Read(_, buf) | PageSource::ReadTolerant(_, buf) => {
                (*buf, super::page_pipe::IOV_MAX)
            }
        }
    }

    /// Queues a run of pages (address order), flushing full batches.
    pub fn add(&mut self, run: PageRun) -> Result<(), PageXferError> {
        if let Dest::Local { pending, .. } = &mut self.dest {
            match pending {
                Some(p) if p.end() == run.vaddr && p.flags == run.flags => {
                    p.nr_pages += run.nr_pages
                }
                pending => {
                    if let Some(done) = pending.replace(run) {
                        self.write_entry(done)?;
                    }
                }
            }
        } else if run.flags & PE_PRESENT == 0 {
            // Keep the server's pagemap in address order.
            self.flush()?;
            self.write_entry(run)?;
        }
        if run.flags & PE_PRESENT == 0 {
            // In the parent images, or served lazily: no data here.
            return Ok(());
        }
        let (cap, max_iovs) = self.limits();
        let (mut addr, mut left) = (run.vaddr, (run.nr_pages * PAGE_SIZE) as usize);
        while left > 0 {
            let take = left.min(cap - self.batch_bytes);
            match (self.batch.last_mut(), self.batch_flags.last()) {
                (Some(last), Some(f)) if last.0 + last.1 == addr && *f == run.flags => {
                    last.1 += take as u64
                }
                _ => {
                    self.batch.push((addr, take as u64));
                    self.batch_flags.push(run.flags);
                }
            }
            self.batch_bytes += take;
            addr += take as u64;
            left -= take;
            if self.batch_bytes == cap || self.batch.len() == max_iovs {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn write_entry(&mut self, run: PageRun) -> Result<(), PageXferError> {
        self.stats.entries += 1;
        match &mut self.dest {
            Dest::Local { pagemap, .. } => pagemap
                .write_entry::<PagemapEntry>(&Pagemap::entry(run.vaddr, run.nr_pages, run.flags))
                .map_err(PageXferError::Pagemap),
            Dest::Remote(sender) => Ok(sender.add(run.flags, run.vaddr, run.nr_pages)?),
        }
    }

    /// Moves the first `n` bytes of the pipe out: into the pages file at
    /// once, or to a page server piece by piece, each contiguous piece of
    /// the batch preceded by its header.
    fn drain_pieces(
        &mut self,
        pipe: &PagePipe<'_, '_>,
        index: usize,
        batch: &[(u64, u64)],
        flags: &[u32],
        n: usize,
    ) -> Result<(), PageXferError> {
        if matches!(self.dest, Dest::Local { .. }) {
            return self.drain(pipe, index, n);
        }
        let mut left = n as u64;
        for ((addr, len), f) in batch.iter().zip(flags) {
            if left == 0 {
                break;
            }
            let take = (*len).min(left);
            if take % PAGE_SIZE != 0 {
                return Err(PageXferError::Unaligned {
                    addr: *addr,
                    len: take,
                });
            }
            if let Dest::Remote(sender) = &mut self.dest {
                sender.add(*f, *addr, take / PAGE_SIZE)?;
            }
            self.stats.entries += 1;
            self.drain(pipe, index, take as usize)?;
            left -= take;
        }
        Ok(())
    }

    /// Moves the queued batch into the pages file (or to the page server).
    pub fn flush(&mut self) -> Result<(), PageXferError> {
        self.flush_with(false)
    }

    fn flush_with(&mut self, last: bool) -> Result<(), PageXferError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let flags = std::mem::take(&mut self.batch_flags);
        match self.source {
            PageSource::Pipe(pipe) => self.flush_pipes(pipe, batch, flags, last)?,
            PageSource::Read(pid, _) | PageSource::ReadTolerant(pid, _) => {
                let tolerant = matches!(self.source, PageSource::ReadTolerant(..));
                let buf = read_batch(pid, &batch, self.batch_bytes, tolerant)?;
                let started = std::time::Instant::now();
                match &mut self.dest {
                    Dest::Local {
                        pages, pages_path, ..
                    } => pages
                        .write_all(&buf)
                        .map_err(|source| PageXferError::Write {
                            path: pages_path.clone(),
                            source,
                        })?,
                    Dest::Remote(_) => {
                        let mut off = 0usize;
                        for ((addr, len), f) in batch.iter().zip(&flags) {
                            let len = *len as usize;
                            if let Dest::Remote(sender) = &mut self.dest {
                                sender.add(*f, *addr, len as u64 / PAGE_SIZE)?;
                                sender.write_pages(&buf[off..off + len])?;
                            }
                            self.stats.entries += 1;
                            off += len;
                        }
                    }
                }
                self.stats.write_time += started.elapsed();
            }
        }
        self.stats.pages_written += self.batch_bytes as u64 / PAGE_SIZE;
        self.batch_bytes = 0;
        Ok(())
    }

    /// Splices exactly `len` bytes from the pipe to the pages file or the
    /// page server's socket.
    fn drain(
        &mut self,
        pipe: &PagePipe<'_, '_>,
        index: usize,
        len: usize,
    ) -> Result<(), PageXferError> {
        let started = std::time::Instant::now();
        let (out, what) = match &self.dest {
            Dest::Local {
                pages, pages_path, ..
            } => (pages.as_fd(), pages_path.display().to_string()),
            Dest::Remote(sender) => (sender.socket(), sender.peer().to_owned()),
        };
        let read = pipe.read_end(index);
        let mut done = 0;
        while done < len {
            let n = splice(
                read.as_fd(),
                None,
                out,
                None,
                len - done,
                SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(|e| PageXferError::Write {
                path: PathBuf::from(&what),
                source: e.into(),
            })?;
            if n == 0 {
                return Err(PageXferError::ShortSplice {
                    pid: pipe.pid(),
                    got: done,
                    want: len,
                });
            }
            done += n;
        }
        self.stats.write_time += started.elapsed();
        Ok(())
    }

    /// Flushes what is queued, writes the last entry and closes both files
    /// (or ends the page server session).
    pub fn finish(mut self) -> Result<XferStats, PageXferError> {
        self.flush_with(true)?;
        if let Dest::Local { pending, .. } = &mut self.dest {
            if let Some(last) = pending.take() {
                self.write_entry(last)?;
            }
        }
        let stats = self.stats;
        match self.dest {
            Dest::Local { pagemap, .. } => drop(pagemap.finish().map_err(PageXferError::Pagemap)?),
            Dest::Remote(sender) => sender.close()?,
        }
        Ok(stats)
    }
}

/// Reads the `(address, bytes)` batch of task `pid` (`total` bytes in all)
/// with `process_vm_readv`. When `tolerant`, a range that cannot be read
/// (the task unmapped it meanwhile) reads as zeros, page by page.
fn read_batch(
    pid: RealPid,
    batch: &[(u64, u64)],
    total: usize,
    tolerant: bool,
) -> Result<Vec<u8>, PageXferError> {
    let mut buf = vec![0u8; total];
    let remote: Vec<RemoteIoVec> = batch
        .iter()
        .map(|(a, l)| RemoteIoVec {
            base: *a as usize,
            len: *l as usize,
        })
        .collect();
    let fail = |source| PageXferError::Read {
        pid,
        addr: batch[0].0,
        len: total,
        source,
    };
    let got = match process_vm_readv(pid.as_nix(), &mut [IoSliceMut::new(&mut buf)], &remote) {
        Ok(n) => n,
        Err(Errno::EFAULT | Errno::ENOMEM) if tolerant => 0,
        Err(e) => return Err(fail(e)),
    };
    if got == total {
        return Ok(buf);
    }
    if !tolerant {
        return Err(fail(Errno::EFAULT));
    }
    // Page by page after the bytes already read; failures stay zero.
    let page = PAGE_SIZE as usize;
    let mut off = 0usize;
    for (addr, len) in batch {
        let len = *len as usize;
        let mut at = 0;
        while at < len {
            if off + at >= got {
                let dst = &mut buf[off + at..off + at + page];
                let src = [RemoteIoVec {
                    base: *addr as usize + at,
                    len: page,
                }];
                match process_vm_readv(pid.as_nix(), &mut [IoSliceMut::new(dst)], &src) {
                    Ok(_) | Err(Errno::EFAULT | Errno::ENOMEM) => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            at += page;
        }
        off += len;
    }
    Ok(buf)
}
