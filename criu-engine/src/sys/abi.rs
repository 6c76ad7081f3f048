//! Kernel UAPI values the `libc` crate does not (yet) export.
//!
//! Values come from the Linux UAPI headers named on each item; they are ABI and
//! never change.

/// `PTRACE_SECCOMP_GET_FILTER` (`linux/ptrace.h`).
pub(crate) const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `PTRACE_SECCOMP_GET_METADATA` (`linux/ptrace.h`).
pub(crate) const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// `PTRACE_GET_RSEQ_CONFIGURATION` (`linux/ptrace.h`).
pub(crate) const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// `PTRACE_O_SUSPEND_SECCOMP` (`linux/ptrace.h`).
pub(crate) const PTRACE_O_SUSPEND_SECCOMP: libc::c_ulong = 1 << 21;

/// `PR_SET_MM` (`linux/prctl.h`).
pub(crate) const PR_SET_MM: libc::c_int = 35;
/// `PR_SET_MM_MAP_SIZE` (`linux/prctl.h`).
pub(crate) const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
/// `PR_TIMER_CREATE_RESTORE_IDS` (`linux/prctl.h`, recent kernels).
pub(crate) const PR_TIMER_CREATE_RESTORE_IDS: libc::c_int = 77;
/// `PR_TIMER_CREATE_RESTORE_IDS_GET` (`linux/prctl.h`).
pub(crate) const PR_TIMER_CREATE_RESTORE_IDS_GET: libc::c_ulong = 2;

/// `KCMP_VM` (`linux/kcmp.h`).
pub(crate) const KCMP_VM: libc::c_int = 1;
/// `KCMP_EPOLL_TFD` (`linux/kcmp.h`).
pub(crate) const KCMP_EPOLL_TFD: libc::c_int = 7;

/// `UFFD_API` (`linux/userfaultfd.h`).
pub(crate) const UFFD_API: u64 = 0xaa;
/// `UFFDIO_API` = `_IOWR(0xaa, 0x3f, struct uffdio_api)`.
pub(crate) const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;

/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)` (`linux/fs.h`).
pub(crate) const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// `PAGE_IS_FILE` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_FILE: u64 = 1 << 2;
/// `PAGE_IS_PRESENT` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGE_IS_SWAPPED` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_PFNZERO` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_SOFT_DIRTY` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;
/// `PAGE_IS_GUARD` category of `PAGEMAP_SCAN` (Linux 6.14).
pub(crate) const PAGE_IS_GUARD: u64 = 1 << 8;

/// `MOVE_MOUNT_SET_GROUP` (`linux/mount.h`).
pub(crate) const MOVE_MOUNT_SET_GROUP: libc::c_uint = 0x100;
/// `MADV_GUARD_INSTALL` (`asm-generic/mman-common.h`, Linux 6.13).
pub(crate) const MADV_GUARD_INSTALL: libc::c_int = 102;
/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (`linux/membarrier.h`, Linux 6.3).
pub(crate) const MEMBARRIER_CMD_GET_REGISTRATIONS: libc::c_int = 1 << 9;

/// `SIOCGSKNS` (`linux/sockios.h`): open the socket's network namespace.
pub(crate) const SIOCGSKNS: libc::c_ulong = 0x894c;
/// `SIOCUNIXFILE` = `SIOCPROTOPRIVATE + 0` (`linux/un.h`, Linux 6.0).
pub(crate) const SIOCUNIXFILE: libc::c_ulong = 0x89e0;
/// `SO_BUF_LOCK` (`asm-generic/socket.h`, Linux 5.14).
pub(crate) const SO_BUF_LOCK: libc::c_int = 72;

/// `SOCK_DIAG_BY_FAMILY` (`linux/sock_diag.h`).
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// `UFFDIO_REGISTER` = `_IOWR(0xaa, 0x00, struct uffdio_register)`.
pub(crate) const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `UFFDIO_UNREGISTER` = `_IOR(0xaa, 0x01, struct uffdio_range)`.
pub(crate) const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_aa01;
/// `UFFDIO_REGISTER_MODE_WP`.
pub(crate) const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFD_FEATURE_WP_UNPOPULATED` (Linux 6.4).
pub(crate) const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7).
pub(crate) const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
pub(crate) const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail with `EPERM` on a VMA without async write-protect.
pub(crate) const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// `PAGE_IS_WRITTEN` category of `PAGEMAP_SCAN`.
pub(crate) const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// `UFFDIO_WAKE` = `_IOR(0xaa, 0x02, struct uffdio_range)`.
pub(crate) const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;
/// `UFFDIO_COPY` = `_IOWR(0xaa, 0x03, struct uffdio_copy)`.
pub(crate) const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
/// `UFFDIO_ZEROPAGE` = `_IOWR(0xaa, 0x04, struct uffdio_zeropage)`.
pub(crate) const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;
/// `UFFDIO_REGISTER_MODE_MISSING`.
pub(crate) const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
