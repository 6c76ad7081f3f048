//! Which pages of a VMA a dump saves (CRIU's `should_dump_page`,
//! `generate_iovs`).
//!
//! A page is saved when `/proc/<pid>/pagemap` says it is present or swapped
//! and it is not the shared zero page; in a private file mapping, pages still
//! backed by the file (not yet copied on write) are skipped; guard pages are
//! skipped; the vDSO is saved whole. Consecutive saved pages form runs, and
//! runs that touch (even across VMAs) are merged by the caller.
//!
//! The words are read in bounded chunks so the engine's memory does not grow
//! with the size of the task.

use std::fs::File;

use crate::proc::pagemap::{
    read_range, PAGE_SIZE, PME_FILE, PME_GUARD_REGION, PME_PFRAME_MASK, PME_PRESENT, PME_SWAP,
};
use crate::proc::ProcError;

use super::vma::{status, Vma};

/// `PE_PARENT`: contents are in the parent images.
pub const PE_PARENT: u32 = 1 << 0;
/// `PE_LAZY`: may be restored lazily.
pub const PE_LAZY: u32 = 1 << 1;
/// `PE_PRESENT`: contents are in this pages file.
pub const PE_PRESENT: u32 = 1 << 2;

/// Pages of pagemap words read per `pread` (256 KiB of words, 256 MiB of
/// address space).
const CHUNK_PAGES: u64 = 32 * 1024;

/// A run of consecutive pages to save, with its pagemap flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// First page.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u64,
    /// `PE_*` flags of the run.
    pub flags: u32,
}

impl PageRun {
    /// First address after the run.
    pub fn end(&self) -> u64 {
        self.vaddr + self.nr_pages * PAGE_SIZE
    }
}

/// The decision for one page, given its pagemap word.
#[doc(alias = "should_dump_page")]
pub fn should_dump(vma: &Vma, pme: u64, zero_pfn: Option<u64>) -> bool {
    if vma.is(status::VDSO) {
        return true;
    }
    // Guard regions and the markers memory tracking leaves on pages never
    // populated hold no data.
    if pme & PME_GUARD_REGION != 0 || crate::proc::pagemap::is_pte_marker(pme) {
        return false;
    }
    if vma.is(status::FILE_PRIVATE) && pme & PME_FILE != 0 {
        return false;
    }
    let is_zero = zero_pfn.is_some_and(|z| pme & PME_PFRAME_MASK == z);
    pme & (PME_PRESENT | PME_SWAP) != 0 && !is_zero
}

/// Flags CRIU gives the pages of `vma` (`PE_LAZY` for private anonymous
/// memory). CRIU means to keep the page under a thread's stack pointer
/// non-lazy, but compares only the offset-in-page bits; we reproduce what it
/// does: only a page-aligned `sp` makes pages non-lazy.
pub fn run_flags(vma: &Vma, sp: u64) -> u32 {
    if vma.can_be_lazy() && sp % PAGE_SIZE != 0 {
        PE_LAZY | PE_PRESENT
    } else {
        PE_PRESENT
    }
}

/// Scans the pages of one private VMA and hands each run of pages to save
/// to `emit` (runs never cross a chunk boundary; the caller merges them).
/// Returns the number of pages scanned.
pub fn scan_vma<E>(
    pagemap: &File,
    vma: &Vma,
    zero_pfn: Option<u64>,
    flags: u32,
    mut emit: impl FnMut(PageRun) -> Result<(), E>,
) -> Result<u64, ScanError<E>> {
    let (start, end) = (vma.entry.start, vma.entry.end);
    let mut chunk_start = start;
    while chunk_start < end {
        let chunk_end = end.min(chunk_start + CHUNK_PAGES * PAGE_SIZE);
        let words = read_range(pagemap, chunk_start, chunk_end).map_err(ScanError::Pagemap)?;
        let mut run: Option<PageRun> = None;
        for (i, pme) in words.iter().enumerate() {
            let vaddr = chunk_start + i as u64 * PAGE_SIZE;
            if should_dump(vma, *pme, zero_pfn) {
                match &mut run {
                    Some(r) => r.nr_pages += 1,
                    None => {
                        run = Some(PageRun {
                            vaddr,
                            nr_pages: 1,
                            flags,
                        })
                    }
                }
            } else if let Some(r) = run.take() {
                emit(r).map_err(ScanError::Emit)?;
            }
        }
        if let Some(r) = run.take() {
            emit(r).map_err(ScanError::Emit)?;
        }
        chunk_start = chunk_end;
    }
    Ok((end - start) / PAGE_SIZE)
}

