//! Restore of a single-process dump (all its threads), driven from outside
//! the new task (CRIU's `cr_restore_tasks` in `criu/cr-restore.c` and the
//! restorer blob `criu/pie/restorer.c`, which we replace with injected
//! syscalls).
//!
//! 1. [`images`]: read and check every image; refuse before creating
//!    anything.
//! 2. [`tree`]: `clone3` with the dumped pid; the child sets up its
//!    descriptors ([`files`]), session, cwd, root, umask and limits, then
//!    stops.
//! 3. The engine seizes it and injects: the address space ([`mm`]), then
//!    signal handlers, alternate stack, rseq, TLS, timers ([`task`]);
//!    the other threads are cloned from it with their tids ([`threads`]).
//! 4. [`finish`]: registers and XSAVE state at the exit of the stub's
//!    `munmap`; detach.
//!
//! Notifications: `pre-restore` first, `post-restore` (with the pid) once
//! the task is complete, `pre-resume` before it runs, `post-resume` after.
//! A failure at any step kills the new task ([`tree::RestoredTree`]); the
//! images are only read.

mod anon_fd;
mod child;
mod creds;
mod fifo;
mod files;
mod finish;
mod guards;
mod helpers;
mod images;
pub mod lazy;
mod locks;
mod memfd;
mod mm;
pub(crate) mod pages;
mod posix_timers;
mod pstree;
mod remap;
mod seccomp;
mod shmem;
mod task;
mod threads;
mod tree;
mod tty;
mod unix_sk;

use std::os::fd::AsFd;

use criu_proto::img::ImagesDir;
use nix::errno::Errno;

use crate::config::FinalState;
use crate::inject::{InjectError, Injection};
use crate::notify::Notify;
use crate::opts::RequestOpts;
use crate::pstree::RealPid;
use crate::seize::{SeizeError, SeizedTask};
pub use anon_fd::AnonFdError;
use files::inherit_matches;
pub use images::ImagesError;
pub use mm::MmError;
pub use task::TaskError;
pub use threads::ThreadError;
pub use tree::TreeError;
pub use tty::TtyRestoreError;

/// What a successful restore produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Host pid of the restored root task.
    pub root_pid: i32,
}

