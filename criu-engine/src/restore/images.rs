//! Reading and checking every image of a single-process dump before anything
//! is created (CRIU's `prepare_task_entries`, `prepare_pstree`,
//! `prepare_mm_pid`, `collect_*` in `criu/cr-restore.c` and `criu/files.c`,
//! and the pagemap walk of `criu/mem.c`).
//!
//! An inconsistent directory is refused here, so a failed restore never has
//! to undo a half-built process because of its images.

use std::collections::HashMap;
use std::path::PathBuf;

use criu_proto::images::core_entry::March;
use criu_proto::images::{
    CoreEntry, FdTypes, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry, PstreeEntry,
    RegFileEntry, TaskCoreEntry, TaskKobjIdsEntry, ThreadCoreEntry, ThreadInfoX86, VmaEntry,
};
use criu_proto::img::pages::{PAGE_SIZE, PE_PARENT};
use criu_proto::img::{ImageError, ImageKind, ImagesDir, PageRun};

/// `VMA_AREA_REGULAR`.
pub(crate) const VMA_AREA_REGULAR: u32 = 0x1;
/// `VMA_AREA_VSYSCALL`.
pub(crate) const VMA_AREA_VSYSCALL: u32 = 0x4;
/// `VMA_AREA_VDSO`.
pub(crate) const VMA_AREA_VDSO: u32 = 0x8;
/// `VMA_FILE_PRIVATE`.
pub(crate) const VMA_FILE_PRIVATE: u32 = 0x40;
/// `VMA_FILE_SHARED`.
pub(crate) const VMA_FILE_SHARED: u32 = 0x80;
/// `VMA_ANON_PRIVATE`.
pub(crate) const VMA_ANON_PRIVATE: u32 = 0x200;
/// `VMA_AREA_VVAR`.
pub(crate) const VMA_AREA_VVAR: u32 = 0x1000;
/// `VMA_ANON_SHARED`.
pub(crate) const VMA_ANON_SHARED: u32 = 0x100;
/// `VMA_AREA_MEMFD`.
pub(crate) const VMA_AREA_MEMFD: u32 = 0x4000;
/// Status bits of kinds we cannot restore yet: `VMA_AREA_SYSVIPC`,
/// `VMA_AREA_SOCKET`, `VMA_AREA_AIORING`, `VMA_AREA_SHSTK`,
/// `VMA_AREA_UPROBES`, `VMA_EXT_PLUGIN`, `VMA_UNSUPP` (`VMA_AREA_GUARD`
/// entries are taken apart before the check).
const VMA_UNSUPPORTED: u32 = 0x400 | 0x800 | 0x2000 | 0x8000 | 0x2_0000 | 0x800_0000 | 0x8000_0000;
/// `MAP_HUGETLB`.
const MAP_HUGETLB: u32 = 0x4_0000;
/// Signal handlers stored per task on x86-64 (64 signals but SIGKILL, SIGSTOP).
pub(crate) const SIGACTIONS: usize = 62;
/// Resource limits the kernel knows (`RLIM_NLIMITS`).
pub(crate) const RLIMITS: usize = 16;
/// `mm_saved_auxv` words CRIU accepts on x86-64.
const AUXV_WORDS: usize = 44;
/// `tc.task_state` of a running task.
pub(crate) const TASK_ALIVE: u32 = 1;
/// `tc.task_state` of a stopped task.
pub(crate) const TASK_STOPPED: u32 = 3;

