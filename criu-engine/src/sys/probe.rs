//! Raw syscalls, ioctls and socket options used by the kernel probes of
//! `kerndat` and, later, by dump and restore themselves.
//!
//! # References
//!
//! - [clone3(2)](https://man7.org/linux/man-pages/man2/clone.2.html)
//! - [pidfd_open(2)](https://man7.org/linux/man-pages/man2/pidfd_open.2.html),
//!   [pidfd_getfd(2)](https://man7.org/linux/man-pages/man2/pidfd_getfd.2.html)
//! - [kcmp(2)](https://man7.org/linux/man-pages/man2/kcmp.2.html)
//! - [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html),
//!   [ioctl_userfaultfd(2)](https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html)
//! - [PAGEMAP_SCAN](https://docs.kernel.org/admin-guide/mm/pagemap.html)
//! - [prctl(2)](https://man7.org/linux/man-pages/man2/prctl.2.html)

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::abi;
use super::clone3::{raw_clone3, CloneArgs};

/// Wraps a descriptor the kernel just returned.
///
/// # Safety
///
/// `fd` must be a freshly returned descriptor that nothing else owns.
unsafe fn owned(fd: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = RawFd::try_from(Errno::result(fd)?).map_err(|_| Errno::EBADF)?;
    // SAFETY: the caller guarantees `fd` is new and unowned.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Asks `clone3` for a child with a `set_tid` array of length zero, which the
/// kernel rejects before creating anything: `EINVAL` when it understands
/// `set_tid`, `E2BIG` when `clone3` predates it, `ENOSYS` without `clone3`.
/// Returns the error the kernel gave.
pub(crate) fn clone3_set_tid_errno() -> Errno {
    let bogus: libc::pid_t = 0;
    let args = CloneArgs {
        set_tid: std::ptr::from_ref(&bogus) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a live `clone_args` of the size passed. The request
    // is invalid by construction (set_tid without set_tid_size), so no task
    // is created; the two impossible success branches are still handled.
    let ret = unsafe { raw_clone3(&args) };
    match ret {
        // SAFETY: we are a child nobody expected; leave without running
        // any parent state (no destructors, no atexit).
        0 => unsafe { libc::_exit(0) },
        pid if pid > 0 => {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
            Errno::UnknownErrno
        }
        _ => Errno::last(),
    }
}

/// `pidfd_open(2)`.
pub(crate) fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: integer arguments only; the result is a new descriptor.
    unsafe { owned(libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0)) }
}

/// `process_mrelease(2)`: frees the memory of the killed process behind
/// `pidfd` in the caller's context, while the process exits on its own CPU.
pub(crate) fn process_mrelease(pidfd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0) };
    Errno::result(ret).map(drop)
}

/// `pidfd_getfd(2)`: duplicates descriptor `target_fd` of the process behind
/// `pidfd` into ours.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, target_fd: RawFd) -> nix::Result<OwnedFd> {
    // SAFETY: integer arguments only; the result is a new descriptor that
    // nothing else owns.
    unsafe {
        owned(libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            target_fd,
            0,
        ))
    }
}

