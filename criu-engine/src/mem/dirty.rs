//! Which pages a task wrote since the previous dump, without soft-dirty bits
//! (CRIU tracks with soft-dirty: `criu/mem.c`, `criu/pagemap-cache.c`; it has
//! no counterpart for this mechanism).
//!
//! The tracker is a userfaultfd of the *target's* mm in asynchronous
//! write-protect mode (`UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED`):
//! a write to a protected page is resolved by the kernel at once, which only
//! clears the page's write-protect bit. `PAGEMAP_SCAN` with
//! `PM_SCAN_WP_MATCHING` then reports the pages whose bit is clear
//! (`PAGE_IS_WRITTEN`) and protects them again in the same walk, so no write
//! can fall between reading the set and re-arming it.
//!
//! The descriptor is created inside the target by an injected
//! `userfaultfd(2)` (a userfaultfd belongs to the mm of its creator), moved
//! to a high descriptor number ([`TRACK_FD_MIN`] or above) and duplicated
//! into the engine with `pidfd_getfd`; every ioctl runs from the engine on
//! that copy.
//!
//! # What the target carries between dumps
//!
//! Between a pre-dump and the next dump the target holds exactly one extra
//! descriptor, `anon_inode:[userfaultfd]` (close-on-exec, number
//! [`TRACK_FD_MIN`] or the lowest free one above it), and its tracked VMAs
//! show `uw` in `VmFlags`. Writes to protected pages cost one minor fault
//! each. The next invocation finds the descriptor by its link and its
//! features in `/proc/<pid>/fdinfo` (so separate CLI or RPC invocations
//! share the tracking). The final dump closes it: the kernel then
//! unregisters every range, and nothing of the engine remains.
//!
//! # Which VMAs are tracked
//!
//! Private VMAs the dump saves pages of. A VMA that is not registered with
//! the tracker (new since the last dump, moved by `mremap`, or refused by
//! the kernel) counts as written whole, and is registered for the next
//! round. A page is left to the parent images only when it was not written
//! *and* the parent pagemap covers it.
//!
//! # References
//!
//! - [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html)
//! - [pagemap](https://docs.kernel.org/admin-guide/mm/pagemap.html) (`PAGEMAP_SCAN`)

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;

use crate::arch::nr;
use crate::inject::{close_remote, steal_fd, InjectError, Injection};
use crate::pstree::RealPid;
use crate::sys::abi;
use crate::sys::probe::{self as sysprobe, PageRegion, PageScan};
use crate::sys::uffd;

use super::vma::{status, Vma};

/// The lowest descriptor number the tracker takes in the target.
pub const TRACK_FD_MIN: i32 = 1000;
/// Features the tracker asks `UFFDIO_API` for.
const FEATURES: u64 = abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED;
/// `MAP_DROPPABLE`: such VMAs are never saved.
const MAP_DROPPABLE: u32 = 0x08;
/// Regions asked of one `PAGEMAP_SCAN` call.
const SCAN_BATCH: usize = 1024;

/// Tracking written pages failed.
#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    /// An injected syscall failed.
    #[error("task {pid}: cannot set up memory tracking in the task")]
    Inject {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// The userfaultfd handshake failed.
    #[error("task {pid}: userfaultfd refuses asynchronous write-protect")]
    Api {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: Errno,
    },
    /// `PAGEMAP_SCAN` failed.
    #[error("task {pid}: PAGEMAP_SCAN of {start:#x}-{end:#x} failed")]
    Scan {
        /// The task.
        pid: RealPid,
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// Whether this kernel can track written pages this way: userfaultfd with
/// asynchronous write-protect on unpopulated pages, and `PAGEMAP_SCAN`
/// (Linux 6.7). Probed once per process.
pub fn kernel_supports() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        let Ok(uffd) = sysprobe::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK) else {
            return false;
        };
        let uffd_ok = sysprobe::uffdio_api(uffd.as_fd(), 0)
            .is_ok_and(|features| features & FEATURES == FEATURES);
        let scan_ok = File::open("/proc/self/pagemap").is_ok_and(|f| {
            let page = crate::proc::pagemap::PAGE_SIZE;
            let probe = [0u8; 1];
            let start = (probe.as_ptr() as u64) / page * page;
            let scan = PageScan {
                start,
                end: start + page,
                category_anyof_mask: abi::PAGE_IS_PRESENT,
                return_mask: abi::PAGE_IS_PRESENT,
                ..PageScan::default()
            };
            let mut out = [PageRegion::default(); 1];
            sysprobe::pagemap_scan(f.as_fd(), &scan, &mut out).is_ok()
        });
        uffd_ok && scan_ok
    })
}