/// A scan failed reading the pagemap or handing a run on.
#[derive(Debug)]
pub enum ScanError<E> {
    /// `pread` of `/proc/<pid>/pagemap` failed.
    Pagemap(ProcError),
    /// The consumer of the runs failed.
    Emit(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_proto::images::VmaEntry;

    fn vma(status: u32, flags: u32) -> Vma {
        Vma {
            entry: VmaEntry {
                start: 0x1000,
                end: 0x5000,
                status,
                flags,
                fd: -1,
                ..Default::default()
            },
            file: None,
            uffd_wp: false,
        }
    }

    const ANON: u32 = status::REGULAR | status::ANON_PRIVATE;
    const ANON_FLAGS: u32 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32;

    #[test]
    fn page_decisions() {
        let anon = vma(ANON, ANON_FLAGS);
        let file = vma(
            status::REGULAR | status::FILE_PRIVATE,
            libc::MAP_PRIVATE as u32,
        );
        let vdso = vma(ANON | status::VDSO, ANON_FLAGS);
        assert!(should_dump(&anon, PME_PRESENT | 1234, Some(77)));
        assert!(should_dump(&anon, PME_SWAP | 5, Some(77)));
        assert!(!should_dump(&anon, 0, Some(77)), "untouched");
        assert!(!should_dump(&anon, PME_PRESENT | 77, Some(77)), "zero page");
        assert!(!should_dump(&anon, PME_PRESENT | PME_GUARD_REGION, None));
        assert!(
            !should_dump(&file, PME_PRESENT | PME_FILE | 9, None),
            "file page"
        );
        assert!(should_dump(&file, PME_PRESENT | 9, None), "copied on write");
        assert!(should_dump(&vdso, 0, None), "vdso whole");
    }

    #[test]
    fn lazy_flags_follow_criu() {
        let anon = vma(ANON, ANON_FLAGS);
        assert_eq!(run_flags(&anon, 0x7ffd_0000_0058), PE_LAZY | PE_PRESENT);
        assert_eq!(run_flags(&anon, 0x7ffd_0000_0000), PE_PRESENT);
        let vdso = vma(ANON | status::VDSO, ANON_FLAGS);
        assert_eq!(run_flags(&vdso, 0x58), PE_PRESENT);
        let file = vma(
            status::REGULAR | status::FILE_PRIVATE,
            libc::MAP_PRIVATE as u32,
        );
        assert_eq!(run_flags(&file, 0x58), PE_PRESENT);
    }

    #[test]
    fn scans_own_memory_into_runs() {
        let mut buf = vec![0u8; 8 * PAGE_SIZE as usize];
        let base = (buf.as_ptr() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let off = (base - buf.as_ptr() as u64) as usize;
        for p in [0usize, 1, 3] {
            buf[off + p * PAGE_SIZE as usize] = 1;
        }
        let mut v = vma(ANON, ANON_FLAGS);
        v.entry.start = base;
        v.entry.end = base + 4 * PAGE_SIZE;
        let f = File::open("/proc/self/pagemap").unwrap();
        let mut runs = Vec::new();
        let scanned = scan_vma(&f, &v, None, PE_PRESENT, |r| {
            runs.push(r);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(scanned, 4);
        // Page 2 may or may not be present (heap pages are often pre-faulted);
        // pages 0, 1 and 3 are saved and covered by the runs.
        let covered: u64 = runs.iter().map(|r| r.nr_pages).sum();
        assert!(covered >= 3);
        assert_eq!(runs[0].vaddr, base);
        assert_eq!(runs.last().unwrap().end(), base + 4 * PAGE_SIZE);
        std::hint::black_box(&buf);
    }
}
