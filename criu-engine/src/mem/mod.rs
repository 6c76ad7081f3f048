//! A task's memory: its VMAs and the pages worth saving (CRIU's
//! `criu/mem.c`, `criu/page-pipe.c`, `criu/page-xfer.c`).
//!
//! * [`vma`]: `/proc/<pid>/smaps` into `vma_entry`s with CRIU's status bits;
//! * [`pagemap`]: which pages of a private VMA to save, from `pagemap` words;
//! * [`page_pipe`]: pipes filled by the frozen task with injected `vmsplice`;
//! * [`page_xfer`]: pipes drained into `pages-<id>.img` with `splice`, and
//!   the matching `pagemap-<pid>.img` entries.

pub mod dirty;
pub mod guard;
pub mod page_drain;
pub mod page_pipe;
pub mod page_server;
pub mod page_xfer;
pub mod pagemap;
pub mod shmem;
pub mod vma;

use std::fs::File;

use criu_proto::img::ImagesDir;

use crate::arch::nr;
use crate::inject::{InjectError, Injection};
use crate::proc::ProcError;
use crate::pstree::RealPid;

use dirty::Ranges;
use page_drain::PageDrainer;
use page_pipe::{PagePipe, PagePipeError};
use page_server::Sender;
use page_xfer::{PageSource, PageXfer, PageXferError};
use pagemap::{PageRun, ScanError, PE_LAZY, PE_PARENT};
use vma::Vma;

/// How page contents leave the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageMode {
    /// Injected `vmsplice` into page pipes, `splice` to the image.
    #[default]
    Splice,
    /// `process_vm_readv` (for a task that keeps running).
    Read,
}

/// Counters of one task's memory dump (they feed `stats-dump`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Pages of private VMAs looked at.
    pub pages_scanned: u64,
    /// Pages written to the pages file.
    pub pages_written: u64,
    /// Of those, pages flagged `PE_LAZY`.
    pub pages_lazy: u64,
    /// Pages left to the parent images (`PE_PARENT`).
    pub pages_parent: u64,
    /// Page pipes used.
    pub page_pipes: u64,
    /// Pipe fills (one injected `vmsplice` each).
    pub pipe_fills: u64,
    /// Time spent writing pages into the image.
    pub write_time: std::time::Duration,
}

impl MemStats {
    /// Adds another task's counters to these.
    pub fn add(&mut self, other: &MemStats) {
        self.pages_scanned += other.pages_scanned;
        self.pages_written += other.pages_written;
        self.pages_lazy += other.pages_lazy;
        self.pages_parent += other.pages_parent;
        self.page_pipes += other.page_pipes;
        self.pipe_fills += other.pipe_fills;
        self.write_time += other.write_time;
    }
}

/// The memory of a task could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// `/proc/<pid>/pagemap` could not be opened or read.
    #[error("cannot read the pagemap of task {pid}")]
    Pagemap {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// Setting up or filling the page pipe failed.
    #[error(transparent)]
    Pipe(#[from] PagePipeError),
    /// Writing the images failed.
    #[error(transparent)]
    Xfer(#[from] PageXferError),
    /// The injected `mprotect` that makes an unreadable VMA readable failed.
    #[error("cannot make vma {start:#x} of task {pid} readable for the dump")]
    Mprotect {
        /// The task.
        pid: RealPid,
        /// Start of the VMA.
        start: u64,
        /// Why.
        #[source]
        source: InjectError,
    },
}

/// What the dump of one task's private memory needs.
pub struct MemDump<'a, 't> {
    /// The injection in the (frozen) task.
    pub inj: &'a Injection<'t>,
    /// The task.
    pub pid: RealPid,
    /// Its pid in the images (names `pagemap-<vpid>.img`).
    pub vpid: u32,
    /// Id of the pages file.
    pub pages_id: u32,
    /// Its stack pointer (for CRIU's lazy-flag rule).
    pub sp: u64,
    /// How pages are moved.
    pub mode: PageMode,
    /// Against which parent images, for an incremental dump.
    pub incremental: Option<Incremental<'a>>,
    /// Send the pages to this page server instead of writing them.
    pub remote: Option<Sender>,
    /// Hand the task's last page pipes to this thread to drain.
    pub drainer: Option<&'a PageDrainer>,
}

/// What an incremental dump knows: pages written since the parent dump and
/// pages the parent images hold. Saved pages neither written nor missing
/// from the parent become `PE_PARENT` entries.
#[derive(Debug, Clone, Copy)]
pub struct Incremental<'a> {
    /// Pages written since the last scan (whole VMAs where not tracked).
    pub written: &'a Ranges,
    /// Pages the parent pagemap covers (present or itself in a parent);
    /// `None` when the parent is on a page server, which holds every page
    /// the tracker did not see written.
    pub parent: Option<&'a Ranges>,
}

impl Incremental<'_> {
    /// Cuts a run of pages to save into runs to write and `PE_PARENT` runs.
    pub fn split(&self, run: PageRun, mut emit: impl FnMut(PageRun)) {
        for (s, e, written) in self.written.split(run.vaddr, run.end()) {
            if written {
                emit(piece(run.flags, s, e));
                continue;
            }
            let Some(parent) = self.parent else {
                emit(piece(PE_PARENT, s, e));
                continue;
            };
            for (ps, pe, in_parent) in parent.split(s, e) {
                emit(piece(if in_parent { PE_PARENT } else { run.flags }, ps, pe));
            }
        }
    }
}

