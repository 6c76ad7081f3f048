//! PRE_DUMP / SINGLE_PRE_DUMP / `criu pre-dump`: the task's memory only,
//! while the task is frozen as briefly as possible (CRIU's
//! `cr_pre_dump_tasks` in `criu/cr-dump.c`).
//!
//! The whole tree is frozen (every process, every thread) to read each
//! process's VMAs and to scan-and-rearm its memory tracker
//! ([`crate::mem::dirty`]); each process has its own tracker (one per mm). In `splice` mode the pages are moved
//! through page pipes before the task resumes; in `read` mode only the
//! list of pages is made while frozen, and the pages are copied with
//! `process_vm_readv` after the task runs again. A pre-dump writes
//! `pagemap-<vpid>.img` and `pages-<id>.img` per process and an inventory; pages unchanged
//! since the parent images become `PE_PARENT` entries. The task always
//! resumes, whatever the final-state options say, and the tracker stays in
//! it for the next dump.

use std::time::{Duration, Instant};

use criu_proto::img::{ImageKind, ImagesDir};

use crate::config::PreDumpMode;
use crate::inject::Injection;
use crate::mem::{self, vma, MemDump, PageMode};
use crate::opts::RequestOpts;
use crate::pstree::RealPid;
use crate::seize::{MemberKind, SeizeOptions, SeizedTask, SeizedTree};

use super::incremental::{TrackPlan, Tracking};
use super::task::{precheck, TaskDumpError};
use super::{check_unshared, forget_old_dump, inventory, DumpError, DumpOutcome, DumpStats};

/// Pre-dumps the tree named by `opts` (every live process, all threads
/// frozen together) into its images directory.
#[tracing::instrument(skip_all, fields(pid))]
pub fn run(opts: &RequestOpts) -> Result<DumpOutcome, DumpError> {
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
    forget_old_dump(&dir);
    if opts.auto_dedup && opts.page_server {
        return Err(DumpError::DedupRemote);
    }
    precheck(pid, opts.shell_job)?;
    let (root_vpid, _, _) = inventory::inner_ids(pid, pid).map_err(TaskDumpError::from)?;
    let mut root_plan =
        Some(TrackPlan::new(opts, &dir, root_vpid, true).map_err(TaskDumpError::from)?);

    let mut stats = DumpStats::default();
    let t0 = Instant::now();
    let seize_opts = SeizeOptions {
        timeout: Duration::from_secs(opts.timeout.into()),
    };
    let tree =
        SeizedTree::seize(pid, &seize_opts).map_err(|source| DumpError::Seize { pid, source })?;
    let frozen_at = Instant::now();
    stats.freezing_time = frozen_at - t0;
    let started = Instant::now();
    if root_plan.as_ref().is_some_and(|p| p.remote.is_some()) && tree.members.len() > 1 {
        return Err(DumpError::PageServerTree {
            members: tree.members.len(),
        });
    }
    check_unshared(&tree)?;
    let member_plan = root_plan
        .as_ref()
        .map(TrackPlan::for_member)
        .transpose()
        .map_err(TaskDumpError::from)?;
    let mut planned = Vec::new();
    let mut pages_id = 0;
    for m in &tree.members {
        let MemberKind::Alive(p) = &m.kind else {
            continue;
        };
        let task = p.leader();
        let (vpid, _, _) =
            inventory::inner_ids(task.pid(), task.pid()).map_err(TaskDumpError::from)?;
        let plan = match (root_plan.take(), &member_plan) {
            (Some(root), _) => root,
            (None, Some(member)) => member.for_member().map_err(TaskDumpError::from)?,
            (None, None) => TrackPlan::default(),
        };
        pages_id += 1;
        let slot = Slot { vpid, pages_id };
        match frozen_part(task, &dir, opts.pre_dump_mode, plan, slot)? {
            Frozen::Done(m) => stats.mem.add(&m),
            Frozen::Planned(runs, remote, m) => planned.push((task.pid(), slot, runs, remote, m)),
        }
    }
    stats.frozen_time = frozen_at.elapsed();
    tree.detach()
        .map_err(|source| DumpError::Release { pid, source })?;
    for (tpid, slot, runs, remote, mut m) in planned {
        mem::write_planned(tpid, slot.vpid, slot.pages_id, runs, &dir, remote, &mut m)
            .map_err(TaskDumpError::from)?;
        stats.mem.add(&m);
    }
    stats.memdump_time = started.elapsed();
    stats.memwrite_time = stats.mem.write_time;
    if opts.auto_dedup {
        let d = super::dedup::dedup(&dir)?;
        tracing::info!(
            pages = d.pages,
            "older copies punched out of the parent images"
        );
    }
    let mut inv = inventory::inventory(opts.network_lock);
    inv.pre_dump_mode = Some(match opts.pre_dump_mode {
        PreDumpMode::Splice => 1,
        PreDumpMode::Read => 2,
    });
    dir.write_single(ImageKind::StatsDump, 0, &stats.entry())
        .map_err(DumpError::Finish)?;
    dir.write_single(ImageKind::Inventory, 0, &inv)
        .map_err(DumpError::Finish)?;
    tracing::info!(
        pages = stats.mem.pages_written,
        parent = stats.mem.pages_parent,
        frozen_us = stats.frozen_time.as_micros() as u64,
        "pre-dump finished"
    );
    Ok(DumpOutcome { stats })
}

/// Where one process's pages go: `pagemap-<vpid>.img`, `pages-<pages_id>.img`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    vpid: u32,
    pages_id: u32,
}

/// What was done while the task was frozen.
enum Frozen {
    /// Pages written (`splice` mode).
    Done(mem::MemStats),
    /// Pages listed, to be read once the task runs (`read` mode), and the
    /// page server they go to, if any.
    Planned(
        Vec<mem::pagemap::PageRun>,
        Option<mem::page_server::Sender>,
        mem::MemStats,
    ),
}

fn frozen_part(
    task: &SeizedTask,
    dir: &ImagesDir,
    mode: PreDumpMode,
    mut plan: TrackPlan,
    slot: Slot,
) -> Result<Frozen, TaskDumpError> {
    let pid = task.pid();
    let inj_err = |source| TaskDumpError::Inject { pid, source };
    let sp = task
        .regs()
        .map_err(|source| TaskDumpError::Core(source.into()))?
        .rsp;
    let vmas = vma::collect(pid.0)?;
    let inj = Injection::new(task).map_err(inj_err)?;
    let mut tracking = Tracking::start(&inj, pid, slot.vpid, &vmas, &plan)?;
    let remote = plan.remote.take();
    let result = match mode {
        PreDumpMode::Splice => MemDump {
            inj: &inj,
            pid,
            vpid: slot.vpid,
            pages_id: slot.pages_id,
            sp,
            mode: PageMode::Splice,
            incremental: tracking.incremental(),
            remote,
            drainer: None,
        }
        .run(&vmas, dir)
        .map(Frozen::Done),
        PreDumpMode::Read => mem::plan(pid, &vmas, sp, tracking.incremental())
            .map(|(runs, stats)| Frozen::Planned(runs, remote, stats)),
    };
    if result.is_err() {
        tracking.abandon(&inj);
    }
    let result = result?;
    inj.cure().map_err(inj_err)?;
    Ok(result)
}