/// Sorted, disjoint, coalesced address ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds a range at or after every range already there.
    pub fn push(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => self.0.push((start, end)),
        }
    }

    /// Builds the set from ranges in any order.
    pub fn from_unsorted(mut v: Vec<(u64, u64)>) -> Self {
        v.sort_unstable();
        let mut r = Ranges::default();
        for (s, e) in v {
            r.push(s, e);
        }
        r
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Cuts `[start, end)` at the set's boundaries: each piece with whether
    /// it lies inside the set, in address order.
    pub fn split(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let mut at = start;
        let first = self.0.partition_point(|r| r.1 <= start);
        for &(s, e) in &self.0[first..] {
            if at >= end || s >= end {
                break;
            }
            if s > at {
                out.push((at, s, false));
                at = s;
            }
            let stop = e.min(end);
            out.push((at, stop, true));
            at = stop;
        }
        if at < end {
            out.push((at, end, false));
        }
        out
    }
}

/// Whether a dump saves pages of `vma`: a private VMA, not `[vvar]`, not
/// `MAP_DROPPABLE`.
pub fn is_saved_kind(vma: &Vma) -> bool {
    vma.is_private() && !vma.is(status::VVAR) && vma.entry.flags & MAP_DROPPABLE == 0
}

/// Whether the tracker watches `vma`: a VMA whose pages a dump saves, but
/// not the vDSO (saved whole every time).
pub fn is_tracked_kind(vma: &Vma) -> bool {
    is_saved_kind(vma) && !vma.is(status::VDSO)
}

/// The userfaultfd tracking one task, held by the engine for one dump.
pub struct Tracker {
    pid: RealPid,
    uffd: OwnedFd,
    remote: Option<i32>,
    continued: bool,
}

impl Tracker {
    /// Takes the tracker an earlier dump left in the frozen task, or creates
    /// one there.
    pub fn attach(inj: &Injection<'_>, pid: RealPid) -> Result<Tracker, DirtyError> {
        let err = |source| DirtyError::Inject { pid, source };
        if let Some(fd) = find_in_task(pid) {
            let uffd = steal_fd(pid, fd).map_err(err)?;
            tracing::debug!(%pid, fd, "memory tracker found in the task");
            return Ok(Tracker {
                pid,
                uffd,
                remote: Some(fd),
                continued: true,
            });
        }
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = inj.syscall_ok(nr::USERFAULTFD, &[flags]).map_err(err)? as i32;
        // Move it out of the range the program uses for its own descriptors.
        let high = inj.syscall(
            nr::FCNTL,
            &[fd as u64, libc::F_DUPFD_CLOEXEC as u64, TRACK_FD_MIN as u64],
        );
        let fd = match high {
            Ok(h) if h >= 0 => {
                close_remote(inj, fd).map_err(err)?;
                h as i32
            }
            _ => fd,
        };
        let mut tracker = Tracker {
            pid,
            uffd: match steal_fd(pid, fd) {
                Ok(u) => u,
                Err(e) => {
                    let _ = close_remote(inj, fd);
                    return Err(err(e));
                }
            },
            remote: Some(fd),
            continued: false,
        };
        if let Err(source) = sysprobe::uffdio_api(tracker.uffd.as_fd(), FEATURES) {
            let _ = tracker.release(inj);
            return Err(DirtyError::Api { pid, source });
        }
        tracing::debug!(%pid, fd, "memory tracker created in the task");
        Ok(tracker)
    }