/// `kcmp(2)` with integer arguments (every type except `KCMP_EPOLL_TFD`).
/// Returns 0 when equal, 1/2 for ordering, 3 when unequal but unordered.
pub(crate) fn kcmp_vm(pid1: Pid, pid2: Pid) -> nix::Result<i64> {
    // SAFETY: KCMP_VM takes no pointers.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            abi::KCMP_VM,
            0,
            0,
        )
    })
}

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {efd, tfd, 0})`: compares `fd` of `pid`
/// with the target `tfd` registered in epoll instance `efd` of `pid`.
pub(crate) fn kcmp_epoll_tfd(pid: Pid, fd: RawFd, efd: RawFd, tfd: RawFd) -> nix::Result<i64> {
    let slot = KcmpEpollSlot {
        efd: u32::try_from(efd).map_err(|_| Errno::EBADF)?,
        tfd: u32::try_from(tfd).map_err(|_| Errno::EBADF)?,
        toff: 0,
    };
    // SAFETY: the last argument points to a live `kcmp_epoll_slot`.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            abi::KCMP_EPOLL_TFD,
            fd,
            std::ptr::from_ref(&slot),
        )
    })
}

/// `userfaultfd(2)` with `flags` (`O_CLOEXEC`, `O_NONBLOCK`, `UFFD_USER_MODE_ONLY`).
pub(crate) fn userfaultfd(flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: integer argument only; the result is a new descriptor.
    unsafe { owned(libc::syscall(libc::SYS_userfaultfd, flags)) }
}

/// `struct uffdio_api`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `UFFDIO_API` handshake asking for `features`; returns the features the
/// kernel reports (all it supports when `features` is 0).
pub(crate) fn uffdio_api(uffd: BorrowedFd<'_>, features: u64) -> nix::Result<u64> {
    let mut api = UffdioApi {
        api: abi::UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one live `uffdio_api`.
    Errno::result(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_API as _,
            std::ptr::from_mut(&mut api),
        )
    })?;
    if api.api != abi::UFFD_API {
        return Err(Errno::EPROTO);
    }
    Ok(api.features)
}

/// `struct page_region`: one run of pages reported by `PAGEMAP_SCAN`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PageRegion {
    /// First address of the run.
    pub(crate) start: u64,
    /// End of the run (exclusive).
    pub(crate) end: u64,
    /// `PAGE_IS_*` categories of the run, limited to the return mask.
    pub(crate) categories: u64,
}

/// The caller-chosen part of `struct pm_scan_arg`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageScan {
    /// `PM_SCAN_*` flags.
    pub(crate) flags: u64,
    /// First address (page aligned).
    pub(crate) start: u64,
    /// End address (exclusive).
    pub(crate) end: u64,
    /// Categories that match when clear instead of set.
    pub(crate) category_inverted: u64,
    /// Categories that must all match.
    pub(crate) category_mask: u64,
    /// Categories of which one must match.
    pub(crate) category_anyof_mask: u64,
    /// Categories reported back.
    pub(crate) return_mask: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `ioctl(PAGEMAP_SCAN)` on an open `/proc/<pid>/pagemap`. Fills `out` and
/// returns how many regions were written.
pub(crate) fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    scan: &PageScan,
    out: &mut [PageRegion],
) -> nix::Result<usize> {
    pagemap_scan_walk(pagemap, scan, out).map(|(n, _)| n)
}

/// `ioctl(PAGEMAP_SCAN)` returning the regions written to `out` and
/// `walk_end`, the address where the walk stopped (`scan.end` when it ran to
/// the end; earlier when `out` filled up).
pub(crate) fn pagemap_scan_walk(
    pagemap: BorrowedFd<'_>,
    scan: &PageScan,
    out: &mut [PageRegion],
) -> nix::Result<(usize, u64)> {
    let mut arg = PmScanArg {
        size: size_of::<PmScanArg>() as u64,
        flags: scan.flags,
        start: scan.start,
        end: scan.end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: scan.category_inverted,
        category_mask: scan.category_mask,
        category_anyof_mask: scan.category_anyof_mask,
        return_mask: scan.return_mask,
    };
    // SAFETY: `arg` is a live `pm_scan_arg` whose `vec` points to `out`, which
    // has room for `vec_len` regions.
    let n = Errno::result(unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            abi::PAGEMAP_SCAN as _,
            std::ptr::from_mut(&mut arg),
        )
    })?;
    Ok((usize::try_from(n).map_err(|_| Errno::EINVAL)?, arg.walk_end))
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)`: the size of `struct prctl_mm_map`
/// the kernel expects, proving the `PR_SET_MM_MAP` interface exists.
pub(crate) fn prctl_mm_map_size() -> nix::Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: the kernel writes one `unsigned int` to the live `size`.
    Errno::result(unsafe {
        libc::prctl(
            abi::PR_SET_MM,
            abi::PR_SET_MM_MAP_SIZE,
            std::ptr::from_mut(&mut size),
            0,
            0,
        )
    })?;
    Ok(size)
}

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET)`.
pub(crate) fn timer_create_restore_ids_get() -> nix::Result<i32> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe {
        libc::prctl(
            abi::PR_TIMER_CREATE_RESTORE_IDS,
            abi::PR_TIMER_CREATE_RESTORE_IDS_GET,
            0,
            0,
            0,
        )
    })
}

/// `openat2(AT_FDCWD, ".", NULL, 0)`: always fails; `ENOSYS` means no
/// `openat2`, anything else means the syscall exists.
pub(crate) fn openat2_errno() -> Errno {
    // SAFETY: the path is a NUL-terminated literal; a null `how` with size 0
    // is rejected by the kernel without being read.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c".".as_ptr(),
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    if ret >= 0 {
        // SAFETY: a descriptor we did not expect, but it is ours alone.
        drop(unsafe { owned(ret) });
        return Errno::UnknownErrno;
    }
    Errno::last()
}

/// `move_mount("", "", MOVE_MOUNT_SET_GROUP)` on invalid descriptors: the
/// kernel checks flags before paths, so `EINVAL` means the flag is unknown and
/// any other error means it is understood.
pub(crate) fn move_mount_set_group_errno() -> Errno {
    // SAFETY: both paths are NUL-terminated literals; the descriptors are
    // invalid on purpose, so nothing is moved.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1,
            c"".as_ptr(),
            -1,
            c"".as_ptr(),
            abi::MOVE_MOUNT_SET_GROUP,
        )
    };
    if ret == 0 {
        return Errno::UnknownErrno;
    }
    Errno::last()
}

/// `membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS, 0)`.
pub(crate) fn membarrier_get_registrations() -> nix::Result<i64> {
    // SAFETY: integer arguments only.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            abi::MEMBARRIER_CMD_GET_REGISTRATIONS,
            0,
        )
    })
}

/// `rseq(NULL, 0, 0, 0)`: always fails; `ENOSYS` means no rseq.
pub(crate) fn rseq_errno() -> Errno {
    // SAFETY: a null area with length 0 is rejected without being touched.
    let ret = unsafe { libc::syscall(libc::SYS_rseq, std::ptr::null::<u8>(), 0, 0, 0) };
    if ret == 0 {
        return Errno::UnknownErrno;
    }
    Errno::last()
}

/// Whether `madvise(MADV_GUARD_INSTALL)` is understood, tried on a private
/// page mapped and unmapped here.
pub(crate) fn madv_guard_supported() -> nix::Result<bool> {
    let page = page_size();
    // SAFETY: a fresh anonymous mapping chosen by the kernel; it aliases
    // nothing of ours.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: `addr..addr+page` is the mapping created above.
    let ret = unsafe { libc::madvise(addr, page, abi::MADV_GUARD_INSTALL) };
    let err = Errno::last();
    // SAFETY: unmapping exactly the mapping created above, used by nobody.
    unsafe { libc::munmap(addr, page) };
    match ret {
        0 => Ok(true),
        _ if err == Errno::EINVAL => Ok(false),
        _ => Err(err),
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

/// A socket ioctl that returns a new descriptor (`SIOCGSKNS`, `SIOCUNIXFILE`).
fn socket_ioctl_fd(sock: BorrowedFd<'_>, request: libc::c_ulong) -> nix::Result<OwnedFd> {
    // SAFETY: both requests take no argument and return a new descriptor.
    unsafe {
        owned(libc::c_long::from(libc::ioctl(
            sock.as_raw_fd(),
            request as _,
            0,
        )))
    }
}

/// `ioctl(SIOCGSKNS)`: the network namespace of a socket.
pub(crate) fn socket_netns(sock: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    socket_ioctl_fd(sock, abi::SIOCGSKNS)
}

/// `ioctl(SIOCUNIXFILE)`: an `O_PATH` descriptor of a unix socket's bound file.
pub(crate) fn unix_socket_file(sock: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    socket_ioctl_fd(sock, abi::SIOCUNIXFILE)
}

/// `getsockopt` of an `int` option.
pub(crate) fn getsockopt_int(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> nix::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `val` and `len` are live and `len` holds the size of `val`.
    Errno::result(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut val).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// `setsockopt` of an `int` option.
pub(crate) fn setsockopt_int(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> nix::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `val` is live and `len` is its size.
    Errno::result(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&val).cast(),
            len,
        )
    })
    .map(drop)
}