/// Errors of reading and checking the images.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// A pid (or thread id) appears twice in `pstree.img`.
    #[error("pstree.img lists pid {pid} more than once")]
    RepeatedPid {
        /// The pid.
        pid: u32,
    },
    /// A descriptor number the task could never have had.
    #[error("task {pid}: fd {fd} is out of range (limit {limit})")]
    FdOutOfRange {
        /// Task.
        pid: u32,
        /// Descriptor.
        fd: u32,
        /// The limit it breaks (`RLIMIT_NOFILE` of the images, or `fs.nr_open`).
        limit: u64,
    },
    /// A file path that is not absolute or climbs out of the task's root.
    #[error("file path {path:?} escapes the root {root:?} of the dump")]
    PathEscapesRoot {
        /// The path in the images.
        path: String,
        /// The task's root.
        root: String,
    },
    /// An image cannot be opened or decoded.
    #[error("cannot read {image}")]
    Read {
        /// Image file name.
        image: String,
        /// Cause.
        #[source]
        source: ImageError,
    },
    /// A required image is absent.
    #[error("image {image} is missing")]
    Missing {
        /// Image file name.
        image: String,
    },
    /// The inventory cannot be restored by this engine.
    #[error("inventory.img: {reason}")]
    Inventory {
        /// What is wrong.
        reason: &'static str,
    },
    /// The tree or the task uses something this engine cannot restore yet.
    #[error("{what} is not supported yet")]
    Unsupported {
        /// What the images need.
        what: String,
    },
    /// The core image of a task is inconsistent.
    #[error("core-{pid}.img: {reason}")]
    Core {
        /// Task (pid in the images).
        pid: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// VMAs out of order, overlapping or not page aligned.
    #[error("mm-{pid}.img: vma {start:#x}-{end:#x} is misplaced ({reason})")]
    Vma {
        /// Task.
        pid: u32,
        /// VMA start.
        start: u64,
        /// VMA end.
        end: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A pagemap entry is out of order or not inside a private VMA.
    #[error("pagemap-{pid}.img: pages {vaddr:#x}+{nr_pages} {reason}")]
    Pagemap {
        /// Task.
        pid: u32,
        /// First address of the run.
        vaddr: u64,
        /// Pages in the run.
        nr_pages: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The pages file holds fewer bytes than the pagemap describes.
    #[error("{image} holds {have} bytes but its pagemap needs {need}")]
    PagesTooShort {
        /// Pages file name.
        image: String,
        /// Bytes the pagemap needs.
        need: u64,
        /// Bytes in the file.
        have: u64,
    },
    /// An id names no entry of the expected type in `files.img`.
    #[error("files.img has no {kind} entry with id {id} (needed for {user})")]
    MissingFile {
        /// File id.
        id: u32,
        /// Expected type.
        kind: &'static str,
        /// What refers to it.
        user: String,
    },
    /// A file that must be reopened by path no longer matches the dump.
    #[error("file {} changed since the dump: {what} was {dumped}, is {now}", path.display())]
    FileChanged {
        /// Path.
        path: PathBuf,
        /// `size` or `mode`.
        what: &'static str,
        /// Value in the images.
        dumped: u64,
        /// Value now.
        now: u64,
    },
    /// A file that must be reopened by path is gone.
    #[error("file {} of the dump cannot be found", path.display())]
    FileMissing {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A memfd of the dump cannot be recreated.
    #[error(transparent)]
    Memfd(#[from] super::memfd::MemfdError),
    /// A file whose path vanished cannot be made reachable again.
    #[error(transparent)]
    Remap(#[from] super::remap::RemapError),
    /// Two descriptors with the same number.
    #[error("fdinfo-{files_id}.img lists fd {fd} twice")]
    DuplicateFd {
        /// Fd table id.
        files_id: u32,
        /// Descriptor.
        fd: u32,
    },
}

/// Everything needed to restore one single-threaded process.
#[derive(Debug)]
pub(crate) struct TaskImages {
    /// Its pstree entry (pid, pgid, sid as dumped).
    pub(crate) pstree: PstreeEntry,
    /// Registers and TLS.
    pub(crate) thread_info: ThreadInfoX86,
    /// Process-wide state.
    pub(crate) tc: TaskCoreEntry,
    /// Per-thread state.
    pub(crate) thread_core: ThreadCoreEntry,
    /// Address space.
    pub(crate) mm: MmEntry,
    /// cwd, root, umask.
    pub(crate) fs: FsEntry,
    /// Descriptors, ascending.
    pub(crate) fds: Vec<FdinfoEntry>,
    /// `files.img` by id.
    pub(crate) files: HashMap<u32, FileEntry>,
    /// The other threads, in `pstree_entry.threads` order.
    pub(crate) threads: Vec<super::threads::ThreadImages>,
    /// Its pid namespace id (`ids-<pid>.img`).
    pub(crate) pid_ns_id: Option<u32>,
    /// Its descriptor table id (`ids-<pid>.img`): equal to its parent's
    /// when it shares the parent's table (`CLONE_FILES`).
    pub(crate) files_id: u32,
    /// Where every saved page is, through the parent chain.
    pub(crate) pages: super::pages::TaskPages,
    /// Seccomp state of the leader, then of each other thread.
    pub(crate) seccomp: Vec<super::seccomp::ThreadFilters>,
    /// `MADV_GUARD_INSTALL` runs (taken out of `mm.vmas`).
    pub(crate) guards: Vec<VmaEntry>,
}

impl TaskImages {
    /// The pid in the images.
    pub(crate) fn pid(&self) -> u32 {
        self.pstree.pid
    }

    /// The regular file entry `id`.
    pub(crate) fn reg(&self, id: u32) -> Option<&RegFileEntry> {
        self.files.get(&id).and_then(|f| f.reg.as_ref())
    }
}

/// Reads and checks `inventory.img`.
pub(crate) fn load_inventory(dir: &ImagesDir) -> Result<InventoryEntry, ImagesError> {
    let inventory: InventoryEntry = required(dir, ImageKind::Inventory, 0)?;
    check_inventory(&inventory)?;
    Ok(inventory)
}

/// Reads `files.img` by id.
pub(crate) fn load_files(dir: &ImagesDir) -> Result<HashMap<u32, FileEntry>, ImagesError> {
    Ok(dir
        .files()
        .map_err(|source| read_error(ImageKind::Files, 0, source))?
        .into_iter()
        .map(|f| (f.id, f))
        .collect())
}

/// Reads and checks the images of the live task `pstree` of `dir`. Files
/// for which `inherited` says yes are replaced by `inherit_fd` descriptors
/// and not looked up on disk.
pub(crate) fn load_task(
    dir: &ImagesDir,
    inventory: &InventoryEntry,
    pstree: PstreeEntry,
    core: CoreEntry,
    files: &HashMap<u32, FileEntry>,
    inherited: &dyn Fn(&FileEntry) -> bool,
) -> Result<TaskImages, ImagesError> {
    let pid = pstree.pid;
    if pstree.threads.first() != Some(&pid) {
        return Err(ImagesError::Core {
            pid,
            reason: "the leader is not the first thread in pstree.img",
        });
    }
    let (thread_info, tc, thread_core) = check_core(pid, core)?;
    let threads = super::threads::load(dir, &pstree)?;
    let ids: TaskKobjIdsEntry = required(dir, ImageKind::Ids, pid.into())?;
    check_ids(inventory, &ids)?;
    let mut mm: MmEntry = required(dir, ImageKind::Mm, pid.into())?;
    let (guards, vmas) = mm.vmas.into_iter().partition(crate::mem::guard::is_guard);
    mm.vmas = vmas;
    check_vmas(pid, &mm)?;
    super::guards::check(pid, &mm.vmas, &guards)?;
    let fs: FsEntry = required(dir, ImageKind::Fs, pid.into())?;
    let files = files.clone();
    let fds = dir
        .fdinfo(ids.files_id)
        .map_err(|source| read_error(ImageKind::Fdinfo, ids.files_id.into(), source))?;
    let cores: Vec<(u32, &ThreadCoreEntry)> = std::iter::once((pid, &thread_core))
        .chain(threads.iter().map(|t| (t.tid, &t.thread_core)))
        .collect();
    let seccomp = super::seccomp::load(dir, &cores)?;
    let pagemap = dir
        .pagemap(pid)
        .map_err(|source| read_error(ImageKind::Pagemap, pid.into(), source))?
        .ok_or_else(|| ImagesError::Missing {
            image: ImageKind::Pagemap.file_name(pid.into()),
        })?;
    let runs: Vec<PageRun> = pagemap.runs().collect();
    check_pagemap(pid, &mm.vmas, &runs)?;
    let pages = super::pages::resolve(dir, pid, pagemap.head.pages_id, &runs)?;
    let task = TaskImages {
        pstree,
        thread_info,
        tc,
        thread_core,
        threads,
        mm,
        fs,
        fds,
        files,
        pages,
        pid_ns_id: ids.pid_ns_id,
        files_id: ids.files_id,
        seccomp,
        guards,
    };
    check_references(&task, ids.files_id, inherited)?;
    Ok(task)
}

pub(super) fn read_error(kind: ImageKind, id: u64, source: ImageError) -> ImagesError {
    ImagesError::Read {
        image: kind.file_name(id),
        source,
    }
}

pub(super) fn required<M: prost::Message + prost::Name + Default>(
    dir: &ImagesDir,
    kind: ImageKind,
    id: u64,
) -> Result<M, ImagesError> {
    dir.read_single(kind, id)
        .map_err(|source| read_error(kind, id, source))?
        .ok_or_else(|| ImagesError::Missing {
            image: kind.file_name(id),
        })
}

pub(super) fn unsupported(what: impl Into<String>) -> ImagesError {
    ImagesError::Unsupported { what: what.into() }
}

fn check_inventory(inv: &InventoryEntry) -> Result<(), ImagesError> {
    if !matches!(inv.img_version, 1 | 2) {
        return Err(ImagesError::Inventory {
            reason: "unknown image version",
        });
    }
    if inv.fdinfo_per_id != Some(true) {
        return Err(ImagesError::Inventory {
            reason: "too old image (no per-id fdinfo)",
        });
    }
    if inv.root_ids.is_none() {
        return Err(ImagesError::Inventory {
            reason: "no root_ids",
        });
    }
    if inv.tcp_close == Some(true) {
        return Err(unsupported("an image dumped with tcp_close"));
    }
    Ok(())
}

pub(crate) fn check_core(
    pid: u32,
    core: CoreEntry,
) -> Result<(ThreadInfoX86, TaskCoreEntry, ThreadCoreEntry), ImagesError> {
    let bad = |reason| ImagesError::Core { pid, reason };
    if core.mtype != March::X8664 as i32 {
        return Err(bad("not an x86-64 task"));
    }
    let ti = core.thread_info.ok_or_else(|| bad("no thread_info"))?;
    let tc = core.tc.ok_or_else(|| bad("no tc"))?;
    let th = core.thread_core.ok_or_else(|| bad("no thread_core"))?;
    if ti.gpregs.mode.unwrap_or(1) != 1 {
        return Err(unsupported(format!("restoring the 32-bit task {pid}")));
    }
    if ti.fpregs.st_space.len() < 32 || ti.fpregs.xmm_space.len() < 64 {
        return Err(bad("short FPU register arrays"));
    }
    if !matches!(tc.task_state, TASK_ALIVE | TASK_STOPPED) {
        return Err(unsupported(format!(
            "restoring task {pid} in state {}",
            tc.task_state
        )));
    }
    if tc.sigactions.len() != SIGACTIONS {
        return Err(bad("not 62 signal actions"));
    }
    if tc
        .sigactions
        .iter()
        .any(|sa| sa.compat_sigaction == Some(true))
    {
        return Err(unsupported(format!("compat signal handlers of task {pid}")));
    }
    if tc
        .rlimits
        .as_ref()
        .is_some_and(|r| r.rlimits.len() > RLIMITS)
    {
        return Err(bad("more than 16 resource limits"));
    }
    if tc.old_seccomp_mode.unwrap_or(0) != 0 {
        return Err(unsupported(format!("the old seccomp format of task {pid}")));
    }
    Ok((ti, tc, th))
}

fn check_ids(inv: &InventoryEntry, ids: &TaskKobjIdsEntry) -> Result<(), ImagesError> {
    let root = inv.root_ids.as_ref().expect("checked by check_inventory");
    // The pid namespace is handled by the tree (see `pstree`).
    let namespaces = [
        ("net", ids.net_ns_id, root.net_ns_id),
        ("ipc", ids.ipc_ns_id, root.ipc_ns_id),
        ("uts", ids.uts_ns_id, root.uts_ns_id),
        ("mnt", ids.mnt_ns_id, root.mnt_ns_id),
        ("user", ids.user_ns_id, root.user_ns_id),
        ("cgroup", ids.cgroup_ns_id, root.cgroup_ns_id),
        ("time", ids.time_ns_id, root.time_ns_id),
    ];
    for (name, task, dumper) in namespaces {
        if task.is_some() && dumper.is_some() && task != dumper {
            return Err(unsupported(format!("restoring a {name} namespace")));
        }
    }
    if ids.files_id == root.files_id {
        return Err(ImagesError::Inventory {
            reason: "the task shares its fd table id with the dumper",
        });
    }
    Ok(())
}

fn check_vmas(pid: u32, mm: &MmEntry) -> Result<(), ImagesError> {
    if mm.vmas.is_empty() {
        return Err(ImagesError::Core {
            pid,
            reason: "mm image without VMAs",
        });
    }
    if mm.mm_saved_auxv.len() > AUXV_WORDS {
        return Err(ImagesError::Core {
            pid,
            reason: "more than 44 auxv words",
        });
    }
    if !mm.aios.is_empty() {
        return Err(unsupported(format!("AIO rings of task {pid}")));
    }
    let mut prev_end = 0u64;
    for vma in &mm.vmas {
        let bad = |reason| ImagesError::Vma {
            pid,
            start: vma.start,
            end: vma.end,
            reason,
        };
        if vma.start % PAGE_SIZE != 0 || vma.end % PAGE_SIZE != 0 || vma.start >= vma.end {
            return Err(bad("not page aligned or empty"));
        }
        if vma.start < prev_end {
            return Err(bad("overlaps or precedes the previous one"));
        }
        prev_end = vma.end;
        if vma.status & VMA_UNSUPPORTED != 0 || vma.flags & MAP_HUGETLB != 0 {
            return Err(unsupported(format!(
                "vma {:#x}-{:#x} of task {pid} (status {:#x}, flags {:#x})",
                vma.start, vma.end, vma.status, vma.flags
            )));
        }
    }
    Ok(())
}

/// Whether `vma` gets pages from the task pagemap.
pub(crate) fn is_private(vma: &VmaEntry) -> bool {
    vma.status & VMA_AREA_REGULAR != 0 && vma.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE) != 0
}

fn check_pagemap(pid: u32, vmas: &[VmaEntry], runs: &[PageRun]) -> Result<(), ImagesError> {
    let mut prev_end = 0u64;
    let mut vi = 0usize;
    for run in runs {
        let bad = |reason| ImagesError::Pagemap {
            pid,
            vaddr: run.vaddr,
            nr_pages: run.nr_pages,
            reason,
        };
        if !run.is_present() && run.flags & PE_PARENT == 0 {
            return Err(unsupported(format!("lazy pages (pagemap-{pid}.img)")));
        }
        let end = run
            .nr_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| run.vaddr.checked_add(len))
            .ok_or_else(|| bad("overflow the address space"))?;
        if run.vaddr % PAGE_SIZE != 0 || run.nr_pages == 0 {
            return Err(bad("are not page aligned"));
        }
        if run.vaddr < prev_end {
            return Err(bad("are out of order"));
        }
        prev_end = end;
        // Every page must sit in a private VMA; runs may span adjacent VMAs.
        let mut addr = run.vaddr;
        while addr < end {
            while vi < vmas.len() && vmas[vi].end <= addr {
                vi += 1;
            }
            let Some(vma) = vmas.get(vi).filter(|v| v.start <= addr && is_private(v)) else {
                return Err(bad("lie outside the private VMAs"));
            };
            addr = vma.end.min(end);
        }
    }
    Ok(())
}

fn need_file(
    task: &TaskImages,
    id: u32,
    kind: FdTypes,
    user: impl FnOnce() -> String,
) -> Result<&FileEntry, ImagesError> {
    task.files
        .get(&id)
        .filter(|f| {
            f.r#type == kind as i32
                && match kind {
                    FdTypes::Reg => f.reg.as_ref().is_some_and(|r| r.id == id),
                    FdTypes::Pipe => f.pipe.as_ref().is_some_and(|p| p.id == id),
                    FdTypes::Memfd => f.memfd.as_ref().is_some_and(|m| m.id == id),
                    _ => false,
                }
        })
        .ok_or_else(|| ImagesError::MissingFile {
            id,
            kind: kind.as_str_name(),
            user: user(),
        })
}

/// Every pid and thread id of the tree appears once.
pub(crate) fn check_pstree_pids(pstree: &[PstreeEntry]) -> Result<(), ImagesError> {
    let mut seen = std::collections::HashSet::new();
    for entry in pstree {
        let threads = entry.threads.iter().filter(|&&t| t != entry.pid);
        for &pid in std::iter::once(&entry.pid).chain(threads) {
            if !seen.insert(pid) {
                return Err(ImagesError::RepeatedPid { pid });
            }
        }
    }
    Ok(())
}

/// The largest descriptor number plus one a task may have: the dumped
/// `RLIMIT_NOFILE` hard limit, and never above the kernel's `fs.nr_open`.
fn fd_limit(task: &TaskImages) -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let nofile = task
        .tc
        .rlimits
        .as_ref()
        .and_then(|r| r.rlimits.get(libc::RLIMIT_NOFILE as usize))
        .map_or(u64::MAX, |l| l.max);
    nofile.min(nr_open)
}

/// A path of the images stays inside `root`: absolute, no `..` component.
fn check_inside_root(root: &str, name: &str) -> Result<(), ImagesError> {
    // Unlinked files keep their name with a " (deleted)" suffix.
    let inside = name.starts_with('/')
        && !std::path::Path::new(name)
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if inside {
        Ok(())
    } else {
        Err(ImagesError::PathEscapesRoot {
            path: name.to_owned(),
            root: root.to_owned(),
        })
    }
}

fn check_references(
    task: &TaskImages,
    files_id: u32,
    inherited: &dyn Fn(&FileEntry) -> bool,
) -> Result<(), ImagesError> {
    let pid = task.pid();
    let root = need_file(task, task.fs.root_id, FdTypes::Reg, || {
        format!("the root of task {pid}")
    })?;
    let root = root
        .reg
        .as_ref()
        .expect("checked by need_file")
        .name
        .as_str();
    let exe = need_file(task, task.mm.exe_file_id, FdTypes::Reg, || {
        format!("the executable of task {pid}")
    })?;
    check_reg_on_disk(root, exe.reg.as_ref().expect("checked by need_file"))?;
    let cwd = need_file(task, task.fs.cwd_id, FdTypes::Reg, || {
        format!("the cwd of task {pid}")
    })?;
    check_reg_on_disk(root, cwd.reg.as_ref().expect("checked by need_file"))?;
    for vma in &task.mm.vmas {
        if vma.status & VMA_AREA_MEMFD != 0 {
            let id = u32::try_from(vma.shmid).unwrap_or(u32::MAX);
            need_file(task, id, FdTypes::Memfd, || {
                format!("vma {:#x}-{:#x} of task {pid}", vma.start, vma.end)
            })?;
        } else if vma.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
            let id = u32::try_from(vma.shmid).unwrap_or(u32::MAX);
            let file = need_file(task, id, FdTypes::Reg, || {
                format!("vma {:#x}-{:#x} of task {pid}", vma.start, vma.end)
            })?;
            check_reg_on_disk(root, file.reg.as_ref().expect("checked by need_file"))?;
        }
    }
    check_inside_root("/", root)?;
    let limit = fd_limit(task);
    let mut seen = std::collections::HashSet::new();
    for fd in &task.fds {
        if u64::from(fd.fd) >= limit {
            return Err(ImagesError::FdOutOfRange {
                pid,
                fd: fd.fd,
                limit,
            });
        }
        if !seen.insert(fd.fd) {
            return Err(ImagesError::DuplicateFd {
                files_id,
                fd: fd.fd,
            });
        }
        let kind = FdTypes::try_from(fd.r#type).unwrap_or(FdTypes::Und);
        match kind {
            FdTypes::Unixsk if task.files.get(&fd.id).is_some_and(|f| f.usk.is_some()) => {
                let usk = task.files.get(&fd.id).and_then(|f| f.usk.as_ref());
                if let Some(why) = usk.and_then(super::unix_sk::refused) {
                    return Err(unsupported(format!("fd {} of task {pid}: {why}", fd.fd)));
                }
            }
            FdTypes::Fifo => {
                let user = || format!("fd {} of task {pid}", fd.fd);
                let fifo = task.files.get(&fd.id).and_then(|f| f.fifo.as_ref());
                let fifo = fifo.ok_or_else(|| ImagesError::MissingFile {
                    id: fd.id,
                    kind: kind.as_str_name(),
                    user: user(),
                })?;
                let file = need_file(task, fifo.regf_id.unwrap_or(fifo.id), FdTypes::Reg, user)?;
                if let (Some(reg), false) = (file.reg.as_ref(), inherited(file)) {
                    check_reg_on_disk(root, reg)?;
                }
            }
            FdTypes::Eventfd
            | FdTypes::Eventpoll
            | FdTypes::Signalfd
            | FdTypes::Timerfd
            | FdTypes::Inotify
            | FdTypes::Fanotify => {
                if !task
                    .files
                    .get(&fd.id)
                    .is_some_and(|f| super::anon_fd::has_entry(f, kind))
                {
                    return Err(ImagesError::MissingFile {
                        id: fd.id,
                        kind: kind.as_str_name(),
                        user: format!("fd {} of task {pid}", fd.fd),
                    });
                }
            }
            FdTypes::Tty if task.files.get(&fd.id).is_some_and(|f| f.tty.is_some()) => {}
            FdTypes::Memfd => {
                need_file(task, fd.id, kind, || format!("fd {} of task {pid}", fd.fd))?;
            }
            FdTypes::Reg | FdTypes::Pipe => {
                let file = need_file(task, fd.id, kind, || format!("fd {} of task {pid}", fd.fd))?;
                if let (Some(reg), false) = (file.reg.as_ref(), inherited(file)) {
                    check_reg_on_disk(root, reg)?;
                }
            }
            other => {
                return Err(unsupported(format!(
                    "fd {} of task {pid} of type {}",
                    fd.fd,
                    other.as_str_name()
                )))
            }
        }
    }
    Ok(())
}

/// The host path of `name`, a path inside the task's `root`.
pub(crate) fn host_path(root: &str, name: &str) -> PathBuf {
    if root == "/" {
        PathBuf::from(name)
    } else {
        PathBuf::from(format!("{root}{name}"))
    }
}

/// Checks that a file reopened by path still has the size and type it had.
fn check_reg_on_disk(root: &str, reg: &RegFileEntry) -> Result<(), ImagesError> {
    check_inside_root(root, &reg.name)?;
    let path = host_path(root, &reg.name);
    let st = nix::sys::stat::stat(&path).map_err(|source| ImagesError::FileMissing {
        path: path.clone(),
        source,
    })?;
    if let Some(size) = reg.size {
        let now = u64::try_from(st.st_size).unwrap_or(0);
        if now != size && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            return Err(ImagesError::FileChanged {
                path,
                what: "size",
                dumped: size,
                now,
            });
        }
    }
    if let Some(mode) = reg.mode {
        if mode & libc::S_IFMT != st.st_mode & libc::S_IFMT {
            return Err(ImagesError::FileChanged {
                path,
                what: "mode",
                dumped: mode.into(),
                now: st.st_mode.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, threads: Vec<u32>) -> PstreeEntry {
        PstreeEntry {
            pid,
            threads,
            ..Default::default()
        }
    }

    #[test]
    fn repeated_pids_are_refused() {
        assert!(check_pstree_pids(&[entry(5, vec![5, 6]), entry(7, vec![7])]).is_ok());
        let err = check_pstree_pids(&[entry(5, vec![5]), entry(5, vec![5])]).unwrap_err();
        assert_eq!(err.to_string(), "pstree.img lists pid 5 more than once");
        assert!(check_pstree_pids(&[entry(5, vec![5, 6]), entry(6, vec![6])]).is_err());
    }

    #[test]
    fn paths_must_stay_inside_the_root() {
        assert!(check_inside_root("/", "/usr/bin/true").is_ok());
        assert!(check_inside_root("/", "/tmp/x (deleted)").is_ok());
        assert!(check_inside_root("/srv/ct", "/../../etc/shadow").is_err());
        assert!(check_inside_root("/", "relative/path").is_err());
    }
}
