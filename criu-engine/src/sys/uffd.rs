//! `userfaultfd` ioctls on a descriptor whose context belongs to another
//! process's mm: write-protect registration for memory tracking (CRIU has no
//! counterpart: it tracks with soft-dirty bits) and missing-page
//! registration, copies and events for lazy pages (CRIU's `criu/uffd.c`).
//!
//! The ioctls act on the context's mm, whichever process holds the
//! descriptor, so the engine can drive a descriptor taken from the target
//! with `pidfd_getfd`.
//!
//! # References
//!
//! - [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html),
//!   [UFFDIO_REGISTER(2const)](https://man7.org/linux/man-pages/man2/UFFDIO_REGISTER.2const.html)

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
    register(uffd, start, len, abi::UFFDIO_REGISTER_MODE_WP)
}

/// `UFFDIO_REGISTER` of `[start, start + len)` in missing-page mode.
pub(crate) fn register_missing(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    register(uffd, start, len, abi::UFFDIO_REGISTER_MODE_MISSING)
}

fn register(uffd: BorrowedFd<'_>, start: u64, len: u64, mode: u64) -> nix::Result<()> {
    let mut reg = UffdioRegister {
        range: UffdioRange { start, len },
        mode,
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

/// `struct uffdio_copy`.
#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `UFFDIO_COPY` of `src` to `dst` in the context's mm, waking the threads
/// waiting on the range. Returns the bytes copied: a partial copy (an error
/// after some progress) reports what was done.
pub(crate) fn copy(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> nix::Result<u64> {
    let mut arg = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: UFFDIO_COPY reads `len` bytes at `src`, which `src` covers, and
    // writes the result into the live `uffdio_copy`.
    let ret = unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_COPY as _,
            std::ptr::from_mut(&mut arg),
        )
    };
    if ret == 0 {
        return Ok(arg.len);
    }
    let errno = Errno::last();
    match u64::try_from(arg.copy) {
        Ok(done) if done > 0 => Ok(done),
        _ => Err(errno),
    }
}

/// `struct uffdio_zeropage`.
#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `UFFDIO_ZEROPAGE` of `[start, start + len)`, waking the waiting threads.
pub(crate) fn zeropage(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut arg = UffdioZeropage {
        range: UffdioRange { start, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: UFFDIO_ZEROPAGE reads and writes one live `uffdio_zeropage`.
    Errno::result(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_ZEROPAGE as _,
            std::ptr::from_mut(&mut arg),
        )
    })
    .map(drop)
}

/// `UFFDIO_WAKE` of `[start, start + len)`.
pub(crate) fn wake(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut range = UffdioRange { start, len };
    // SAFETY: UFFDIO_WAKE reads one live `uffdio_range`.
    Errno::result(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            abi::UFFDIO_WAKE as _,
            std::ptr::from_mut(&mut range),
        )
    })
    .map(drop)
}

/// Takes ownership of a descriptor the kernel just installed in our table:
/// the child's userfaultfd of a `UFFD_EVENT_FORK` message, or one received
/// with `SCM_RIGHTS`.
pub(crate) fn own_received(fd: i32) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor number.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the kernel installed `fd` in our table for us alone to own.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UFFD_EVENT_PAGEFAULT`.
const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_FORK`.
const EVENT_FORK: u8 = 0x13;
/// `UFFD_EVENT_REMAP`.
const EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
const EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
const EVENT_UNMAP: u8 = 0x16;
/// `sizeof(struct uffd_msg)`.
pub(crate) const MSG_LEN: usize = 32;

/// One `struct uffd_msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UffdEvent {
    /// A thread touched a missing page at this address.
    PageFault(u64),
    /// The mm forked: the child's userfaultfd, now in our table.
    Fork(i32),
    /// `mremap` moved `[from, from + len)` to `to`.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Bytes.
        len: u64,
    },
    /// `[start, end)` was unmapped or its pages dropped.
    Remove {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// An event this engine does not ask for.
    Other(u8),
}

impl UffdEvent {
    /// Decodes one message.
    pub(crate) fn decode(m: &[u8; MSG_LEN]) -> UffdEvent {
        let u64_at = |o: usize| u64::from_ne_bytes(m[o..o + 8].try_into().expect("8 bytes"));
        match m[0] {
            EVENT_PAGEFAULT => UffdEvent::PageFault(u64_at(16)),
            EVENT_FORK => {
                UffdEvent::Fork(i32::from_ne_bytes(m[8..12].try_into().expect("4 bytes")))
            }
            EVENT_REMAP => UffdEvent::Remap {
                from: u64_at(8),
                to: u64_at(16),
                len: u64_at(24),
            },
            EVENT_REMOVE | EVENT_UNMAP => UffdEvent::Remove {
                start: u64_at(8),
                end: u64_at(16),
            },
            other => UffdEvent::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode() {
        let mut m = [0u8; MSG_LEN];
        m[0] = EVENT_PAGEFAULT;
        m[16..24].copy_from_slice(&0x7000_1234u64.to_ne_bytes());
        assert_eq!(UffdEvent::decode(&m), UffdEvent::PageFault(0x7000_1234));
        m[0] = EVENT_REMAP;
        m[8..16].copy_from_slice(&1u64.to_ne_bytes());
        m[24..32].copy_from_slice(&3u64.to_ne_bytes());
        assert_eq!(
            UffdEvent::decode(&m),
            UffdEvent::Remap {
                from: 1,
                to: 0x7000_1234,
                len: 3
            }
        );
        m[0] = EVENT_FORK;
        m[8..12].copy_from_slice(&9i32.to_ne_bytes());
        assert_eq!(UffdEvent::decode(&m), UffdEvent::Fork(9));
        m[0] = 0x99;
        assert_eq!(UffdEvent::decode(&m), UffdEvent::Other(0x99));
    }
}
