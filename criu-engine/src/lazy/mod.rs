//! `criu lazy-pages`: the daemon that fills the memory of a lazily restored
//! tree (CRIU's `cr_lazy_pages` and the rest of `criu/uffd.c`).
//!
//! The daemon binds `lazy-pages.socket` in the work directory before the
//! restore starts, accepts the restore's one connection and receives, per
//! task, its pid in the images and its userfaultfd (see
//! [`crate::restore::lazy`] for the wire format). From then on it serves, on
//! every descriptor at once:
//!
//! - page faults: the faulting page and up to [`FAULT_PAGES`] after it are
//!   copied in with `UFFDIO_COPY` (pages the images do not hold get
//!   `UFFDIO_ZEROPAGE`);
//! - the non-cooperative events: `fork` (the child gets its own copy of the
//!   missing set), `mremap` (missing ranges move), `munmap` and
//!   `madvise(MADV_DONTNEED)`-like removals (missing ranges are dropped);
//! - once the restore reports that every task runs, the remaining pages, in
//!   chunks of [`PUSH_PAGES`], between which faults are served first.
//!
//! Each saved page arrives once: a page leaves the missing set when copied
//! and is never copied again. When nothing is missing for any task the
//! daemon closes the descriptors (the kernel unregisters the ranges) and
//! exits with its [`LazyStats`].
//!
//! Contents come from the images (through the parent chain), or with
//! `--page-server --address A --port P` from a page server started with
//! `page-server --lazy-pages` (CRIU's `PS_IOV_GET`).
//!
//! # References
//!
//! - [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html),
//!   [UFFDIO_COPY(2const)](https://man7.org/linux/man-pages/man2/UFFDIO_COPY.2const.html)

mod pending;
mod serve;
mod source;

use std::collections::HashMap;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::Rc;

use criu_proto::img::pages::PAGE_SIZE;
use criu_proto::img::{ImageError, ImagesDir};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::opts::RequestOpts;
use crate::restore::lazy::{socket_path, RESTORE_FINISHED, SOCKET_NAME};
use crate::restore::ImagesError;
use crate::sys::uffd::{self, UffdEvent, MSG_LEN};
pub use serve::{serve_lazy, LazyServeStats};
use source::{lazy_layout, ImagePages, RemotePages};

/// Pages copied for one fault (the faulting page and the missing ones after it).
pub const FAULT_PAGES: u64 = 16;
/// Pages copied per background step.
pub const PUSH_PAGES: u64 = 256;

