//! Copying the saved pages into the restored task (CRIU's
//! `restore_priv_vma_content` in `criu/mem.c`, which `preadv()`s them from
//! inside each task, all tasks at once).
//!
//! The pages go in with `process_vm_writev` from a mapping of
//! `pages-<id>.img`. The kernel allocates, zeroes and fills the task's pages
//! on the caller's CPU, so the copy is cut into batches that a few threads
//! (as many as the machine has CPUs) take in turn. `process_vm_writev` needs
//! no ptrace stop and works from any thread; the calling (tracing) thread
//! takes batches too and returns once every batch is in.
//!
//! # References
//!
//! - [process_vm_writev(2)](https://man7.org/linux/man-pages/man2/process_vm_writev.2.html)

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_writev, RemoteIoVec};

use super::premap::Diff;
use super::{is_special, MmError, Premaps};
use crate::pstree::RealPid;
use crate::restore::images::TaskImages;
use crate::sys::file_map::FileMap;

/// `IOV_MAX`.
const IOV_MAX: usize = 1024;
/// Bytes of one batch at most: one `process_vm_writev`, and as much of the
/// pages files as one thread holds in its page tables at a time (see
/// [`FileMap::release`]).
const BATCH: usize = 4 << 20;
/// Threads copying at most (the caller included).
const MAX_THREADS: usize = 8;

/// One run of image bytes and where it goes in the task; `base` is what
/// the task's inherited copy already holds there ([`Premaps`]), if
/// anything: then only the pages that differ are written.
struct Entry<'p> {
    remote: usize,
    local: &'p [u8],
    base: Option<&'p [u8]>,
}

/// One `process_vm_writev` at most: runs, and which bytes of which pages
/// file they come from (`(file, offset, len)`).
#[derive(Default)]
struct Batch<'p> {
    entries: Vec<Entry<'p>>,
    sources: Vec<(usize, usize, usize)>,
    bytes: usize,
}

/// Cuts the saved pages of the task into batches of up to `IOV_MAX` runs
/// and [`BATCH`] bytes. vDSO pages come from this kernel, never from the
/// image; with `lazy`, pages of lazy VMAs are left to the lazy-pages daemon.
/// With `diff`, the pages of premapped VMAs are its runs (already compared
/// with the copies) rather than every saved page.
fn batches<'p>(
    images: &TaskImages,
    pages: &[&'p [u8]],
    lazy: bool,
    premaps: &'p Premaps,
    diff: Option<&Diff>,
) -> Vec<Batch<'p>> {
    let mut out: Vec<Batch<'p>> = Vec::new();
    let mut cur = Batch::default();
    for (vma, seg) in images.pages.in_vmas(&images.mm.vmas) {
        let end = seg.vaddr + seg.len;
        let mut addr = seg.vaddr;
        while addr < end {
            let room = (BATCH - cur.bytes) as u64;
            let stop = end.min(addr + room);
            let left_to_daemon = lazy && crate::restore::lazy::is_lazy_vma(vma);
            if !is_special(vma) && !left_to_daemon {
                let off = usize::try_from(seg.offset + (addr - seg.vaddr)).unwrap_or(usize::MAX);
                let len = usize::try_from(stop - addr).unwrap_or(0);
                let local = &pages[seg.file][off..off + len];
                match premaps.area(vma) {
                    Some(_) if diff.is_some() => {}
                    None => cur.entries.push(Entry {
                        remote: usize::try_from(addr).unwrap_or(0),
                        local,
                        base: None,
                    }),
                    Some(area) => {
                        // Cut where the copy changes from pages to none.
                        let mut at = addr;
                        while at < stop {
                            let (to, base) = premaps.copied(area, at, stop);
                            let from = (at - addr) as usize;
                            cur.entries.push(Entry {
                                remote: usize::try_from(at).unwrap_or(0),
                                local: &local[from..from + (to - at) as usize],
                                base,
                            });
                            at = to;
                        }
                    }
                }
                cur.sources.push((seg.file, off, len));
                cur.bytes += len;
                if cur.entries.len() >= IOV_MAX || cur.bytes >= BATCH {
                    out.push(std::mem::take(&mut cur));
                }
            }
            addr = stop;
        }
    }
    for &(addr, file, offset, len) in diff.into_iter().flatten() {
        let (mut addr, mut off, end) = (addr, offset as usize, addr + len);
        while addr < end {
            let n = (BATCH - cur.bytes).min((end - addr) as usize);
            cur.entries.push(Entry {
                remote: usize::try_from(addr).unwrap_or(0),
                local: &pages[file][off..off + n],
                base: None,
            });
            cur.sources.push((file, off, n));
            cur.bytes += n;
            if cur.entries.len() >= IOV_MAX || cur.bytes >= BATCH {
                out.push(std::mem::take(&mut cur));
            }
            addr += n as u64;
            off += n;
        }
    }
    if !cur.entries.is_empty() {
        out.push(cur);
    }
    out
}

