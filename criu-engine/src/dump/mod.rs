//! DUMP: freeze a process tree, write its images, then kill, resume or
//! leave it stopped (CRIU's `criu/cr-dump.c` `cr_dump_tasks` /
//! `cr_dump_finish`).
//!
//! Order of a dump:
//!
//! 1. `pre-dump` notification (a refusal aborts before the task is touched);
//! 2. checks that need no freeze (no children, session leader, network
//!    lock);
//! 3. seize; ptrace state; VMAs and mapped files; injection stub;
//!    descriptors; memory through page pipes; injected queries; cure;
//! 4. the remaining images, and `inventory.img` last, so a directory
//!    without an inventory is never mistaken for a dump;
//! 5. `post-dump` notification (a refusal resumes the task, removes the
//!    inventory and fails the dump);
//! 6. the final state, then `stats-dump` (its frozen time runs until the
//!    tree is released, as CRIU's does).
//!
//! Any failure before the final state drops the guards: the injection is
//! cured and the task detached, so it carries on untouched.

pub mod dedup;
pub mod incremental;
pub mod inventory;
pub mod pre_dump;
pub mod stats;
pub mod task;

use std::time::{Duration, Instant};

use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use crate::config::{FinalState, NetworkLock};
use crate::files::FileTable;
use crate::mem::page_drain::PageDrainer;
use crate::mem::page_xfer::PageXferError;
use crate::mem::MemError;
use crate::notify::Notify;
use crate::opts::RequestOpts;
use crate::pstree::RealPid;
use crate::seize::{MemberKind, SeizeError, SeizeOptions, SeizedTree};
use criu_proto::images::{CoreEntry, PstreeEntry, TaskCoreEntry};

pub use stats::DumpStats;
pub use task::TaskDumpError;

/// What a successful dump reports.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    /// Timings and page counters (also in `stats-dump`).
    pub stats: DumpStats,
}

/// A dump failed; the task was left running unless it was already gone.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The request names no task.
    #[error("no task to dump")]
    NoTarget,
    /// The request has no images directory.
    #[error("no images directory to dump into")]
    NoImagesDir,
    /// The images directory fd could not be duplicated.
    #[error("cannot use the images directory")]
    ImagesDir(#[source] std::io::Error),
    /// The task does not exist.
    #[error("task {pid} does not exist")]
    NoSuchTask {
        /// The pid asked for.
        pid: RealPid,
    },
    /// A notification was refused by the client.
    #[error("{script} notification refused by the client")]
    Notify {
        /// The notification.
        script: &'static str,
    },
    /// Network locking was asked for a task with its own network namespace.
    #[error("task {pid} has its own network namespace; network locking is not supported yet (use network_lock=skip)")]
    NetworkLock {
        /// The task.
        pid: RealPid,
    },
    /// The (non-root) caller may not dump the task as it is once frozen.
    #[error(transparent)]
    Authz(#[from] crate::authz::AuthzError),
    /// Freezing the task failed.
    #[error("cannot freeze task {pid}")]
    Seize {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: SeizeError,
    },
    /// Dumping the task failed.
    #[error(transparent)]
    Task(#[from] TaskDumpError),
    /// Two processes share a kernel object CRIU cannot dump shared either
    /// (`CLONE_VM`, `CLONE_FS` or `CLONE_SIGHAND` without `CLONE_THREAD`,
    /// or `CLONE_FILES` other than with the parent).
    #[error("task {pid} shares its {what} with task {with}; dumping that is not supported yet")]
    SharedObject {
        /// The task.
        pid: RealPid,
        /// Its parent, which holds the same object.
        with: RealPid,
        /// Which object.
        what: &'static str,
    },
    /// The tree's pid namespaces cannot be dumped.
    #[error("task {pid} {what}; only a tree whose root is the init of its pid namespace is supported yet")]
    PidNamespace {
        /// The task.
        pid: RealPid,
        /// What is wrong.
        what: &'static str,
    },
    /// Writing the inventory or statistics failed.
    #[error("cannot finish the images")]
    Finish(#[source] ImageError),
    /// Holes cannot be punched in the parent images (`auto_dedup`).
    #[error(transparent)]
    Dedup(#[from] dedup::DedupError),
    /// `auto_dedup` with pages going to a page server: the parent images
    /// are on the server's side.
    #[error(
        "auto_dedup with a page server is not supported yet (the server holds the parent images)"
    )]
    DedupRemote,
    /// Pages of a process tree were to go to a page server.
    #[error(
        "sending the pages of a tree of {members} processes to a page server is not supported yet"
    )]
    PageServerTree {
        /// Processes in the tree.
        members: usize,
    },
    /// The worker serving the request died; the dump agent gives up.
    #[error("the worker serving this dump is gone; the dump is abandoned")]
    WorkerGone,
    /// Releasing the task after the dump failed.
    #[error("cannot release task {pid} after the dump")]
    Release {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: SeizeError,
    },
}

