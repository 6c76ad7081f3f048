//! Dumping one frozen process (all its threads): every per-task image (CRIU's
//! `dump_one_task` in `criu/cr-dump.c`), in CRIU's order: mapped files,
//! ids, descriptors, memory, core, mm, fs.

use std::time::Instant;

use criu_proto::images::{FsEntry, MmEntry, PstreeEntry};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use crate::files::{FileTable, FilesError};
use crate::inject::{InjectError, Injection};
use crate::mem::page_drain::PageDrainer;
use crate::mem::shmem::{ShmemDump, ShmemError};
use crate::mem::vma::{self, VmaError};
use crate::mem::{MemDump, MemError, MemStats};
use crate::proc::ProcError;
use crate::pstree::RealPid;
use crate::seize::SeizedProcess;
use crate::task_core::seccomp::SeccompDump;
use crate::task_core::thread::{self, ThreadQueried};
use crate::task_core::{self, CoreError, FromProc, Frozen, Queried};

use super::incremental::{IncrementalError, TrackPlan, Tracking};
use super::inventory::{self, NamespaceError};

/// Longest auxv CRIU keeps (`AT_VECTOR_SIZE` words on x86-64).
const AUXV_WORDS: usize = 44;

/// One step of dumping a task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskDumpError {
    /// `/proc` could not be read.
    #[error("task {pid}: cannot read /proc")]
    Proc {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// The task is not a session leader and `shell_job` was not given.
    #[error("the root process {pid} is not a session leader; consider using --shell-job")]
    NotSessionLeader {
        /// The task.
        pid: RealPid,
    },
    /// Namespace checks failed.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// VMAs could not be described.
    #[error(transparent)]
    Vma(#[from] VmaError),
    /// Files could not be described.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// Memory could not be dumped.
    #[error(transparent)]
    Mem(#[from] MemError),
    /// Guard pages could not be listed.
    #[error(transparent)]
    Guard(#[from] crate::mem::guard::GuardError),
    /// Shared memory could not be dumped.
    #[error(transparent)]
    Shmem(#[from] ShmemError),
    /// Registers or task state could not be read.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The injection stub could not be set up or removed.
    #[error("task {pid}: syscall injection failed")]
    Inject {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// An image could not be written.
    #[error("cannot write an image")]
    Image(#[from] ImageError),
    /// Memory tracking or the parent images failed.
    #[error(transparent)]
    Incremental(#[from] IncrementalError),
}

/// Where a process sits in the dump.
#[derive(Debug, Clone, Copy)]
pub struct TaskSlot {
    /// Number of its kernel objects (fd table, mm...); `id - 1` numbers its
    /// pages file.
    pub id: u32,
    /// Its parent's pid as the images say it (0 for the root).
    pub ppid: u32,
    /// Whether it lives in the tree's own pid namespace.
    pub own_pidns: bool,
    /// Its parent's descriptor table id when it shares that table
    /// (`CLONE_FILES`): its descriptors are the parent's `fdinfo` image.
    pub parent_files: Option<u32>,
}

/// Checks that can be made without touching the task.
pub fn precheck(
    pid: RealPid,
    shell_job: bool,
) -> Result<crate::proc::stat::ProcStat, TaskDumpError> {
    let perr = |source| TaskDumpError::Proc { pid, source };
    let stat = crate::proc::read(pid.0, "stat")
        .and_then(|t| crate::proc::stat::parse(&t))
        .map_err(perr)?;
    if stat.sid != pid.0 && !shell_job {
        return Err(TaskDumpError::NotSessionLeader { pid });
    }
    Ok(stat)
}

/// Writes the images of one frozen process (`core-*`, `ids`, `mm`, `fs`,
/// `fdinfo`, `pagemap`, `pages`), adding its files to `files`; its
/// threads' seccomp state comes from `seccomp`.
/// Its last page pipes go to `drainer`, when given, to be written while
/// the dump goes on. Returns its memory counters (time spent in memory
/// goes to `timing`) and its `pstree.img` entry.
#[allow(clippy::too_many_arguments)] // the tree-wide tables each task adds to
pub fn dump(
    process: &SeizedProcess,
    dir: &ImagesDir,
    mut track: TrackPlan,
    timing: &mut super::stats::DumpStats,
    files: &mut FileTable,
    shmem: &mut ShmemDump,
    seccomp: &SeccompDump,
    slot: TaskSlot,
    drainer: Option<&PageDrainer>,
) -> Result<(MemStats, PstreeEntry), TaskDumpError> {
    let TaskSlot {
        id,
        ppid,
        own_pidns,
        parent_files,
    } = slot;
    let task = process.leader();
    let pid = task.pid();
    let perr = |source| TaskDumpError::Proc { pid, source };
    let stat = crate::proc::read(pid.0, "stat")
        .and_then(|t| crate::proc::stat::parse(&t))
        .map_err(perr)?;
    let status = crate::proc::read(pid.0, "status")
        .and_then(|t| crate::proc::status::parse(&t))
        .map_err(perr)?;
    let mut ids = inventory::task_ids(pid, id, own_pidns)?;
    if let Some(files_id) = parent_files {
        ids.files_id = files_id;
    }
    let (vpid, vpgid, vsid) = inventory::inner_ids(pid, pid)?;
    let mut vtids = Vec::with_capacity(process.threads().len() + 1);
    for t in process.tids() {
        vtids.push(inventory::inner_ids(pid, t)?.0);
    }
    let frozen = Frozen::capture(task)?;
    let sp = frozen.sp;
    let mut thread_frozen = Vec::with_capacity(process.threads().len());
    for t in process.threads() {
        thread_frozen.push(Frozen::capture(t)?);
    }

    let mut vmas = vma::collect(pid.0)?;
    let guards = crate::mem::guard::collect(pid.0)?;
    for v in &mut vmas {
        if let Some(f) = &v.file {
            v.entry.shmid = files.mapped(pid, f, v.is(vma::status::MEMFD))?.into();
        }
    }
    dir.write_single(ImageKind::Ids, vpid.into(), &ids)?;
    for v in vmas.iter().filter(|v| v.is(vma::status::ANON_SHARED)) {
        shmem.dump(pid.0, &v.entry, dir)?;
    }

    let inj = Injection::new(task).map_err(|source| TaskDumpError::Inject { pid, source })?;
    let tracking = Tracking::start(&inj, pid, vpid, &vmas, &track)?;
    if let Some(fd) = tracking.kept_fd() {
        files.ignore_fd(pid, fd);
    }
    let fdinfo = match parent_files {
        None => Some(files.dump_fds(pid, vpid, &inj)?),
        Some(_) => None,
    };

    let started = Instant::now();
    let mem = MemDump {
        inj: &inj,
        pid,
        vpid,
        pages_id: id - 1,
        sp,
        mode: track.mode,
        incremental: tracking.incremental(),
        remote: track.remote.take(),
        drainer,
    }
    .run(&vmas, dir)?;
    timing.memdump_time += started.elapsed();
    timing.memwrite_time += mem.write_time;

    let queried = Queried::ask(&inj, pid)?;
    let posix = task_core::posix_timers::dump(&inj, pid, &|tid| {
        let at = process.tids().iter().position(|t| t.0 == tid)?;
        vtids.get(at).copied()
    })
    .map_err(CoreError::from)?;
    let mut thread_cores = Vec::with_capacity(thread_frozen.len());
    for (t, f) in process.threads().iter().zip(thread_frozen) {
        let tid = t.pid();
        let q = ThreadQueried::ask(&inj.for_thread(t))?;
        let tperr = |source| TaskDumpError::Proc { pid: tid, source };
        let tstat = crate::proc::read(pid.0, &format!("task/{tid}/stat"))
            .and_then(|t| crate::proc::stat::parse(&t))
            .map_err(tperr)?;
        let tstatus = crate::proc::read(pid.0, &format!("task/{tid}/status"))
            .and_then(|t| crate::proc::status::parse(&t))
            .map_err(tperr)?;
        let creds = crate::creds::entry(&tstatus, queried.secbits);
        let core = thread::thread_entry(f, &q, &tstat, tstatus.seccomp, creds);
        thread_cores.push((tid, core));
    }
    inj.cure()
        .map_err(|source| TaskDumpError::Inject { pid, source })?;

    let exe_file_id = files.special_link(pid, "exe")?;
    let (personality, loginuid, oom_score_adj) = task_core::proc_extras(pid.0);
    let from_proc = FromProc {
        stat: &stat,
        status: &status,
        personality,
        loginuid,
        oom_score_adj,
        stop_signo: task.stop_signal().map(|s| s as u32),
    };
    let creds = crate::creds::entry(&status, queried.secbits);
    let mut core = task_core::entry(frozen, &queried, &from_proc, creds);
    if let Some(t) = core.tc.as_mut().and_then(|tc| tc.timers.as_mut()) {
        t.posix = posix;
    }
    let cores =
        std::iter::once((pid, &mut core)).chain(thread_cores.iter_mut().map(|(tid, c)| (*tid, c)));
    for (tid, c) in cores {
        let m = seccomp.thread(tid);
        if let Some(th) = c.thread_core.as_mut() {
            th.seccomp_mode = m.mode;
            th.seccomp_filter = m.filter;
        }
    }

    let auxv = crate::proc::read_bytes(pid.0, "auxv").map_err(perr)?;
    let mut saved_auxv: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    saved_auxv.truncate(AUXV_WORDS);
    let mm = MmEntry {
        mm_start_code: stat.start_code,
        mm_end_code: stat.end_code,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.start_stack,
        mm_start_brk: stat.start_brk,
        mm_brk: queried.brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id,
        mm_saved_auxv: saved_auxv,
        vmas: vmas.into_iter().map(|v| v.entry).chain(guards).collect(),
        dumpable: Some(queried.dumpable),
        aios: Vec::new(),
        thp_disabled: Some(queried.thp_disabled),
    };
    let cwd_id = files.special_link(pid, "cwd")?;
    let root_id = files.special_link(pid, "root")?;
    let fs = FsEntry {
        cwd_id,
        root_id,
        umask: Some(status.umask.unwrap_or(0o22)),
    };

    if let Some(fdinfo) = fdinfo {
        dir.write_all(ImageKind::Fdinfo, id.into(), &fdinfo)?;
    }
    dir.write_single(ImageKind::Core, vpid.into(), &core)?;
    for ((_, core), vtid) in thread_cores.iter().zip(&vtids[1..]) {
        dir.write_single(ImageKind::Core, (*vtid).into(), core)?;
    }
    dir.write_single(ImageKind::Mm, vpid.into(), &mm)?;
    dir.write_single(ImageKind::Fs, vpid.into(), &fs)?;
    let entry = PstreeEntry {
        pid: vpid,
        ppid,
        pgid: vpgid,
        sid: vsid,
        threads: vtids,
    };
    Ok((mem, entry))
}