fn piece(flags: u32, start: u64, end: u64) -> PageRun {
    PageRun {
        vaddr: start,
        nr_pages: (end - start) / crate::proc::pagemap::PAGE_SIZE,
        flags,
    }
}

/// The pages of `vmas` to save, planned while the task is frozen, for a
/// pre-dump that reads them once the task runs again
/// ([`PageMode::Read`]). VMAs without read permission are skipped (their
/// pages then count as missing from this image for the next dump).
pub fn plan(
    pid: RealPid,
    vmas: &[Vma],
    sp: u64,
    incremental: Option<Incremental<'_>>,
) -> Result<(Vec<PageRun>, MemStats), MemError> {
    let pm_err = |source| MemError::Pagemap { pid, source };
    let path = crate::proc::path(pid.0, "pagemap");
    let pagemap = File::open(&path).map_err(|source| pm_err(ProcError::Read { path, source }))?;
    let zero_pfn = crate::proc::pagemap::zero_page_pfn();
    let mut runs: Vec<PageRun> = Vec::new();
    let mut stats = MemStats::default();
    for vma in vmas.iter().filter(|v| dirty::is_saved_kind(v)) {
        if vma.entry.prot & libc::PROT_READ as u32 == 0 {
            continue;
        }
        let flags = pagemap::run_flags(vma, sp);
        let scanned = pagemap::scan_vma(&pagemap, vma, zero_pfn, flags, |run| {
            let mut push = |r: PageRun| match runs.last_mut() {
                Some(p) if p.end() == r.vaddr && p.flags == r.flags => p.nr_pages += r.nr_pages,
                _ => runs.push(r),
            };
            match incremental {
                Some(inc) => inc.split(run, push),
                None => push(run),
            }
            Ok::<(), std::convert::Infallible>(())
        });
        stats.pages_scanned += match scanned {
            Ok(n) => n,
            Err(ScanError::Pagemap(source)) => return Err(pm_err(source)),
            Err(ScanError::Emit(e)) => match e {},
        };
    }
    for r in &runs {
        if r.flags & PE_PARENT != 0 {
            stats.pages_parent += r.nr_pages;
        } else if r.flags & PE_LAZY != 0 {
            stats.pages_lazy += r.nr_pages;
        }
    }
    Ok((runs, stats))
}

/// Writes planned runs into `pagemap-<vpid>.img` and `pages-<pages_id>.img`
/// with `process_vm_readv` while the task runs. Pages that vanish in the
/// meantime (an unmapped range) are written as zeros: the next dump does
/// not take them from this image, since their VMA is gone or new.
pub fn write_planned(
    pid: RealPid,
    vpid: u32,
    pages_id: u32,
    runs: Vec<PageRun>,
    dir: &ImagesDir,
    remote: Option<Sender>,
    stats: &mut MemStats,
) -> Result<(), MemError> {
    let source = PageSource::ReadTolerant(pid, page_pipe::max_pipe_size());
    let mut xfer = match remote {
        Some(sender) => PageXfer::remote(sender, source),
        None => PageXfer::create(dir, vpid, pages_id, source)?,
    };
    for run in runs {
        xfer.add(run)?;
    }
    let x = xfer.finish()?;
    stats.pages_written = x.pages_written;
    stats.write_time = x.write_time;
    Ok(())
}

