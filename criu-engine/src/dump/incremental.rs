//! Incremental dumps: the `parent` link, the parent's pagemap, and the
//! memory tracker's view of what changed (CRIU's `--prev-images-dir`
//! handling in `criu/image.c` and the `PE_PARENT` decisions of
//! `criu/mem.c`, with [`crate::mem::dirty`] in place of soft-dirty bits).

use std::cell::RefCell;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use criu_proto::img::{ImageError, ImagesDir};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::config::PreDumpMode;
use crate::inject::Injection;
use crate::mem::dirty::{self, DirtyError, Ranges, Tracker};
use crate::mem::page_server::{PageServerError, Sender};
use crate::mem::vma::Vma;
use crate::mem::{Incremental, PageMode};
use crate::opts::RequestOpts;
use crate::proc::ProcError;
use crate::pstree::RealPid;

/// Name of the link to the previous images directory (CRIU's
/// `CR_PARENT_LINK`).
pub const PARENT_LINK: &str = "parent";

/// The parent images could not be linked or read, or tracking failed.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    /// The `parent` link could not be made.
    #[error("cannot link {} to the parent images {target}", dir.display())]
    Link {
        /// The images directory.
        dir: std::path::PathBuf,
        /// The link's target.
        target: String,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The parent directory could not be opened.
    #[error("cannot open the parent images {target}")]
    OpenParent {
        /// The link's target.
        target: String,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The parent pagemap could not be read.
    #[error("cannot read the parent pagemap")]
    ParentPagemap(#[source] ImageError),
    /// `/proc/<pid>/pagemap` could not be opened.
    #[error("cannot open the pagemap of task {pid}")]
    Pagemap {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// The memory tracker failed.
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    /// The page server could not be reached.
    #[error(transparent)]
    PageServer(#[from] PageServerError),
    /// The `ps.fd` / `--ps-socket` descriptor cannot be used.
    #[error("cannot use page server socket fd {fd}")]
    PsSocket {
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: crate::inject::InjectError,
    },
}

/// Makes `dir/parent` point at `parent_img` (replacing an old link) and
/// opens it.
pub fn link_parent(
    dir: &ImagesDir,
    parent_img: Option<&str>,
) -> Result<Option<ImagesDir>, IncrementalError> {
    let Some(target) = parent_img.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let link_err = |source| IncrementalError::Link {
        dir: dir.path().to_owned(),
        target: target.to_owned(),
        source,
    };
    match nix::unistd::unlinkat(
        dir.fd(),
        PARENT_LINK,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(link_err(e)),
    }
    nix::unistd::symlinkat(target, dir.fd(), PARENT_LINK).map_err(link_err)?;
    open_parent(dir)
        .map_err(|source| IncrementalError::OpenParent {
            target: target.to_owned(),
            source,
        })
        .map(Some)
}

/// Opens `dir/parent`.
pub fn open_parent(dir: &ImagesDir) -> Result<ImagesDir, Errno> {
    let fd: OwnedFd = openat(
        dir.fd(),
        PARENT_LINK,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(ImagesDir::from_fd(fd, dir.path().join(PARENT_LINK)))
}

/// The pages the parent's `pagemap-<vpid>.img` covers (present or itself
/// in a parent); `None` without such a pagemap.
pub fn parent_coverage(parent: &ImagesDir, vpid: u32) -> Result<Option<Ranges>, IncrementalError> {
    let Some(map) = parent
        .pagemap(vpid)
        .map_err(IncrementalError::ParentPagemap)?
    else {
        return Ok(None);
    };
    Ok(Some(Ranges::from_unsorted(
        map.runs()
            .map(|r| (r.vaddr, r.vaddr + r.len_bytes()))
            .collect(),
    )))
}

/// What a dump is asked to do about memory tracking, and where its pages
/// go.
#[derive(Default)]
pub struct TrackPlan {
    /// How pages leave the task.
    pub mode: PageMode,
    /// The parent images (`parent` link), if any.
    pub parent: Option<ImagesDir>,
    /// Keep tracking after this dump (pre-dumps; `track_mem` with the task
    /// left running).
    pub keep: bool,
    /// VMAs without read permission are not saved (pre-dump read mode).
    pub skip_unreadable: bool,
    /// The page server the pages go to, its pagemap already open.
    pub remote: Option<Sender>,
    /// The page server has parent images for this task.
    pub remote_parent: bool,
    /// Where the engine's tracker descriptors wait to be closed.
    pub deferred: DeferredClose,
}

/// Tracker descriptors whose close waits until the tree is released: the
/// last close of a userfaultfd unprotects every tracked page, which takes
/// long on a large address space and must not keep the tree frozen.
#[derive(Debug, Clone, Default)]
pub struct DeferredClose(Rc<RefCell<Vec<OwnedFd>>>);

impl DeferredClose {
    fn push(&self, fd: OwnedFd) {
        self.0.borrow_mut().push(fd);
    }

    /// Closes every descriptor left here.
    pub fn close_all(&self) {
        self.0.borrow_mut().clear();
    }
}

impl TrackPlan {
    /// The plan of a dump (`keep`: tracking goes on after it) of task
    /// `vpid` into `dir` under `opts`: the `parent` link, and the page
    /// server connection when pages go to one.
    pub fn new(
        opts: &RequestOpts,
        dir: &ImagesDir,
        vpid: u32,
        keep: bool,
    ) -> Result<TrackPlan, IncrementalError> {
        let parent = link_parent(dir, opts.parent_img.as_deref())?;
        let mut remote = if let Some(fd) = opts.ps_socket {
            let me = RealPid(std::process::id() as i32);
            let sk = crate::inject::steal_fd(me, fd)
                .map_err(|source| IncrementalError::PsSocket { fd, source })?;
            Some(Sender::from_stream(TcpStream::from(sk)))
        } else if opts.page_server {
            let address = opts.address.as_deref().unwrap_or("127.0.0.1");
            Some(Sender::connect(address, opts.port)?)
        } else {
            None
        };
        let remote_parent = match &mut remote {
            Some(sender) => sender.open(vpid)?,
            None => false,
        };
        Ok(TrackPlan {
            mode: match opts.pre_dump_mode {
                PreDumpMode::Splice => PageMode::Splice,
                PreDumpMode::Read => PageMode::Read,
            },
            parent,
            keep,
            skip_unreadable: opts.pre_dump_mode == PreDumpMode::Read && keep,
            remote,
            remote_parent,
            deferred: DeferredClose::default(),
        })
    }
}

impl TrackPlan {
    /// The plan for another process of the same tree: same parent images,
    /// mode and tracking, no page server (pages of a tree go to one only
    /// through the root's connection, which trees do not use yet).
    pub fn for_member(&self) -> Result<TrackPlan, IncrementalError> {
        let parent = match &self.parent {
            Some(p) => Some(ImagesDir::from_fd(
                p.fd()
                    .try_clone()
                    .map_err(|e| IncrementalError::OpenParent {
                        target: p.path().display().to_string(),
                        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
                    })?,
                p.path(),
            )),
            None => None,
        };
        Ok(TrackPlan {
            mode: self.mode,
            parent,
            keep: self.keep,
            skip_unreadable: self.skip_unreadable,
            remote: None,
            remote_parent: false,
            deferred: self.deferred.clone(),
        })
    }
}

/// The tracker of one dump, with what it found.
pub struct Tracking {
    tracker: Option<Tracker>,
    written: Ranges,
    /// `Some(Some(coverage))`: a local parent pagemap; `Some(None)`: a
    /// page server's parent; `None`: no usable parent.
    parent: Option<Option<Ranges>>,
    deferred: DeferredClose,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if let Some(t) = self.tracker.take() {
            self.deferred.push(t.into_fd());
        }
    }
}

impl Tracking {
    /// Attaches the tracker (when tracking is wanted, a parent is given, or
    /// an earlier pre-dump left one in the task) and reads what was written.
    /// Unless `plan.keep`, the tracker is closed in the task right away, so
    /// the task's descriptors no longer show it. The task must be frozen.
    pub fn start(
        inj: &Injection<'_>,
        pid: RealPid,
        vpid: u32,
        vmas: &[Vma],
        plan: &TrackPlan,
    ) -> Result<Tracking, IncrementalError> {
        let inert = Tracking {
            tracker: None,
            written: Ranges::default(),
            parent: None,
            deferred: plan.deferred.clone(),
        };
        let wanted = plan.keep || plan.parent.is_some() || dirty::find_in_task(pid).is_some();
        if !wanted || !dirty::kernel_supports() {
            return Ok(inert);
        }
        let mut tracker = Tracker::attach(inj, pid)?;
        let result = (|| -> Result<(Ranges, Option<Option<Ranges>>), IncrementalError> {
            let path = crate::proc::path(pid.0, "pagemap");
            let pagemap =
                std::fs::File::open(&path).map_err(|source| IncrementalError::Pagemap {
                    pid,
                    source: ProcError::Read { path, source },
                })?;
            let written = tracker.scan(&pagemap, vmas, plan.skip_unreadable)?;
            let parent = match (&plan.parent, tracker.continued()) {
                (Some(p), true) => parent_coverage(p, vpid)?.map(Some),
                _ => None,
            };
            // Pages sent to a page server with parent images: that parent
            // holds every tracked page (`scan` keeps that true).
            let parent = match parent {
                None if plan.remote.is_some() && plan.remote_parent && tracker.continued() => {
                    Some(None)
                }
                p => p,
            };
            Ok((written, parent))
        })();
        // Without a complete scan the tracker's bits are spent: drop it so
        // the next dump starts over with everything.
        if result.is_err() || !plan.keep {
            tracker.release(inj)?;
        }
        let (written, parent) = result?;
        Ok(Tracking {
            tracker: Some(tracker),
            written,
            parent,
            deferred: plan.deferred.clone(),
        })
    }

    /// What the memory dump needs to leave unchanged pages to the parent.
    pub fn incremental(&self) -> Option<Incremental<'_>> {
        self.parent.as_ref().map(|parent| Incremental {
            written: &self.written,
            parent: parent.as_ref(),
        })
    }

    /// The tracker's descriptor in the task when it stays there (the dump
    /// of descriptors must not see it).
    pub fn kept_fd(&self) -> Option<i32> {
        self.tracker.as_ref().and_then(Tracker::remote_fd)
    }

    /// Closes the tracker in the task (after a failure that spent its bits).
    pub fn abandon(&mut self, inj: &Injection<'_>) {
        if let Some(t) = &mut self.tracker {
            if let Err(err) = t.release(inj) {
                tracing::warn!(?err, "cannot close the memory tracker in the task");
            }
        }
    }
}