/// Why a restore failed. Whatever it created is gone by the time this is
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A terminal of the images cannot be restored.
    #[error(transparent)]
    Tty(#[from] tty::TtyRestoreError),
    /// The request named no images directory.
    #[error("no images directory")]
    NoImagesDir,
    /// The images directory descriptor cannot be duplicated.
    #[error("cannot use the images directory")]
    ImagesDir {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A notification was refused by the client.
    #[error("{script} notification failed")]
    Aborted {
        /// Notification name.
        script: &'static str,
    },
    /// The images hold a task the (non-root) caller may not restore.
    #[error(transparent)]
    Authz(#[from] crate::authz::AuthzError),
    /// The images are unreadable, inconsistent or unsupported.
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// A unix socket cannot be restored as asked.
    #[error(transparent)]
    UnixSk(#[from] unix_sk::UnixRestoreError),
    /// An epoll or timerfd cannot be completed.
    #[error(transparent)]
    AnonFd(#[from] AnonFdError),
    /// The descriptors of the task cannot be planned.
    #[error("cannot plan the descriptors of task {pid}")]
    FdPlan {
        /// Task (pid in the images).
        pid: u32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The task cannot be created or failed to set itself up.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The new task cannot be seized.
    #[error("cannot seize the new task {pid}")]
    Seize {
        /// Task.
        pid: RealPid,
        /// Cause.
        #[source]
        source: SeizeError,
    },
    /// The injection stub cannot be set up or torn down.
    #[error("task {pid}: cannot {step}")]
    Inject {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// The address space cannot be rebuilt.
    #[error(transparent)]
    Mm(#[from] MmError),
    /// The per-task state cannot be restored.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A memfd cannot be sealed again.
    #[error(transparent)]
    Memfd(#[from] memfd::MemfdError),
    /// A thread cannot be restored.
    #[error(transparent)]
    Thread(#[from] ThreadError),
    /// A ptrace request on the restored task failed.
    #[error("task {pid}: cannot {step}")]
    Ptrace {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: SeizeError,
    },
    /// The lazy-pages daemon cannot be reached or fed.
    #[error(transparent)]
    Lazy(#[from] lazy::LazyRestoreError),
    /// The pid file cannot be written.
    #[error("cannot write the pid file {}", path.display())]
    Pidfile {
        /// Path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
}

impl RestoreError {
    /// The errno CRIU reports to RPC clients for this failure, if any
    /// (`EEXIST` when a pid of the images is taken).
    pub fn cr_errno(&self) -> Option<i32> {
        match self {
            RestoreError::Tree(TreeError::PidTaken { .. }) => Some(libc::EEXIST),
            RestoreError::Authz(e) => Some(e.cr_errno()),
            _ => None,
        }
    }
}

/// A restored task held by the engine until the whole tree is complete.
struct Held {
    task: SeizedTask,
    threads: Vec<SeizedTask>,
    stopped: bool,
}

impl Held {
    /// Kills the task's whole thread group and collects every thread.
    fn kill(self) {
        let pid = self.task.pid();
        if let Err(errno) = nix::sys::signal::kill(pid.as_nix(), nix::sys::signal::Signal::SIGKILL)
        {
            tracing::warn!(%pid, %errno, "cannot kill a half-restored process");
        }
        for t in self.threads {
            t.reap_killed();
        }
        self.task.kill();
    }
}

/// Restores the dump in `opts.images_dir`.
#[tracing::instrument(skip_all)]
pub fn run(opts: &RequestOpts, notify: &mut dyn Notify) -> Result<RestoreOutcome, RestoreError> {
    if !notify.notify("pre-restore", None) {
        return Err(RestoreError::Aborted {
            script: "pre-restore",
        });
    }
    let dir = opts.images_dir.as_ref().ok_or(RestoreError::NoImagesDir)?;
    let fd = dir
        .fd
        .try_clone()
        .map_err(|source| RestoreError::ImagesDir { source })?;
    let dir = ImagesDir::from_fd(fd, dir.path.clone());
    let inherit = &opts.inherit_fds;
    let mut tree_images = pstree::load(&dir, &|f| {
        inherit.iter().any(|i| inherit_matches(&i.key, f))
    })?;
    let memfds = memfd::load(&dir, &tree_images.root().files)?;
    let file_locks = locks::load(&dir, opts.file_locks)?;
    let alive: Vec<Option<&images::TaskImages>> =
        tree_images.tasks.iter().map(|t| t.alive()).collect();
    if let Some(caller) = &opts.caller {
        for images in alive.iter().flatten() {
            let th = &images.thread_core;
            crate::authz::check_restore_creds(caller, images.pid(), th.creds.as_ref())?;
            crate::authz::check_restore_sched(
                caller,
                images.pid(),
                th.sched_nice,
                th.sched_policy,
                images.tc.oom_score_adj,
            )?;
        }
    }
    let mut ttys = tty::TtyImages::load(&dir)?;
    ttys.prepare(
        &tree_images,
        inherit,
        opts.shell_job,
        opts.orphan_pts_master,
        notify,
    )?;
    unix_sk::check_externals(&alive, opts.ext_unix_sk, &|f| {
        inherit.iter().any(|i| inherit_matches(&i.key, f))
    })?;
    let fds = files::FdPlan::new(
        &alive,
        inherit,
        &tree_images.pipe_data,
        &ttys,
        &tree_images.sk_queues,
        &tree_images.fifo_data,
        &memfds,
    )
    .map_err(|(pid, source)| RestoreError::FdPlan { pid, source })?;
    let mut shared = shmem::load(&dir, &tree_images)?;
    shared.memfd = memfds;
    shared.locks = file_locks;
    let mut lazy = if opts.lazy_pages {
        Some(lazy::LazyLink::connect(opts.work_dir.as_ref())?)
    } else {
        None
    };
    // Lazy VMAs stay empty: nothing to share before the fork.
    if lazy.is_none() {
        shared.premaps = std::sync::Arc::new(mm::Premaps::prepare(&tree_images));
    }
    tree::check_single_threaded()?;
    let tree = tree::create(&tree_images, fds, opts.shell_job, opts.restore_sibling)?;
    if let Some(p) = std::sync::Arc::get_mut(&mut shared.premaps) {
        p.forked();
    }
    tracing::info!(pid = %tree.pid(), tasks = tree_images.tasks.len(), "tree created");
    ttys.release_orphan();
    let mut held: Vec<Held> = Vec::new();
    let result = std::thread::scope(|s| {
        // Every task is forked: a helper thread may compare pages now.
        if shared.premaps.any() {
            let (premaps, diffs) = (shared.premaps.clone(), shared.diffs.clone());
            let images = &tree_images;
            diffs.start();
            let spawned = std::thread::Builder::new()
                .name("page-diff".into())
                .spawn_scoped(s, move || diffs.compute_all(&premaps, images));
            if let Err(e) = spawned {
                tracing::debug!(err = %e, "cannot start the page-diff thread");
                shared.diffs.finish();
            }
        }
        let result = restore_all(
            &tree_images,
            tree.host_pids(),
            opts,
            notify,
            &mut shared,
            &mut held,
            lazy.as_mut(),
        );
        shared.diffs.finish();
        result
    });
    let result = result.and_then(|()| Ok(shared.memfd.seal()?));
    if let Err(e) = result {
        for h in held.into_iter().rev() {
            h.kill();
        }
        return Err(e);
    }
    // Every task opened and mapped its files: ghost files and link remaps
    // vanish again.
    tree_images.remaps.clean();
    // Children first: a parent never runs while its children are held.
    for h in held.into_iter().rev() {
        let pid = h.task.pid();
        let detach_err = |pid| {
            move |source| RestoreError::Ptrace {
                pid,
                step: "detach",
                source,
            }
        };
        if h.stopped {
            h.task.detach_stopped()
        } else {
            h.task.detach()
        }
        .map_err(detach_err(pid))?;
        for t in h.threads {
            let tid = t.pid();
            t.detach().map_err(detach_err(tid))?;
        }
    }
    let root = tree.commit();
    if let Some(link) = lazy {
        link.finish()?;
    }
    notify.notify("post-resume", None);
    if let Some(path) = &opts.pidfile {
        write_pidfile(opts, path, root.as_raw())?;
    }
    if let Some(status) = &opts.status_fd {
        if let Err(errno) = nix::unistd::write(status.as_fd(), &[0]) {
            tracing::warn!(%errno, "cannot write to the status fd");
        }
    }
    Ok(RestoreOutcome {
        root_pid: root.as_raw(),
    })
}

/// Seizes and restores every live task, then sends the notifications that
/// precede the resume.
fn restore_all(
    tree: &pstree::TreeImages,
    host: &[RealPid],
    opts: &RequestOpts,
    notify: &mut dyn Notify,
    shared: &mut shmem::SharedMemory,
    held: &mut Vec<Held>,
    mut lazy: Option<&mut lazy::LazyLink>,
) -> Result<(), RestoreError> {
    let mut anon_done = std::collections::HashSet::new();
    for (t, &pid) in tree.tasks.iter().zip(host) {
        let Some(images) = t.alive() else {
            if let Some(link) = lazy.as_deref_mut() {
                link.send_zombie(i32::try_from(t.pstree.pid).unwrap_or(i32::MAX))?;
            }
            continue;
        };
        let task = SeizedTask::attach_child_stopped(pid)
            .map_err(|source| RestoreError::Seize { pid, source })?;
        // The new task has root's credentials until its restore sets its
        // own, so its memory file is root's: opened with the worker's own
        // identity even when the request runs with a non-root caller's.
        crate::authz::with_worker_fs_ids(opts.caller.as_ref(), || task.open_mem())
            .map_err(|source| RestoreError::Seize { pid, source })?;
        let stopped =
            opts.final_state == FinalState::Stopped || images.tc.task_state == images::TASK_STOPPED;
        held.push(Held {
            task,
            threads: Vec::new(),
            stopped,
        });
        let h = held.last_mut().expect("just pushed");
        restore_task(
            &h.task,
            images,
            shared,
            &mut h.threads,
            lazy.as_deref_mut(),
            &mut anon_done,
        )?;
    }
    if !notify.notify("post-restore", Some(host[0].0)) {
        return Err(RestoreError::Aborted {
            script: "post-restore",
        });
    }
    if !notify.notify("pre-resume", None) {
        return Err(RestoreError::Aborted {
            script: "pre-resume",
        });
    }
    Ok(())
}

/// Everything between the seize and the detach of one task.
fn restore_task(
    task: &SeizedTask,
    images: &images::TaskImages,
    shared: &mut shmem::SharedMemory,
    threads: &mut Vec<SeizedTask>,
    lazy: Option<&mut lazy::LazyLink>,
    anon_done: &mut std::collections::HashSet<u32>,
) -> Result<(), RestoreError> {
    let pid = task.pid();
    let inject_err = |step| move |source| RestoreError::Inject { pid, step, source };
    let at = mm::stub_place(pid, images)?;
    let inj = Injection::new_at(task, at).map_err(inject_err("map the injection stub"))?;
    let remote = mm::Remote { inj: &inj, pid };
    mm::restore_mm(&remote, task, images, shared, lazy)?;
    guards::install(&remote, &images.guards)?;
    locks::restore(&remote, images.pid(), &shared.locks)?;
    task::restore_state(&remote, task, images)?;
    threads::restore_all(&inj, &images.threads, threads)?;
    anon_fd::finish(&remote, images, anon_done)?;
    if let Some(t) = &images.tc.timers {
        posix_timers::restore(&remote, &t.posix)?;
    }
    seccomp::install_all(&inj, images, threads)?;
    // The dumped parent-death signal replaces the SIGKILL guard as late as
    // the stub allows: only the registers and the detach come after it.
    task::set_pdeath(&remote, images.thread_core.pdeath_sig.unwrap_or(0).into())?;
    let regs = finish::regs_from_image(&images.thread_info.gpregs);
    let current = task.xstate().map_err(|source| RestoreError::Ptrace {
        pid,
        step: "read the FPU state",
        source,
    })?;
    let xstate = finish::xstate_from_image(&images.thread_info.fpregs, &current);
    inj.finish_with_regs(&regs, Some(&xstate))
        .map_err(inject_err("set the final registers"))?;
    task.set_sigmask(images.tc.blk_sigset)
        .map_err(|source| RestoreError::Ptrace {
            pid,
            step: "set the signal mask",
            source,
        })
}

fn write_pidfile(opts: &RequestOpts, path: &std::path::Path, pid: i32) -> Result<(), RestoreError> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let err = |source| RestoreError::Pidfile {
        path: path.to_owned(),
        source,
    };
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let fd = match (&opts.work_dir, path.is_relative()) {
        (Some(work), true) => nix::fcntl::openat(&work.fd, path, flags, mode),
        _ => nix::fcntl::open(path, flags, mode),
    }
    .map_err(err)?;
    nix::unistd::write(&fd, pid.to_string().as_bytes())
        .map(drop)
        .map_err(err)
}