/// Whether a VMA has any page to save (the pagemap scan finds a run).
fn has_pages(
    pagemap: &File,
    vma: &Vma,
    zero_pfn: Option<u64>,
    flags: u32,
) -> Result<bool, ProcError> {
    struct Found;
    match pagemap::scan_vma(pagemap, vma, zero_pfn, flags, |_| Err(Found)) {
        Ok(_) => Ok(false),
        Err(ScanError::Emit(Found)) => Ok(true),
        Err(ScanError::Pagemap(e)) => Err(e),
    }
}

impl MemDump<'_, '_> {
    /// Writes `pagemap-<vpid>.img` and `pages-<id>.img` for the private VMAs
    /// of `vmas` (CRIU's `parasite_dump_pages_seized`).
    #[doc(alias = "parasite_dump_pages_seized")]
    pub fn run(mut self, vmas: &[Vma], dir: &ImagesDir) -> Result<MemStats, MemError> {
        let pid = self.pid;
        let pm_err = |source| MemError::Pagemap { pid, source };
        let path = crate::proc::path(pid.0, "pagemap");
        let pagemap =
            File::open(&path).map_err(|source| pm_err(ProcError::Read { path, source }))?;
        let zero_pfn = crate::proc::pagemap::zero_page_pfn();
        let pipe = match self.mode {
            PageMode::Splice => Some(PagePipe::open(self.inj, pid, page_pipe::max_pipe_size())?),
            PageMode::Read => None,
        };
        let source = match &pipe {
            Some(p) => PageSource::Pipe(p),
            None => PageSource::Read(pid, page_pipe::max_pipe_size()),
        };
        let mut xfer = match self.remote.take() {
            Some(sender) => PageXfer::remote(sender, source),
            None => PageXfer::create(dir, self.vpid, self.pages_id, source)?,
        };
        if let Some(d) = self.drainer {
            xfer.hand_off_last(d);
        }
        let mut stats = MemStats {
            page_pipes: u64::from(pipe.is_some()),
            ..MemStats::default()
        };
        for vma in vmas {
            if !dirty::is_saved_kind(vma) {
                continue;
            }
            let flags = pagemap::run_flags(vma, self.sp);
            let unreadable = vma.entry.prot & libc::PROT_READ as u32 == 0;
            if unreadable && !has_pages(&pagemap, vma, zero_pfn, flags).map_err(pm_err)? {
                // Nothing to read (a guard page): no mprotect round trips.
                stats.pages_scanned += vma.len() / crate::proc::pagemap::PAGE_SIZE;
                continue;
            }
            if unreadable {
                xfer.flush()?;
                self.protect(vma, vma.entry.prot | libc::PROT_READ as u32)?;
            }
            let mut lazy = 0;
            let mut parent = 0;
            let incremental = self.incremental;
            let scanned = pagemap::scan_vma(&pagemap, vma, zero_pfn, flags, |run| {
                let mut result = Ok(());
                let mut add = |r: PageRun| {
                    if r.flags & PE_PARENT != 0 {
                        parent += r.nr_pages;
                    } else if r.flags & PE_LAZY != 0 {
                        lazy += r.nr_pages;
                    }
                    if result.is_ok() {
                        result = xfer.add(r);
                    }
                };
                match incremental {
                    Some(inc) => inc.split(run, &mut add),
                    None => add(run),
                }
                result
            });
            let flushed = if unreadable { xfer.flush() } else { Ok(()) };
            if unreadable {
                self.protect(vma, vma.entry.prot)?;
            }
            stats.pages_scanned += match scanned {
                Ok(n) => n,
                Err(ScanError::Pagemap(source)) => return Err(pm_err(source)),
                Err(ScanError::Emit(e)) => return Err(e.into()),
            };
            flushed?;
            stats.pages_lazy += lazy;
            stats.pages_parent += parent;
        }
        let x = xfer.finish()?;
        if let Some(p) = pipe {
            stats.page_pipes = p.count() as u64;
            p.close()?;
        }
        stats.pages_written = x.pages_written;
        stats.pipe_fills = x.fills;
        stats.write_time = x.write_time;
        Ok(stats)
    }

    fn protect(&self, vma: &Vma, prot: u32) -> Result<(), MemError> {
        let err = |source| MemError::Mprotect {
            pid: self.pid,
            start: vma.entry.start,
            source,
        };
        self.inj
            .syscall_ok(nr::MPROTECT, &[vma.entry.start, vma.len(), prot.into()])
            .map(drop)
            .map_err(err)
    }
}