impl DumpError {
    /// The `cr_errno` CRIU reports for this failure (`ESRCH` when the task
    /// cannot be found or seized because it is gone).
    pub fn cr_errno(&self) -> Option<i32> {
        match self {
            DumpError::NoSuchTask { .. }
            | DumpError::Seize {
                source: SeizeError::Vanished { .. },
                ..
            } => Some(libc::ESRCH),
            DumpError::Authz(e) => Some(e.cr_errno()),
            _ => None,
        }
    }
}

/// Dumps the task named by `opts` into its images directory.
#[tracing::instrument(skip_all, fields(pid))]
pub fn run(opts: &RequestOpts, notify: &mut dyn Notify) -> Result<DumpOutcome, DumpError> {
    let pid = RealPid(opts.target.ok_or(DumpError::NoTarget)?.pid());
    tracing::Span::current().record("pid", pid.0);
    let images = opts.images_dir.as_ref().ok_or(DumpError::NoImagesDir)?;
    let dir = ImagesDir::from_fd(
        images.fd.try_clone().map_err(DumpError::ImagesDir)?,
        images.path.clone(),
    );
    if !crate::proc::path(pid.0, "stat").exists() {
        return Err(DumpError::NoSuchTask { pid });
    }
    if !notify.notify("pre-dump", None) {
        return Err(DumpError::Notify { script: "pre-dump" });
    }
    forget_old_dump(&dir);
    if opts.auto_dedup && opts.page_server {
        return Err(DumpError::DedupRemote);
    }
    task::precheck(pid, opts.shell_job)?;
    if opts.network_lock != NetworkLock::Skip
        && inventory::own_netns(pid).map_err(TaskDumpError::from)?
    {
        return Err(DumpError::NetworkLock { pid });
    }

    let keep = opts.track_mem && opts.final_state == FinalState::Alive;
    let track =
        incremental::TrackPlan::new(opts, &dir, pid.0 as u32, keep).map_err(TaskDumpError::from)?;

    // Declared before the tree: dropped (closed) after its release.
    let deferred = track.deferred.clone();
    let mut stats = DumpStats::default();
    let t0 = Instant::now();
    let seize_opts = SeizeOptions {
        timeout: Duration::from_secs(opts.timeout.into()),
    };
    let task =
        SeizedTree::seize(pid, &seize_opts).map_err(|source| DumpError::Seize { pid, source })?;
    let frozen_at = Instant::now();
    // The request was authorized before the freeze; a task that changed
    // its credentials since (an exec of a set-uid program) is caught here,
    // while it cannot change them any more. Dropping `task` resumes it.
    if let Some(caller) = &opts.caller {
        crate::authz::check_dump_target(caller, pid.0)?;
    }
    stats.freezing_time = frozen_at - t0;
    // Once the tree is frozen (and its network locked, which a task in the
    // host network namespace does not need), CRIU asks the client for
    // external files. An ack may carry `external` entries; the engine
    // supports no external resource yet, so only the answer matters. A
    // refusal resumes the task (dropping `task` detaches it).
    if !notify.notify("query-ext-files", None) {
        return Err(DumpError::Notify {
            script: "query-ext-files",
        });
    }

    let unix_ext = crate::files::unix_dump::UnixExternals::new(opts.ext_unix_sk, &opts.externals);
    let file_opts = crate::files::FileOptions {
        ghost_limit: opts.ghost_limit,
        link_remap: opts.link_remap,
        file_locks: opts.file_locks,
        leave_running: opts.final_state == FinalState::Alive,
        ttys: crate::files::tty::TtyOptions {
            shell_job: opts.shell_job,
            orphan_pts_master: opts.orphan_pts_master,
            keep_data: opts.final_state != FinalState::Dead,
        },
    };
    dump_tree(
        &task,
        &dir,
        track,
        opts.rpc_socket_ino,
        unix_ext,
        file_opts,
        &mut stats,
    )?;
    dir.write_single(
        ImageKind::Inventory,
        0,
        &inventory::inventory(opts.network_lock),
    )
    .map_err(DumpError::Finish)?;

    if !notify.notify("post-dump", None) {
        // The task resumes when `task` is dropped.
        forget_old_dump(&dir);
        return Err(DumpError::Notify {
            script: "post-dump",
        });
    }

    if crate::agent::worker_gone() {
        // Nobody will learn that the dump succeeded: the tree carries on.
        forget_old_dump(&dir);
        return Err(DumpError::WorkerGone);
    }
    let release = |source| DumpError::Release { pid, source };
    match opts.final_state {
        FinalState::Dead => task.kill(),
        FinalState::Alive => task.detach().map_err(release)?,
        FinalState::Stopped => task.detach_stopped().map_err(release)?,
    }
    // As CRIU counts it: frozen until the tree is released (killed and
    // waited for, or running again), the post-dump notification included;
    // the statistics are written after that, and the dump stands even if
    // they cannot be.
    stats.frozen_time = frozen_at.elapsed();
    if let Err(err) = dir.write_single(ImageKind::StatsDump, 0, &stats.entry()) {
        tracing::warn!(%err, "cannot write stats-dump");
    }
    // After the release: the tree need not stay frozen for these.
    deferred.close_all();
    if opts.auto_dedup {
        let d = dedup::dedup(&dir)?;
        tracing::info!(
            pages = d.pages,
            "older copies punched out of the parent images"
        );
    }
    tracing::info!(
        pages = stats.mem.pages_written,
        frozen_us = stats.frozen_time.as_micros() as u64,
        "dump finished"
    );
    Ok(DumpOutcome { stats })
}

