//! Dumping one frozen, single-threaded task: every per-task image (CRIU's
//! `dump_one_task` in `criu/cr-dump.c`), in CRIU's order: mapped files,
//! ids, descriptors, memory, core, mm, fs.

use std::time::Instant;

use criu_proto::images::{FsEntry, MmEntry, PstreeEntry, SeccompEntry};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use crate::files::{FileTable, FilesError};
use crate::inject::{InjectError, Injection};
use crate::mem::vma::{self, VmaError};
use crate::mem::{MemDump, MemError, MemStats, PageMode};
use crate::proc::ProcError;
use crate::pstree::RealPid;
use crate::seize::SeizedTask;
use crate::task_core::{self, CoreError, FromProc, Frozen, Queried};

use super::incremental::{IncrementalError, TrackPlan, Tracking};
use super::inventory::{self, NamespaceError};

/// Longest auxv CRIU keeps (`AT_VECTOR_SIZE` words on x86-64).
const AUXV_WORDS: usize = 44;
/// `files_id` of the only task (fdinfo-2.img).
const FILES_ID: u64 = 2;
/// The pages file id of the only task.
const PAGES_ID: u32 = 1;

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
    /// The task has more than one thread.
    #[error("task {pid} has {threads} threads; only single-threaded tasks can be dumped yet")]
    Threads {
        /// The task.
        pid: RealPid,
        /// Thread count.
        threads: u32,
    },
    /// The task has children.
    #[error("task {pid} has children ({children}); process trees cannot be dumped yet")]
    Children {
        /// The task.
        pid: RealPid,
        /// Their pids.
        children: String,
    },
    /// The task is not a session leader and `shell_job` was not given.
    #[error("the root process {pid} is not a session leader; consider using --shell-job")]
    NotSessionLeader {
        /// The task.
        pid: RealPid,
    },
    /// The task uses seccomp filters.
    #[error("task {pid} has seccomp filters, which cannot be dumped yet")]
    SeccompFilter {
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

/// Checks that can be made without touching the task.
pub fn precheck(
    pid: RealPid,
    shell_job: bool,
) -> Result<crate::proc::stat::ProcStat, TaskDumpError> {
    let perr = |source| TaskDumpError::Proc { pid, source };
    let stat = crate::proc::read(pid.0, "stat")
        .and_then(|t| crate::proc::stat::parse(&t))
        .map_err(perr)?;
    if stat.num_threads > 1 {
        return Err(TaskDumpError::Threads {
            pid,
            threads: stat.num_threads,
        });
    }
    let children = crate::proc::read(pid.0, &format!("task/{pid}/children")).map_err(perr)?;
    if !children.trim().is_empty() {
        return Err(TaskDumpError::Children {
            pid,
            children: children.trim().to_owned(),
        });
    }
    if stat.sid != pid.0 && !shell_job {
        return Err(TaskDumpError::NotSessionLeader { pid });
    }
    Ok(stat)
}

/// Writes every image of the frozen `task` except the inventory and the
/// statistics; returns the memory counters and the time spent in memory.
pub fn dump(
    task: &SeizedTask,
    dir: &ImagesDir,
    mode: PageMode,
    mut track: TrackPlan,
    timing: &mut super::stats::DumpStats,
) -> Result<MemStats, TaskDumpError> {
    let pid = task.pid();
    let perr = |source| TaskDumpError::Proc { pid, source };
    let stat = crate::proc::read(pid.0, "stat")
        .and_then(|t| crate::proc::stat::parse(&t))
        .map_err(perr)?;
    let status = crate::proc::read(pid.0, "status")
        .and_then(|t| crate::proc::status::parse(&t))
        .map_err(perr)?;
    if status.threads > 1 {
        return Err(TaskDumpError::Threads {
            pid,
            threads: status.threads,
        });
    }
    if status.seccomp == 2 {
        return Err(TaskDumpError::SeccompFilter { pid });
    }
    let ids = inventory::task_ids(pid)?;
    let frozen = Frozen::capture(task)?;
    let sp = frozen.sp;

    dir.write_single(ImageKind::Seccomp, 0, &SeccompEntry::default())?;

    let mut vmas = vma::collect(pid.0)?;
    let mut files = FileTable::new();
    for v in &mut vmas {
        if let Some(f) = &v.file {
            let link = f.link.clone();
            v.entry.shmid = files
                .special(&f.path, &f.meta, || std::fs::File::open(link).ok())
                .into();
        }
    }
    dir.write_single(ImageKind::Ids, pid.0 as u64, &ids)?;

    let inj = Injection::new(task).map_err(|source| TaskDumpError::Inject { pid, source })?;
    let tracking = Tracking::start(&inj, pid, pid.0 as u32, &vmas, &track)?;
    if let Some(fd) = tracking.kept_fd() {
        files.ignore_fd(fd);
    }
    let fdinfo = files.dump_fds(pid, &inj)?;

    let started = Instant::now();
    let mem = MemDump {
        inj: &inj,
        pid,
        vpid: pid.0 as u32,
        pages_id: PAGES_ID,
        sp,
        mode,
        incremental: tracking.incremental(),
        remote: track.remote.take(),
    }
    .run(&vmas, dir)?;
    timing.memdump_time = started.elapsed();
    timing.memwrite_time = mem.write_time;

    let queried = Queried::ask(&inj, pid)?;
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
    let core = task_core::entry(frozen, &queried, &from_proc, creds);

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
        vmas: vmas.into_iter().map(|v| v.entry).collect(),
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

    dir.write_all(ImageKind::Fdinfo, FILES_ID, &fdinfo)?;
    dir.write_all(ImageKind::Files, 0, files.entries())?;
    dir.write_single(ImageKind::Core, pid.0 as u64, &core)?;
    dir.write_single(ImageKind::Mm, pid.0 as u64, &mm)?;
    dir.write_single(ImageKind::Fs, pid.0 as u64, &fs)?;
    dir.write_all(
        ImageKind::Pstree,
        0,
        &[PstreeEntry {
            pid: pid.0 as u32,
            ppid: 0,
            pgid: stat.pgid as u32,
            sid: stat.sid as u32,
            threads: vec![pid.0 as u32],
        }],
    )?;
    dir.write_single(ImageKind::Timens, 0, &inventory::timens())?;
    Ok(mem)
}