/// Copies every saved page into task `pid` (see [`batches`] for which),
/// from the mappings `maps` of the pages files (`pages` are their bytes).
pub(super) fn fill_pages(
    pid: RealPid,
    images: &TaskImages,
    maps: &[Option<FileMap>],
    pages: &[&[u8]],
    lazy: bool,
    premaps: &Premaps,
    diff: Option<&Diff>,
) -> Result<(), MmError> {
    let work = batches(images, pages, lazy, premaps, diff);
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
        .min(work.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<MmError>> = Mutex::new(None);
    // Takes batches until none is left or one failed.
    let copy = || {
        while !failed.load(Ordering::Relaxed) {
            let Some(batch) = work.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            if let Err(e) = write_entries(pid, &batch.entries) {
                failed.store(true, Ordering::Relaxed);
                first_err
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert(e);
                return;
            }
            for &(file, off, len) in &batch.sources {
                if let Some(m) = &maps[file] {
                    m.release(off, len);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            // Without a helper thread the caller copies more itself.
            if let Err(e) = std::thread::Builder::new()
                .name("page-fill".into())
                .spawn_scoped(s, copy)
            {
                tracing::debug!(err = %e, "cannot start a page-fill thread");
                break;
            }
        }
        copy();
    });
    match first_err
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes `entries`, but only the pages of each that differ from its
/// `base`.
fn write_entries(pid: RealPid, entries: &[Entry<'_>]) -> Result<(), MmError> {
    const PAGE: usize = 4096;
    let mut runs: Vec<(usize, &[u8])> = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(base) = e.base else {
            runs.push((e.remote, e.local));
            continue;
        };
        // Runs of differing pages.
        let mut open: Option<usize> = None;
        for at in (0..e.local.len()).step_by(PAGE) {
            let end = (at + PAGE).min(e.local.len());
            let same = e.local[at..end] == base[at..end];
            match (open, same) {
                (None, false) => open = Some(at),
                (Some(from), true) => {
                    runs.push((e.remote + from, &e.local[from..at]));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            runs.push((e.remote + from, &e.local[from..]));
        }
    }
    for part in runs.chunks(IOV_MAX) {
        let local: Vec<IoSlice<'_>> = part.iter().map(|r| IoSlice::new(r.1)).collect();
        let remote: Vec<RemoteIoVec> = part
            .iter()
            .map(|r| RemoteIoVec {
                base: r.0,
                len: r.1.len(),
            })
            .collect();
        write_batch(pid, &local, &remote)?;
    }
    Ok(())
}

fn write_batch(pid: RealPid, local: &[IoSlice<'_>], remote: &[RemoteIoVec]) -> Result<(), MmError> {
    let total: usize = remote.iter().map(|v| v.len).sum();
    let err = |addr: usize, source| MmError::WritePages {
        pid,
        addr: addr as u64,
        source,
    };
    let done =
        process_vm_writev(pid.as_nix(), local, remote).map_err(|e| err(remote[0].base, e))?;
    if done == total {
        return Ok(());
    }
    // A short write stops at a run boundary or inside one: finish run by run.
    let mut skip = done;
    for (l, rv) in local.iter().zip(remote) {
        if skip >= rv.len {
            skip -= rv.len;
            continue;
        }
        let mut at = skip;
        skip = 0;
        while at < rv.len {
            let n = process_vm_writev(
                pid.as_nix(),
                &[IoSlice::new(&l[at..])],
                &[RemoteIoVec {
                    base: rv.base + at,
                    len: rv.len - at,
                }],
            )
            .map_err(|e| err(rv.base + at, e))?;
            if n == 0 {
                return Err(err(rv.base + at, Errno::EFAULT));
            }
            at += n;
        }
    }
    Ok(())
}