/// Refuses processes that share their mm, fs or signal handlers with
/// their parent, or a descriptor table with a task that is not their
/// parent, as CRIU does (`dump_task_kobj_ids`). Returns, per member,
/// whether it shares its parent's descriptor table (`CLONE_FILES`), which
/// the images keep as equal `files_id`s.
fn check_unshared(tree: &SeizedTree) -> Result<Vec<bool>, DumpError> {
    use crate::sys::task_query::kcmp_object;
    const KCMP_FILES: i32 = 2;
    const KINDS: [(i32, &str); 3] = [
        (1, "address space"),
        (3, "fs (cwd, root, umask)"),
        (4, "signal handlers"),
    ];
    let alive = |pid: RealPid| {
        tree.members
            .iter()
            .any(|p| p.pid == pid && matches!(p.kind, MemberKind::Alive(_)))
    };
    let mut shares = vec![false; tree.members.len()];
    for (i, m) in tree.members.iter().enumerate().skip(1) {
        if !matches!(m.kind, MemberKind::Alive(_)) {
            continue;
        }
        if alive(m.ppid) {
            for (kind, what) in KINDS {
                if kcmp_object(m.pid.as_nix(), m.ppid.as_nix(), kind) == Ok(0) {
                    return Err(DumpError::SharedObject {
                        pid: m.pid,
                        with: m.ppid,
                        what,
                    });
                }
            }
            shares[i] = kcmp_object(m.pid.as_nix(), m.ppid.as_nix(), KCMP_FILES) == Ok(0);
        }
        if shares[i] {
            continue;
        }
        // A table of its own: no other member may hold it but through
        // its parent.
        for (j, o) in tree.members.iter().enumerate().take(i) {
            if matches!(o.kind, MemberKind::Alive(_))
                && !shares[j]
                && kcmp_object(m.pid.as_nix(), o.pid.as_nix(), KCMP_FILES) == Ok(0)
            {
                return Err(DumpError::SharedObject {
                    pid: m.pid,
                    with: o.pid,
                    what: "descriptor table (not with its parent)",
                });
            }
        }
    }
    Ok(shares)
}

