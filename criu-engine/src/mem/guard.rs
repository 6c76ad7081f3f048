//! `madvise(MADV_GUARD_INSTALL)` guard regions as `VMA_AREA_GUARD` entries
//! of `mm-<pid>.img` (CRIU's `collect_madv_guards` in `criu/mem.c` and
//! `restore_madv_guard_regions` in `criu/pie/restorer.c`).
//!
//! Guards live inside ordinary mappings without a VMA of their own, so
//! `smaps` does not show them; `PAGEMAP_SCAN` with the `PAGE_IS_GUARD`
//! category (Linux 6.14) finds them. Each run becomes a pseudo-VMA with
//! only `VMA_AREA_GUARD` in its status, placed after every real VMA; its
//! pages are never dumped, and the restore installs the guards again once
//! the memory is back. A kernel without the category cannot report guards
//! (they exist since 6.13): the dump then goes on without them and says so.
//!
//! # References
//!
//! - [madvise(2)](https://man7.org/linux/man-pages/man2/madvise.2.html)
//!   (`MADV_GUARD_INSTALL`),
//!   [PAGEMAP_SCAN](https://docs.kernel.org/admin-guide/mm/pagemap.html)

use std::os::fd::AsFd;

use criu_proto::images::VmaEntry;
use nix::errno::Errno;

use super::vma::TASK_SIZE;
use crate::sys::abi;
use crate::sys::probe::{self as sysprobe, PageRegion, PageScan};

/// `VMA_AREA_GUARD`.
pub const VMA_AREA_GUARD: u32 = 1 << 16;
/// Regions asked per `PAGEMAP_SCAN` call.
const SCAN_BATCH: usize = 1000;

/// The guard regions could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `/proc/<pid>/pagemap` could not be opened.
    #[error("task {pid}: cannot open its pagemap")]
    Open {
        /// The task.
        pid: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The scan failed.
    #[error("task {pid}: PAGEMAP_SCAN for guard pages from {start:#x} failed")]
    Scan {
        /// The task.
        pid: i32,
        /// Where the failing scan started.
        start: u64,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// The image entry of one guard run.
pub fn entry(start: u64, end: u64) -> VmaEntry {
    VmaEntry {
        start,
        end,
        pgoff: 0,
        shmid: 0,
        prot: 0,
        flags: 0,
        status: VMA_AREA_GUARD,
        fd: -1,
        madv: None,
        fdflags: None,
    }
}

/// Whether `v` is a guard pseudo-VMA.
pub fn is_guard(v: &VmaEntry) -> bool {
    v.status & VMA_AREA_GUARD != 0
}

/// The guard runs of task `pid`, in address order.
pub fn collect(pid: i32) -> Result<Vec<VmaEntry>, GuardError> {
    let pagemap = std::fs::File::open(crate::proc::path(pid, "pagemap"))
        .map_err(|source| GuardError::Open { pid, source })?;
    let mut out = vec![PageRegion::default(); SCAN_BATCH];
    let mut guards: Vec<VmaEntry> = Vec::new();
    let mut at = 0;
    while at < TASK_SIZE {
        let scan = PageScan {
            start: at,
            end: TASK_SIZE,
            category_mask: abi::PAGE_IS_GUARD,
            return_mask: abi::PAGE_IS_GUARD,
            ..PageScan::default()
        };
        let (n, walk_end) = match sysprobe::pagemap_scan_walk(pagemap.as_fd(), &scan, &mut out) {
            Ok(r) => r,
            Err(Errno::EINVAL) if at == 0 => {
                tracing::warn!(
                    pid,
                    "PAGEMAP_SCAN cannot report guard pages on this kernel: guards are not dumped"
                );
                return Ok(Vec::new());
            }
            Err(source) => {
                return Err(GuardError::Scan {
                    pid,
                    start: at,
                    source,
                })
            }
        };
        for r in &out[..n] {
            match guards.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => guards.push(entry(r.start, r.end)),
            }
        }
        if walk_end <= at {
            break;
        }
        at = walk_end;
    }
    Ok(guards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_entries_like_criu() {
        let e = entry(0x1000, 0x3000);
        assert_eq!(
            (e.start, e.end, e.status, e.fd),
            (0x1000, 0x3000, 1 << 16, -1)
        );
        assert_eq!((e.prot, e.flags, e.shmid, e.pgoff), (0, 0, 0, 0));
        assert!(is_guard(&e));
        assert!(!is_guard(&VmaEntry { status: 1, ..e }));
    }

    #[test]
    fn own_process_scans() {
        // The test harness installs no guards; the scan itself must work.
        let guards = collect(std::process::id() as i32).unwrap();
        assert!(guards.iter().all(|g| g.start < g.end));
    }
}
