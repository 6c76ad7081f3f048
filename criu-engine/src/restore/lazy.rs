//! The restore side of lazy pages (CRIU's `setup_uffd`, `send_uffd`,
//! `prepare_lazy_pages_socket` and `lazy_pages_finish_restore` in
//! `criu/uffd.c`).
//!
//! With `lazy_pages` the private anonymous VMAs of each restored task (CRIU's
//! `vma_entry_can_be_lazy`) are mapped empty. Right after they are mapped, a
//! userfaultfd is created inside the task by an injected `userfaultfd(2)`
//! (a userfaultfd belongs to the mm of its creator), taken into the engine
//! with `pidfd_getfd` and closed in the task; the engine asks for the
//! non-cooperative events (fork, remap, remove, unmap) and registers those
//! VMAs in missing-page mode, then hands the descriptor to the lazy-pages
//! daemon ([`crate::lazy`]), which fills every page on first touch or in the
//! background. Any later access to those VMAs, by the task or by the kernel
//! during the rest of the restore, waits for the daemon.
//!
//! The link to the daemon is CRIU's: one connection to `lazy-pages.socket`
//! in the work directory; per task of the tree its pid in the images as a
//! native `i32`, then (live tasks only; zombies send `-pid`) one byte
//! carrying the descriptor in `SCM_RIGHTS`; finally the 32-bit
//! [`RESTORE_FINISHED`] once every task runs.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use criu_proto::images::VmaEntry;
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::images::{is_private, TaskImages, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR};
use super::mm::Remote;
use crate::arch::nr;
use crate::inject::{close_remote, steal_fd, InjectError};
use crate::opts::WorkDir;
use crate::pstree::RealPid;
use crate::sys::{probe as sysprobe, uffd};

/// Name of the daemon's socket in the work directory.
pub const SOCKET_NAME: &str = "lazy-pages.socket";
/// What the restore sends once every task runs ("ReSTore Finished").
pub const RESTORE_FINISHED: u32 = 0x5253_5446;
/// Events the daemon must see: `UFFD_FEATURE_EVENT_FORK | _REMAP | _REMOVE | _UNMAP`.
pub(crate) const UFFD_EVENTS: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);

/// Handing memory to the lazy-pages daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum LazyRestoreError {
    /// The daemon's socket cannot be reached.
    #[error("cannot connect to the lazy-pages daemon at {}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The request has no work directory to find the socket in.
    #[error("lazy pages need a work directory (for {SOCKET_NAME})")]
    NoWorkDir,
    /// The userfaultfd cannot be created in the task.
    #[error("task {pid}: cannot create its userfaultfd")]
    Create {
        /// Task.
        pid: RealPid,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// The kernel refuses the events or the registration.
    #[error("task {pid}: cannot {step} at {addr:#x}")]
    Uffd {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Address involved (0 when none).
        addr: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Sending to the daemon failed.
    #[error("cannot send task {pid} to the lazy-pages daemon")]
    Send {
        /// Task (pid in the images).
        pid: i32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The daemon's socket in `work`, reached through our descriptor of the
/// directory (short, whatever the directory's own path).
pub fn socket_path(work: &WorkDir) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET_NAME}",
        work.fd.as_raw_fd()
    ))
}

/// CRIU's `vma_entry_can_be_lazy`: private anonymous memory that is neither
/// locked, huge-TLB nor one of the kernel's special mappings.
pub(crate) fn is_lazy_vma(vma: &VmaEntry) -> bool {
    let f = vma.flags;
    is_private(vma)
        && f & libc::MAP_ANONYMOUS as u32 != 0
        && f & libc::MAP_PRIVATE as u32 != 0
        && f & libc::MAP_LOCKED as u32 == 0
        && f & libc::MAP_HUGETLB as u32 == 0
        && vma.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) == 0
}

/// The connection to the lazy-pages daemon for one restore.
#[derive(Debug)]
pub struct LazyLink {
    sk: UnixStream,
}

impl LazyLink {
    /// Connects to `lazy-pages.socket` in the work directory.
    pub fn connect(work: Option<&WorkDir>) -> Result<LazyLink, LazyRestoreError> {
        let work = work.ok_or(LazyRestoreError::NoWorkDir)?;
        let path = socket_path(work);
        let sk = UnixStream::connect(&path)
            .map_err(|source| LazyRestoreError::Connect { path, source })?;
        Ok(LazyLink { sk })
    }

    /// Hands the userfaultfd of task `pid` (pid in the images) over.
    pub(crate) fn send_task(&mut self, pid: i32, uffd: &OwnedFd) -> Result<(), LazyRestoreError> {
        let err = |source| LazyRestoreError::Send { pid, source };
        self.sk.write_all(&pid.to_ne_bytes()).map_err(err)?;
        let fds = [uffd.as_raw_fd()];
        let byte = [0u8];
        sendmsg::<()>(
            self.sk.as_raw_fd(),
            &[IoSlice::new(&byte)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// Tells the daemon that task `pid` is a zombie (no memory).
    pub(crate) fn send_zombie(&mut self, pid: i32) -> Result<(), LazyRestoreError> {
        self.sk
            .write_all(&(-pid).to_ne_bytes())
            .map_err(|source| LazyRestoreError::Send { pid, source })
    }

    /// Tells the daemon that every task runs.
    pub(crate) fn finish(mut self) -> Result<(), LazyRestoreError> {
        self.sk
            .write_all(&RESTORE_FINISHED.to_ne_bytes())
            .map_err(|source| LazyRestoreError::Send { pid: 0, source })
    }
}

/// Creates the task's userfaultfd and registers its lazy VMAs; returns it
/// (the task keeps no descriptor of it). `None` when the task has no lazy
/// VMA.
pub(crate) fn register(
    r: &Remote<'_, '_>,
    images: &TaskImages,
) -> Result<Option<OwnedFd>, LazyRestoreError> {
    let pid = r.pid;
    let lazy: Vec<&VmaEntry> = images.mm.vmas.iter().filter(|v| is_lazy_vma(v)).collect();
    if lazy.is_empty() {
        return Ok(None);
    }
    let create = |source| LazyRestoreError::Create { pid, source };
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let remote = r
        .inj
        .syscall_ok(nr::USERFAULTFD, &[flags])
        .map_err(create)?;
    let remote = i32::try_from(remote).unwrap_or(-1);
    let stolen = steal_fd(pid, remote);
    close_remote(r.inj, remote).map_err(create)?;
    let fd = stolen.map_err(create)?;
    let uerr = |step, addr| {
        move |source| LazyRestoreError::Uffd {
            pid,
            step,
            addr,
            source,
        }
    };
    sysprobe::uffdio_api(fd.as_fd(), UFFD_EVENTS).map_err(uerr("ask for userfaultfd events", 0))?;
    for vma in lazy {
        uffd::register_missing(fd.as_fd(), vma.start, vma.end - vma.start)
            .map_err(uerr("register a lazy vma", vma.start))?;
    }
    Ok(Some(fd))
}