/// `TASK_DEAD` of `tc.task_state`.
const TASK_DEAD: u32 = 2;
/// `CORE_ENTRY__MARCH__X86_64`.
const MARCH_X86_64: i32 = 1;

/// Writes `seccomp.img` (as CRIU, before any task), the images of every
/// task of the frozen tree, then the images they share (`files.img`,
/// `pstree.img`, `timens-0.img`).
/// `rpc_socket_ino` is the worker's end of a CRIU-RPC connection, whose peer
/// in the tree is saved as the service socket (self-dump).
fn dump_tree(
    tree: &SeizedTree,
    dir: &ImagesDir,
    track: incremental::TrackPlan,
    rpc_socket_ino: Option<u64>,
    unix_ext: crate::files::unix_dump::UnixExternals,
    file_opts: crate::files::FileOptions,
    stats: &mut DumpStats,
) -> Result<(), DumpError> {
    let mut files = FileTable::new();
    files.configure(file_opts);
    files.set_unix_externals(unix_ext);
    let result = dump_members(tree, dir, track, rpc_socket_ino, &mut files, stats);
    if result.is_err() || file_opts.leave_running {
        files.rollback();
    }
    result
}

/// [`dump_tree`] with its file table.
fn dump_members(
    tree: &SeizedTree,
    dir: &ImagesDir,
    track: incremental::TrackPlan,
    rpc_socket_ino: Option<u64>,
    files: &mut FileTable,
    stats: &mut DumpStats,
) -> Result<(), DumpError> {
    if track.remote.is_some() && tree.members.len() > 1 {
        return Err(DumpError::PageServerTree {
            members: tree.members.len(),
        });
    }
    // Every process of the tree is tracked and left to the same parent
    // images; the page server serves single processes only.
    let member_plan = track.for_member().map_err(TaskDumpError::from)?;
    let drain_err = |e| TaskDumpError::from(MemError::from(PageXferError::from(e)));
    let drainer = match track.remote {
        None => Some(PageDrainer::start().map_err(drain_err)?),
        Some(_) => None,
    };
    let mut track = Some(track);
    let modes: Vec<Vec<_>> = tree
        .processes()
        .map(|p| {
            std::iter::once(p.leader())
                .chain(p.threads())
                .map(|t| (t.pid(), t.seccomp_mode()))
                .collect()
        })
        .collect();
    let seccomp = crate::task_core::seccomp::SeccompDump::collect(&modes)
        .map_err(|e| TaskDumpError::Core(e.into()))?;
    dir.write_single(ImageKind::Seccomp, 0, &seccomp.entry())
        .map_err(TaskDumpError::from)?;
    let mut shmem = crate::mem::shmem::ShmemDump::default();
    files.set_rpc_socket(rpc_socket_ino);
    let mut pstree: Vec<PstreeEntry> = Vec::with_capacity(tree.members.len());
    let mut next_id = 2;
    let root = tree.members[0].pid;
    let ours = inventory::pid_ns(None).map_err(TaskDumpError::from)?;
    let root_ns = inventory::pid_ns(Some(root)).map_err(TaskDumpError::from)?;
    let own_pidns = root_ns != ours;
    if own_pidns
        && inventory::inner_ids(root, root)
            .map_err(TaskDumpError::from)?
            .0
            != 1
    {
        return Err(DumpError::PidNamespace {
            pid: root,
            what: "is in a pid namespace it is not the init of",
        });
    }
    let shares_files = check_unshared(tree)?;
    // The descriptor table id of every live member, by member index.
    let mut files_ids = vec![0u32; tree.members.len()];
    for (i, m) in tree.members.iter().enumerate() {
        if crate::agent::worker_gone() {
            return Err(DumpError::WorkerGone);
        }
        if inventory::pid_ns(Some(m.pid)).map_err(TaskDumpError::from)? != root_ns {
            return Err(DumpError::PidNamespace {
                pid: m.pid,
                what: "is in a nested pid namespace",
            });
        }
        // Parents come first: the parent's entry is already there.
        let ppid = if i == 0 {
            0
        } else {
            let at = tree.members.iter().position(|p| p.pid == m.ppid);
            at.map_or(0, |at| pstree[at].pid)
        };
        match &m.kind {
            MemberKind::Alive(p) => {
                let plan = match track.take() {
                    Some(root) => root,
                    None => member_plan.for_member().map_err(TaskDumpError::from)?,
                };
                let parent_files = shares_files[i]
                    .then(|| tree.members.iter().position(|p| p.pid == m.ppid))
                    .flatten()
                    .map(|at| files_ids[at]);
                files_ids[i] = parent_files.unwrap_or(next_id);
                let slot = task::TaskSlot {
                    id: next_id,
                    ppid,
                    own_pidns,
                    parent_files,
                };
                let (mem, entry) = task::dump(
                    p,
                    dir,
                    plan,
                    stats,
                    files,
                    &mut shmem,
                    &seccomp,
                    slot,
                    drainer.as_ref(),
                )?;
                next_id += 1;
                stats.mem.add(&mem);
                pstree.push(entry);
            }
            MemberKind::Zombie { exit_code, comm } => {
                let (vpid, vpgid, vsid) =
                    inventory::inner_ids(m.pid, m.pid).map_err(TaskDumpError::from)?;
                let core = CoreEntry {
                    mtype: MARCH_X86_64,
                    tc: Some(TaskCoreEntry {
                        task_state: TASK_DEAD,
                        exit_code: *exit_code,
                        comm: comm.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                dir.write_single(ImageKind::Core, vpid.into(), &core)
                    .map_err(TaskDumpError::from)?;
                pstree.push(PstreeEntry {
                    pid: vpid,
                    ppid,
                    pgid: vpgid,
                    sid: vsid,
                    threads: vec![vpid],
                });
            }
        }
    }
    if let Some(d) = drainer {
        stats.memwrite_time += d.finish().map_err(drain_err)?;
    }
    files
        .finish_ttys(&pstree, dir)
        .map_err(TaskDumpError::from)?;
    files.finish_sockets().map_err(TaskDumpError::from)?;
    dir.write_all(ImageKind::Files, 0, files.entries())
        .map_err(TaskDumpError::from)?;
    files.write_sk_queues(dir).map_err(TaskDumpError::from)?;
    files.write_fifo_data(dir).map_err(TaskDumpError::from)?;
    files.write_extra(dir).map_err(TaskDumpError::from)?;
    if !files.pipes().is_empty() {
        let mut w = dir
            .create_image(ImageKind::PipesData, 0)
            .map_err(TaskDumpError::from)?;
        for p in files.pipes() {
            w.write_entry_with_extra(&p.entry, &p.data)
                .map_err(TaskDumpError::from)?;
        }
        w.finish().map_err(TaskDumpError::from)?;
    }
    dir.write_all(ImageKind::Pstree, 0, &pstree)
        .map_err(TaskDumpError::from)?;
    dir.write_single(ImageKind::Timens, 0, &inventory::timens())
        .map_err(TaskDumpError::from)?;
    Ok(())
}

/// Removes the inventory of an earlier dump in the same directory, so that
/// a dump failing half-way never leaves a directory that looks complete.
fn forget_old_dump(dir: &ImagesDir) {
    let name = ImageKind::Inventory.file_name(0);
    match nix::unistd::unlinkat(
        dir.fd(),
        name.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => {
            tracing::warn!(dir = %dir.path().display(), %err, "cannot remove an old inventory.img")
        }
    }
}
