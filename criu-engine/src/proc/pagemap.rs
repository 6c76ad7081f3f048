//! `/proc/<pid>/pagemap`: one 64-bit word per virtual page (CRIU's
//! `criu/pagemap-cache.c` reads it; `criu/include/mem.h` names the bits).
//!
//! ```text
//!  63 present   62 swapped   61 file-page or shared-anon   58 guard region
//!  55 soft-dirty             54..0 page frame number (root only)
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::ProcError;

/// Page size the engine works with (x86-64).
pub const PAGE_SIZE: u64 = 4096;
/// The page is in RAM.
pub const PME_PRESENT: u64 = 1 << 63;
/// The page is swapped out.
pub const PME_SWAP: u64 = 1 << 62;
/// The page is a file page or shared anonymous memory (not a private copy).
pub const PME_FILE: u64 = 1 << 61;
/// The page is covered by an `MADV_GUARD_INSTALL` guard.
pub const PME_GUARD_REGION: u64 = 1 << 58;
/// Soft-dirty bit (only on kernels with `CONFIG_MEM_SOFT_DIRTY`).
pub const PME_SOFT_DIRTY: u64 = 1 << 55;
/// Page frame number bits.
pub const PME_PFRAME_MASK: u64 = (1 << 55) - 1;

/// Reads the words of pages `[start, end)` with one `pread`.
pub fn read_range(pagemap: &File, start: u64, end: u64) -> Result<Vec<u64>, ProcError> {
    let pages = ((end - start) / PAGE_SIZE) as usize;
    let mut bytes = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut bytes, start / PAGE_SIZE * 8)
        .map_err(|source| ProcError::Read {
            path: "pagemap".into(),
            source,
        })?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8 bytes")))
        .collect())
}

/// Swap type of the kernel's PTE markers (`SWP_PTE_MARKER`: the last of
/// the 32 types of the 5-bit field).
const SWP_PTE_MARKER: u64 = 31;

/// Whether `pme` is a PTE marker: no page, only a note such as the
/// write-protect bit a userfaultfd leaves on a never-populated page. The
/// type is only visible with PFNs shown (`CAP_SYS_ADMIN`).
pub fn is_pte_marker(pme: u64) -> bool {
    pme & PME_PRESENT == 0 && pme & PME_SWAP != 0 && pme & 0x1f == SWP_PTE_MARKER
}

/// A page of our own `.bss` that is only ever read: the kernel backs it with
/// the shared zero page.
#[repr(C, align(4096))]
struct ZeroProbe([AtomicU64; 512]);

static ZERO_PROBE: ZeroProbe = ZeroProbe([const { AtomicU64::new(0) }; 512]);

/// The PFN of the kernel's shared zero page, as CRIU's kerndat finds it:
/// read an untouched anonymous page and look its frame up in our own
/// pagemap. `None` when PFNs are hidden (no `CAP_SYS_ADMIN`).
#[doc(alias = "init_zero_page_pfn")]
pub fn zero_page_pfn() -> Option<u64> {
    static PFN: OnceLock<Option<u64>> = OnceLock::new();
    *PFN.get_or_init(|| {
        let addr = std::ptr::addr_of!(ZERO_PROBE) as u64;
        if ZERO_PROBE.0[0].load(Ordering::Relaxed) != 0 {
            return None;
        }
        let file = File::open("/proc/self/pagemap").ok()?;
        let pme = *read_range(&file, addr, addr + PAGE_SIZE).ok()?.first()?;
        let pfn = pme & PME_PFRAME_MASK;
        (pme & PME_PRESENT != 0 && pfn != 0).then_some(pfn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_pagemap() {
        let data = vec![1u8; 3 * PAGE_SIZE as usize];
        let start = (data.as_ptr() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let f = File::open("/proc/self/pagemap").unwrap();
        let words = read_range(&f, start, start + PAGE_SIZE).unwrap();
        assert_eq!(words.len(), 1);
        assert_ne!(words[0] & PME_PRESENT, 0, "touched heap page is present");
        assert_eq!(words[0] & PME_FILE, 0, "heap page is anonymous");
    }

    #[test]
    fn zero_page_is_found_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: PFNs in pagemap are hidden from other users"
        );
        let pfn = zero_page_pfn().expect("root sees PFNs");
        assert_ne!(pfn, 0);
    }
}
