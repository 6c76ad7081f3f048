//! Raw calls for anonymous-inode descriptors: creating eventfd, signalfd,
//! timerfd, epoll, inotify and fanotify files in the restore child, choosing the next
//! inotify watch descriptor, and the two lookups the dump needs (`kcmp` of
//! an epoll target, `open_by_handle_at` of an inotify watch).
//!
//! CRIU counterparts: the `*_open` functions of `criu/eventfd.c`,
//! `criu/signalfd.c`, `criu/timerfd.c`, `criu/eventpoll.c`,
//! `criu/fsnotify.c`, and `kcmp_epoll_slot_t` of `criu/include/kcmp.h`.
//!
//! # References
//!
//! - [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html),
//!   [signalfd(2)](https://man7.org/linux/man-pages/man2/signalfd.2.html),
//!   [timerfd_create(2)](https://man7.org/linux/man-pages/man2/timerfd_create.2.html),
//!   [epoll_create(2)](https://man7.org/linux/man-pages/man2/epoll_create.2.html),
//!   [inotify(7)](https://man7.org/linux/man-pages/man7/inotify.7.html),
//!   [fanotify(7)](https://man7.org/linux/man-pages/man7/fanotify.7.html),
//!   [kcmp(2)](https://man7.org/linux/man-pages/man2/kcmp.2.html)
//!   (`KCMP_EPOLL_TFD`),
//!   [open_by_handle_at(2)](https://man7.org/linux/man-pages/man2/open_by_handle_at.2.html)

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// `INOTIFY_IOC_SETNEXTWD` (`_IOW('I', 0, __s32)`).
const INOTIFY_IOC_SETNEXTWD: libc::c_ulong = 0x4004_4900;
/// `KCMP_EPOLL_TFD` (`linux/kcmp.h`).
const KCMP_EPOLL_TFD: libc::c_int = 7;

/// Wraps a descriptor number the kernel just returned.
fn owned(ret: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = Errno::result(ret)?;
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `eventfd2(0, flags)` (`EFD_*` flags).
pub(crate) fn eventfd(flags: i32) -> nix::Result<OwnedFd> {
    // SAFETY: eventfd2 takes integers and returns a new descriptor or -1.
    owned(unsafe { libc::syscall(libc::SYS_eventfd2, 0u32, flags) })
}

/// `signalfd4(-1, mask, 8, flags)`: a new signalfd for the signals of
/// `mask` (bit `n - 1` for signal `n`).
pub(crate) fn signalfd(mask: u64, flags: i32) -> nix::Result<OwnedFd> {
    // SAFETY: the mask pointer refers to a live u64 whose size is passed.
    owned(unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            size_of::<u64>(),
            flags,
        )
    })
}

/// `timerfd_create(clockid, flags)`.
pub(crate) fn timerfd(clockid: i32, flags: i32) -> nix::Result<OwnedFd> {
    // SAFETY: timerfd_create takes integers.
    owned(unsafe { libc::syscall(libc::SYS_timerfd_create, clockid, flags) })
}

/// `epoll_create1(flags)`.
pub(crate) fn epoll(flags: i32) -> nix::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes an integer.
    owned(unsafe { libc::syscall(libc::SYS_epoll_create1, flags) })
}

/// `inotify_init1(flags)`.
pub(crate) fn inotify(flags: i32) -> nix::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes an integer.
    owned(unsafe { libc::syscall(libc::SYS_inotify_init1, flags) })
}

/// Makes `wd` the number of the next watch added to inotify `fd`.
pub(crate) fn inotify_next_wd(fd: RawFd, wd: i32) -> nix::Result<()> {
    // SAFETY: this ioctl takes an integer argument; a bad fd gives EBADF.
    Errno::result(unsafe {
        libc::ioctl(
            fd,
            INOTIFY_IOC_SETNEXTWD as _,
            libc::c_ulong::from(wd as u32),
        )
    })
    .map(drop)
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub(crate) fn inotify_watch(fd: RawFd, path: &CStr, mask: u32) -> nix::Result<i32> {
    // SAFETY: the path is a live NUL-terminated string.
    Errno::result(unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) })
}

/// `fanotify_init(flags, event_flags)`.
pub(crate) fn fanotify(flags: u32, event_flags: u32) -> nix::Result<OwnedFd> {
    // SAFETY: fanotify_init takes integers.
    owned(unsafe { libc::fanotify_init(flags, event_flags) }.into())
}

/// `fanotify_mark(fd, flags, mask, AT_FDCWD, path)`.
pub(crate) fn fanotify_mark(fd: RawFd, flags: u32, mask: u64, path: &CStr) -> nix::Result<()> {
    // SAFETY: the path is a live NUL-terminated string.
    Errno::result(unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, path.as_ptr()) })
        .map(drop)
}

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {efd, tfd, toff})`: 0 when `fd`
/// of `pid` is the file registered in epoll `efd` as the `toff`-th target
/// numbered `tfd`.
pub(crate) fn kcmp_epoll_target(
    pid: Pid,
    fd: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> nix::Result<i64> {
    let slot = EpollSlot {
        efd: efd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: the slot pointer refers to a live, correctly laid out struct.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            &slot as *const EpollSlot,
        )
    })
}

/// `open_by_handle_at(mount, {bytes, type, handle}, O_PATH)`.
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
) -> nix::Result<OwnedFd> {
    /// `struct file_handle` with room for `MAX_HANDLE_SZ` bytes.
    #[repr(C)]
    struct FileHandle {
        bytes: u32,
        handle_type: i32,
        handle: [u8; 128],
    }
    if handle.len() > 128 {
        return Err(Errno::EINVAL);
    }
    let mut fh = FileHandle {
        bytes: handle.len() as u32,
        handle_type,
        handle: [0; 128],
    };
    fh.handle[..handle.len()].copy_from_slice(handle);
    // SAFETY: the handle pointer refers to a live struct laid out as the
    // kernel's `struct file_handle`, with `bytes` within its buffer.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut fh as *mut FileHandle,
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })
}