    /// Whether tracking went on since an earlier dump (otherwise every page
    /// counts as written).
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// The tracker's descriptor number in the task, while it is open there.
    pub fn remote_fd(&self) -> Option<i32> {
        self.remote
    }

    /// Reports the pages of the tracked VMAs of `vmas` written since the
    /// last scan and write-protects them again; VMAs not tracked yet count
    /// as written whole and are registered. With `skip_unreadable` (a dump
    /// that will not save VMAs without read permission), such VMAs are
    /// unregistered so that the next dump saves them whole: a tracked VMA
    /// is always one whose pages the last dump saved. The task must be
    /// frozen.
    pub fn scan(
        &self,
        pagemap: &File,
        vmas: &[Vma],
        skip_unreadable: bool,
    ) -> Result<Ranges, DirtyError> {
        let mut written = Ranges::default();
        for vma in vmas.iter().filter(|v| is_saved_kind(v)) {
            let (start, end) = (vma.entry.start, vma.entry.end);
            if !is_tracked_kind(vma) {
                written.push(start, end);
                continue;
            }
            if skip_unreadable && vma.entry.prot & libc::PROT_READ as u32 == 0 {
                written.push(start, end);
                if self.continued && vma.uffd_wp {
                    if let Err(err) = uffd::unregister(self.uffd.as_fd(), start, end - start) {
                        tracing::debug!(pid = %self.pid, start, end, %err, "cannot unregister an unreadable vma");
                    }
                }
                continue;
            }
            if self.continued && vma.uffd_wp {
                let flags = abi::PM_SCAN_WP_MATCHING | abi::PM_SCAN_CHECK_WPASYNC;
                match self.written_in(pagemap, start, end, flags) {
                    Ok(w) => {
                        for (s, e) in w.0 {
                            written.push(s, e);
                        }
                        continue;
                    }
                    // Registered with another userfaultfd, or not async.
                    Err(DirtyError::Scan {
                        source: Errno::EPERM,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
            written.push(start, end);
            match uffd::register_wp(self.uffd.as_fd(), start, end - start) {
                // Arm every page now: the scan protects what it reports.
                Ok(()) => drop(self.written_in(pagemap, start, end, abi::PM_SCAN_WP_MATCHING)?),
                Err(err) => {
                    tracing::debug!(pid = %self.pid, start, end, %err, "vma not tracked; dumped whole every time")
                }
            }
        }
        Ok(written)
    }

    fn written_in(
        &self,
        pagemap: &File,
        start: u64,
        end: u64,
        flags: u64,
    ) -> Result<Ranges, DirtyError> {
        let mut out = vec![PageRegion::default(); SCAN_BATCH];
        let mut written = Ranges::default();
        let mut at = start;
        while at < end {
            let scan = PageScan {
                flags,
                start: at,
                end,
                category_mask: abi::PAGE_IS_WRITTEN,
                return_mask: abi::PAGE_IS_WRITTEN,
                ..PageScan::default()
            };
            let (n, walk_end) = sysprobe::pagemap_scan_walk(pagemap.as_fd(), &scan, &mut out)
                .map_err(|source| DirtyError::Scan {
                    pid: self.pid,
                    start: at,
                    end,
                    source,
                })?;
            for r in &out[..n] {
                written.push(r.start, r.end);
            }
            if walk_end <= at || n < out.len() {
                break;
            }
            at = walk_end;
        }
        Ok(written)
    }

    /// The engine's descriptor (its close may be the last one).
    pub fn into_fd(self) -> OwnedFd {
        self.uffd
    }

    /// Closes the tracker in the task (the kernel unregisters every range
    /// once the engine's copy is dropped too).
    pub fn release(&mut self, inj: &Injection<'_>) -> Result<(), DirtyError> {
        match self.remote.take() {
            Some(fd) => close_remote(inj, fd).map_err(|source| DirtyError::Inject {
                pid: self.pid,
                source,
            }),
            None => Ok(()),
        }
    }
}

/// The descriptor of the task that is an engine tracker: a userfaultfd with
/// asynchronous write-protect, at [`TRACK_FD_MIN`] or above when possible.
pub fn find_in_task(pid: RealPid) -> Option<i32> {
    let dir = std::fs::read_dir(crate::proc::path(pid.0, "fd")).ok()?;
    let mut found: Vec<i32> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.as_os_str() == "anon_inode:[userfaultfd]").then_some(fd)
        })
        .filter(|fd| {
            crate::proc::read(pid.0, &format!("fdinfo/{fd}"))
                .ok()
                .and_then(|t| uffd_features(&t))
                .is_some_and(|f| f & FEATURES == FEATURES)
        })
        .collect();
    found.sort_unstable();
    found
        .iter()
        .copied()
        .find(|fd| *fd >= TRACK_FD_MIN)
        .or(found.first().copied())
}

/// Features of a userfaultfd from its fdinfo (`API:\t<api>:<features>:<ioctls>`).
fn uffd_features(fdinfo: &str) -> Option<u64> {
    let api = fdinfo.lines().find_map(|l| l.strip_prefix("API:"))?;
    let features = api.trim().split(':').nth(1)?;
    u64::from_str_radix(features, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_boundaries() {
        let r = Ranges::from_unsorted(vec![(0x5000, 0x6000), (0x1000, 0x3000), (0x2000, 0x4000)]);
        assert_eq!(r.as_slice(), &[(0x1000, 0x4000), (0x5000, 0x6000)]);
        assert_eq!(
            r.split(0, 0x7000),
            vec![
                (0, 0x1000, false),
                (0x1000, 0x4000, true),
                (0x4000, 0x5000, false),
                (0x5000, 0x6000, true),
                (0x6000, 0x7000, false)
            ]
        );
        assert_eq!(r.split(0x2000, 0x3000), vec![(0x2000, 0x3000, true)]);
        assert_eq!(r.split(0x4000, 0x5000), vec![(0x4000, 0x5000, false)]);
        assert_eq!(Ranges::default().split(1, 2), vec![(1, 2, false)]);
    }

    #[test]
    fn fdinfo_features() {
        let t = "pending:\t0\ntotal:\t0\nAPI:\taa:a000:8000000000000053\n";
        assert_eq!(uffd_features(t), Some(0xa000));
        assert_eq!(uffd_features("pos: 0\n"), None);
    }

    #[test]
    fn armed_unpopulated_pages_are_markers_not_data() {
        let buf = vec![0u8; 8 << 20];
        let page = crate::proc::pagemap::PAGE_SIZE;
        // Inside a fresh (never touched) mapping of the allocator.
        let start = (buf.as_ptr() as u64).div_ceil(page) * page + (2 << 20);
        let end = start + 16 * page;
        let uffd = sysprobe::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
        sysprobe::uffdio_api(uffd.as_fd(), FEATURES).unwrap();
        uffd::register_wp(uffd.as_fd(), start, end - start).unwrap();
        let f = File::open("/proc/self/pagemap").unwrap();
        let scan = PageScan {
            flags: abi::PM_SCAN_WP_MATCHING,
            start,
            end,
            category_mask: abi::PAGE_IS_WRITTEN,
            return_mask: abi::PAGE_IS_WRITTEN,
            ..PageScan::default()
        };
        let mut out = vec![PageRegion::default(); 16];
        sysprobe::pagemap_scan_walk(f.as_fd(), &scan, &mut out).unwrap();
        let words = crate::proc::pagemap::read_range(&f, start, end).unwrap();
        for pme in words {
            assert!(crate::proc::pagemap::is_pte_marker(pme), "{pme:#x}");
        }
        drop(buf);
    }

    #[test]
    fn this_kernel_can_track() {
        // The machines this project runs on have Linux 6.7 or later.
        assert!(kernel_supports());
    }
}