/// The lazy-pages daemon or the lazy page server failed.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// No images directory.
    #[error("lazy pages need an images directory")]
    NoImagesDir,
    /// No work directory.
    #[error("lazy pages need a work directory (for {SOCKET_NAME})")]
    NoWorkDir,
    /// A directory descriptor cannot be duplicated.
    #[error("cannot use the images directory")]
    Dir(#[source] std::io::Error),
    /// The daemon's socket cannot be bound or accepted on.
    #[error("lazy-pages socket {}", path.display())]
    Socket {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The restore broke the protocol or left early.
    #[error("restore connection: {what}")]
    Restore {
        /// What happened.
        what: String,
    },
    /// An image cannot be read.
    #[error("cannot read {image}")]
    Read {
        /// Image file.
        image: String,
        /// Cause.
        #[source]
        source: ImageError,
    },
    /// An image is missing.
    #[error("{image} is missing")]
    Missing {
        /// Image file.
        image: String,
    },
    /// The pages of a task cannot be resolved.
    #[error("task {pid}: bad page images")]
    Images {
        /// Task (pid in the images).
        pid: u32,
        /// Cause.
        #[source]
        source: ImagesError,
    },
    /// A pages file cannot be mapped.
    #[error("cannot map {image}")]
    MapPages {
        /// Image file.
        image: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The page server connection failed.
    #[error("page server {peer}")]
    Remote {
        /// Address.
        peer: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The page server answered a request wrongly.
    #[error("page server {peer} has no pages of task {pid} at {vaddr:#x}")]
    RemoteAnswer {
        /// Address.
        peer: String,
        /// Task (pid in the images).
        pid: u32,
        /// Asked address.
        vaddr: u64,
    },
    /// The page-server protocol was broken.
    #[error("page server session with {peer}: {what}")]
    Protocol {
        /// Address.
        peer: String,
        /// What happened.
        what: String,
    },
    /// The images hold no pages where the missing set says they are.
    #[error("task {pid}: no saved pages at {vaddr:#x}")]
    NoPages {
        /// Task (pid in the images).
        pid: u32,
        /// Address in the images.
        vaddr: u64,
    },
    /// A userfaultfd operation failed.
    #[error("task {pid}: cannot {step} at {addr:#x}")]
    Uffd {
        /// Task (pid in the images).
        pid: u32,
        /// Step.
        step: &'static str,
        /// Address.
        addr: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// What the daemon did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Userfaultfds received from the restore.
    pub tasks: u64,
    /// Address spaces added by `fork` in restored tasks.
    pub forks: u64,
    /// Lazy pages of the received tasks.
    pub pages_total: u64,
    /// Pages copied in (each once).
    pub pages_copied: u64,
    /// Of those, copied to serve a fault.
    pub pages_on_fault: u64,
    /// Of those, fetched from a page server.
    pub pages_remote: u64,
    /// Faults served.
    pub faults: u64,
    /// Faults served after the restore reported every task running.
    pub faults_after_finish: u64,
    /// Zero pages placed (faults where the images hold nothing).
    pub zero_pages: u64,
    /// Missing pages dropped: unmapped, discarded or their task exited.
    pub pages_dropped: u64,
    /// Missing pages the kernel already had (never expected).
    pub pages_present: u64,
}

/// A daemon whose socket is bound.
pub struct Daemon {
    listener: UnixListener,
    path: PathBuf,
    dir: ImagesDir,
    remote: Option<(String, u16)>,
}

/// Binds `lazy-pages.socket` in the work directory of `opts` (a stale
/// socket file is replaced).
pub fn prepare(opts: &RequestOpts) -> Result<Daemon, LazyError> {
    let images = opts.images_dir.as_ref().ok_or(LazyError::NoImagesDir)?;
    let dir = ImagesDir::from_fd(
        images.fd.try_clone().map_err(LazyError::Dir)?,
        images.path.clone(),
    );
    let work = opts.work_dir.as_ref().ok_or(LazyError::NoWorkDir)?;
    let path = socket_path(work);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|source| LazyError::Socket {
        path: work.path.join(SOCKET_NAME),
        source,
    })?;
    let remote = opts.page_server.then(|| {
        (
            opts.address
                .clone()
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            opts.port,
        )
    });
    Ok(Daemon {
        listener,
        path,
        dir,
        remote,
    })
}

/// One address space being filled.
struct Lpi {
    pid: u32,
    uffd: OwnedFd,
    pending: pending::Pending,
    retry: Vec<u64>,
}

/// Outcome of one copy.
enum Copied {
    Done,
    Again,
}

struct State {
    dir: ImagesDir,
    images: HashMap<u32, Rc<ImagePages>>,
    remote: Option<RemotePages>,
    lpis: Vec<Lpi>,
    stats: LazyStats,
    finished: bool,
    buf: Vec<u8>,
}

impl Daemon {
    /// Accepts the restore and serves until every page has arrived.
    pub fn run(self) -> Result<LazyStats, LazyError> {
        let sock_err = |source| LazyError::Socket {
            path: self.path.clone(),
            source,
        };
        let (control, _) = self.listener.accept().map_err(sock_err)?;
        let _ = std::fs::remove_file(&self.path);
        let remote = match &self.remote {
            Some((a, p)) => Some(RemotePages::connect(a, *p)?),
            None => None,
        };
        let mut st = State {
            dir: self.dir,
            images: HashMap::new(),
            remote,
            lpis: Vec::new(),
            stats: LazyStats::default(),
            finished: false,
            buf: vec![0u8; usize::try_from(PUSH_PAGES * PAGE_SIZE).unwrap_or(1 << 20)],
        };
        st.serve(control)?;
        if let Some(r) = st.remote.take() {
            r.close()?;
        }
        tracing::info!(?st.stats, "every lazy page arrived");
        Ok(st.stats)
    }
}

impl State {
    fn serve(&mut self, control: UnixStream) -> Result<(), LazyError> {
        let mut control = Some(control);
        let mut next = 0usize;
        loop {
            self.lpis
                .retain(|l| !(l.pending.is_empty() && l.retry.is_empty()));
            if self.finished && self.lpis.is_empty() {
                return Ok(());
            }
            let pushing = self.finished && self.lpis.iter().any(|l| l.retry.is_empty());
            let (ctl_ready, ready) = {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.lpis.len() + 1);
                if let Some(c) = &control {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                for l in &self.lpis {
                    fds.push(PollFd::new(l.uffd.as_fd(), PollFlags::POLLIN));
                }
                let timeout = if pushing {
                    PollTimeout::ZERO
                } else {
                    PollTimeout::NONE
                };
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        return Err(LazyError::Restore {
                            what: format!("poll failed: {e}"),
                        })
                    }
                }
                let is_ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                let skip = usize::from(control.is_some());
                let ctl = control.is_some() && is_ready(&fds[0]);
                let ready: Vec<usize> = fds[skip..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| is_ready(f))
                    .map(|(i, _)| i)
                    .collect();
                (ctl, ready)
            };
            // The control socket first: faults after this count as the
            // program's own.
            if ctl_ready {
                if let Some(c) = control.as_mut() {
                    if !self.control(c)? {
                        control = None;
                        if !self.finished {
                            return Err(LazyError::Restore {
                                what: "closed before the restore finished".into(),
                            });
                        }
                    }
                }
            }
            for &i in &ready {
                self.events(i)?;
            }
            for i in 0..self.lpis.len() {
                let retry = std::mem::take(&mut self.lpis[i].retry);
                for addr in retry {
                    self.fault(i, addr)?;
                }
            }
            if pushing && ready.is_empty() && !ctl_ready {
                let n = self.lpis.len();
                if let Some(i) = (0..n)
                    .map(|k| (next + k) % n)
                    .find(|&i| self.lpis[i].retry.is_empty() && !self.lpis[i].pending.is_empty())
                {
                    next = i + 1;
                    self.push(i)?;
                }
            }
        }
    }

    /// Reads one message of the restore; `false` at its end.
    fn control(&mut self, c: &mut UnixStream) -> Result<bool, LazyError> {
        let mut word = [0u8; 4];
        match c.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => {
                return Err(LazyError::Restore {
                    what: e.to_string(),
                })
            }
        }
        if u32::from_ne_bytes(word) == RESTORE_FINISHED {
            tracing::debug!("restore finished");
            self.finished = true;
            return Ok(true);
        }
        let pid = i32::from_ne_bytes(word);
        if pid < 0 {
            tracing::debug!(pid = -pid, "zombie");
            return Ok(true);
        }
        let uffd = recv_fd(c.as_raw_fd()).map_err(|e| LazyError::Restore {
            what: format!("no userfaultfd for task {pid}: {e}"),
        })?;
        let pid = pid.unsigned_abs();
        let pending = lazy_layout(&self.dir, pid)?;
        if self.remote.is_none() && !self.images.contains_key(&pid) {
            let pages = ImagePages::load(&self.dir, pid)?;
            self.images.insert(pid, Rc::new(pages));
        }
        self.stats.tasks += 1;
        self.stats.pages_total += pending.bytes() / PAGE_SIZE;
        tracing::debug!(pid, pages = pending.bytes() / PAGE_SIZE, "task received");
        self.lpis.push(Lpi {
            pid,
            uffd,
            pending,
            retry: Vec::new(),
        });
        Ok(true)
    }

    /// Reads and handles every queued message of task `i`.
    fn events(&mut self, i: usize) -> Result<(), LazyError> {
        let mut buf = [0u8; MSG_LEN * 16];
        loop {
            let n = match nix::unistd::read(self.lpis[i].uffd.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(LazyError::Uffd {
                        pid: self.lpis[i].pid,
                        step: "read events",
                        addr: 0,
                        source,
                    })
                }
            };
            if n == 0 {
                return Ok(());
            }
            for m in buf[..n].chunks_exact(MSG_LEN) {
                let m: &[u8; MSG_LEN] = m.try_into().expect("chunk of MSG_LEN");
                self.event(i, UffdEvent::decode(m))?;
            }
        }
    }

    fn event(&mut self, i: usize, ev: UffdEvent) -> Result<(), LazyError> {
        let l = &mut self.lpis[i];
        match ev {
            UffdEvent::PageFault(addr) => {
                self.stats.faults += 1;
                if self.finished {
                    self.stats.faults_after_finish += 1;
                }
                self.fault(i, addr)?;
            }
            UffdEvent::Fork(fd) => {
                if let Some(uffd) = uffd::own_received(fd) {
                    tracing::debug!(pid = l.pid, "fork");
                    let child = Lpi {
                        pid: l.pid,
                        uffd,
                        pending: l.pending.clone(),
                        retry: Vec::new(),
                    };
                    self.stats.forks += 1;
                    self.lpis.push(child);
                }
            }
            UffdEvent::Remap { from, to, len } => l.pending.remap(from, to, len),
            UffdEvent::Remove { start, end } => {
                self.stats.pages_dropped += l.pending.remove(start, end) / PAGE_SIZE;
            }
            UffdEvent::Other(kind) => tracing::debug!(pid = l.pid, kind, "unexpected event"),
        }
        Ok(())
    }

    /// Serves a fault at `addr` of task `i`.
    fn fault(&mut self, i: usize, addr: u64) -> Result<(), LazyError> {
        let page = addr & !(PAGE_SIZE - 1);
        let l = &self.lpis[i];
        if let Some(m) = l.pending.find(page) {
            let len = (m.end - page).min(FAULT_PAGES * PAGE_SIZE);
            if let Copied::Again = self.copy(i, page, len, true)? {
                self.lpis[i].retry.push(page);
            }
            return Ok(());
        }
        match uffd::zeropage(l.uffd.as_fd(), page, PAGE_SIZE) {
            Ok(()) => self.stats.zero_pages += 1,
            // Filled meanwhile: only wake the thread.
            Err(Errno::EEXIST) => {
                let _ = uffd::wake(l.uffd.as_fd(), page, PAGE_SIZE);
            }
            Err(Errno::EAGAIN) => self.lpis[i].retry.push(page),
            Err(Errno::ENOENT | Errno::ESRCH | Errno::ENOSPC) => {}
            Err(source) => {
                return Err(LazyError::Uffd {
                    pid: l.pid,
                    step: "place a zero page",
                    addr: page,
                    source,
                })
            }
        }
        Ok(())
    }

    /// Copies the next chunk of task `i`'s lowest missing range.
    fn push(&mut self, i: usize) -> Result<(), LazyError> {
        let Some(m) = self.lpis[i].pending.first() else {
            return Ok(());
        };
        let len = (m.end - m.start).min(PUSH_PAGES * PAGE_SIZE);
        self.copy(i, m.start, len, false).map(drop)
    }

    /// Copies `[start, start + len)` (inside one missing range) of task `i`.
    /// A copy must stay inside one VMA: when the task has split or unmapped
    /// part of the range, shorter copies are tried down to the first page.
    fn copy(&mut self, i: usize, start: u64, len: u64, fault: bool) -> Result<Copied, LazyError> {
        let mut len = len;
        loop {
            match self.copy_once(i, start, len, fault)? {
                Some(c) => return Ok(c),
                None => len = (len / 2).div_ceil(PAGE_SIZE) * PAGE_SIZE,
            }
        }
    }

    /// One `UFFDIO_COPY`; `None` when it crossed the end of a VMA and must be
    /// retried shorter.
    fn copy_once(
        &mut self,
        i: usize,
        start: u64,
        len: u64,
        fault: bool,
    ) -> Result<Option<Copied>, LazyError> {
        let l = &self.lpis[i];
        let m = l.pending.find(start).expect("inside a missing range");
        let img = m.img + (start - m.start);
        let pid = l.pid;
        let data: &[u8] = match &mut self.remote {
            Some(r) => {
                let want = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let n = r.get(pid, img, &mut self.buf[..want])?;
                self.stats.pages_remote += n as u64 / PAGE_SIZE;
                &self.buf[..n]
            }
            None => self
                .images
                .get(&pid)
                .and_then(|p| p.bytes_at(img, len))
                .filter(|d| !d.is_empty())
                .ok_or(LazyError::NoPages { pid, vaddr: img })?,
        };
        let l = &mut self.lpis[i];
        match uffd::copy(l.uffd.as_fd(), start, data) {
            Ok(done) => {
                let pages = l.pending.remove(start, start + done) / PAGE_SIZE;
                self.stats.pages_copied += pages;
                if fault {
                    self.stats.pages_on_fault += pages;
                }
                Ok(Some(Copied::Done))
            }
            Err(Errno::EAGAIN) => Ok(Some(Copied::Again)),
            Err(Errno::EEXIST) => {
                self.stats.pages_present += l.pending.remove(start, start + PAGE_SIZE) / PAGE_SIZE;
                let _ = uffd::wake(l.uffd.as_fd(), start, PAGE_SIZE);
                Ok(Some(Copied::Done))
            }
            Err(Errno::ENOENT) if data.len() as u64 > PAGE_SIZE => Ok(None),
            // The page is no longer mapped and registered.
            Err(Errno::ENOENT) => {
                self.stats.pages_dropped += l.pending.remove(start, start + PAGE_SIZE) / PAGE_SIZE;
                Ok(Some(Copied::Done))
            }
            // The address space is gone: the task exited.
            Err(Errno::ESRCH | Errno::ENOSPC) => {
                tracing::debug!(pid, "task exited");
                self.stats.pages_dropped += l.pending.bytes() / PAGE_SIZE;
                l.pending = pending::Pending::default();
                l.retry.clear();
                Ok(Some(Copied::Done))
            }
            Err(source) => Err(LazyError::Uffd {
                pid,
                step: "copy pages",
                addr: start,
                source,
            }),
        }
    }
}

/// Receives one descriptor sent with `SCM_RIGHTS` along with one byte.
fn recv_fd(sk: RawFd) -> Result<OwnedFd, Errno> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(sk, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                return crate::sys::uffd::own_received(fd).ok_or(Errno::EBADF);
            }
        }
    }
    Err(Errno::ENODATA)
}
