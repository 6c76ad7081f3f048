//! `userfaultfd` write-protect ioctls on a descriptor whose context belongs
//! to another process's mm (CRIU has no counterpart: it tracks with
//! soft-dirty bits).
//!
//! The ioctls act on the context's mm, whichever process holds the
//! descriptor, so the engine can drive a descriptor taken from the target
//! with `pidfd_getfd`.
//!
//! # References
//!
//! - [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html),
//!   [UFFDIO_REGISTER(2const)](https://man7.org/linux/man-pages/man2/UFFDIO_REGISTER.2const.html)

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use super::abi;

/// `struct uffdio_range`.
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `UFFDIO_REGISTER` of `[start, start + len)` in write-protect mode.
pub(crate) fn register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut reg = UffdioRegister {
        range: UffdioRange { start, len },
        mode: abi::UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one live `uffdio_register`.
    Errno::result(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_REGISTER as _,
            std::ptr::from_mut(&mut reg),
        )
    })
    .map(drop)
}

/// `UFFDIO_UNREGISTER` of `[start, start + len)`.
pub(crate) fn unregister(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut range = UffdioRange { start, len };
    // SAFETY: UFFDIO_UNREGISTER reads one live `uffdio_range`.
    Errno::result(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_UNREGISTER as _,
            std::ptr::from_mut(&mut range),
        )
    })
    .map(drop)
}
