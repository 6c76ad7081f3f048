//! Descriptor plumbing that the safe `nix` API cannot express: receiving
//! `SCM_RIGHTS` into [`OwnedFd`]s, claiming inherited and accepted descriptor
//! numbers, keeping one descriptor open across `exec`, and ignoring SIGPIPE.
//!
//! CRIU counterpart: `recv_fds()`/`send_fds()` in `criu/util.c` and the
//! descriptor hand-over of `criu/cr-service.c`.
//!
//! # Safety
//!
//! This is the only module of the crate allowed to use `unsafe`. Every raw
//! descriptor number that enters the crate becomes an [`OwnedFd`] here, right
//! where the kernel created it (recvmsg, accept4) or where the process was
//! given it (an inherited number on the command line), so that the rest of the
//! crate only handles owned or borrowed descriptors.
//!
//! # References
//!
//! - [recvmsg(2)](https://man7.org/linux/man-pages/man2/recvmsg.2.html)
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html) (`SCM_RIGHTS`)
//! - [accept4(2)](https://man7.org/linux/man-pages/man2/accept4.2.html)
//! - [fcntl(2)](https://man7.org/linux/man-pages/man2/fcntl.2.html) (`FD_CLOEXEC`)
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};

/// Result of one [`recv_with_rights`] call.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes stored in the caller's buffer.
    pub len: usize,
    /// The packet was longer than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
    /// Ancillary data did not fit the control buffer (`MSG_CTRUNC`); the
    /// descriptors that did fit are in `fds` and close when dropped.
    pub control_truncated: bool,
    /// Every descriptor received through `SCM_RIGHTS`, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Reads one packet into `buf` with `recvmsg`, accepting up to `max_fds`
/// descriptors through `SCM_RIGHTS` (0: no control buffer, so the kernel
/// discards any attached descriptor). Retries on EINTR.
#[doc(alias = "recv_fds")]
pub(crate) fn recv_with_rights(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Received> {
    let payload = u32::try_from(max_fds * mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let (space, control_len) = if max_fds == 0 {
        (0, 0)
    } else {
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes from their argument.
        unsafe {
            (
                libc::CMSG_SPACE(payload) as usize,
                libc::CMSG_LEN(payload) as usize,
            )
        }
    };
    // u64 elements give the alignment that cmsghdr needs.
    let mut control = vec![0u64; space.div_ceil(mem::size_of::<u64>())];

    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if space > 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            // The kernel installs as many descriptors as fit in
            // msg_controllen; CMSG_LEN (not the padded CMSG_SPACE) makes that
            // exactly `max_fds`, and any more set MSG_CTRUNC.
            msg.msg_controllen = control_len;
        }
        // SAFETY: `msg` points at `iov` (which covers `buf`) and at `control`
        // (of `space` bytes); all three outlive the call.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let len = usize::try_from(ret).expect("recvmsg returned a non-negative count");
        let fds = if space > 0 {
            take_rights(&msg)
        } else {
            Vec::new()
        };
        return Ok(Received {
            len,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
            fds,
        });
    }
}

/// Collects the descriptors of every `SCM_RIGHTS` message in `msg`.
fn take_rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by a successful recvmsg; its control pointer
    // and the length the kernel wrote describe initialised memory.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return either null or a pointer to
        // a complete header inside the control buffer.
        let hdr = unsafe { ptr::read_unaligned(cmsg) };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: `cmsg` is a valid header (see above).
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let header_len = data as usize - cmsg as usize;
            let count = hdr.cmsg_len.saturating_sub(header_len) / mem::size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: the kernel wrote `count` ints after the header,
                // within `cmsg_len`, which lies inside the control buffer.
                let raw: RawFd = unsafe { ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel has just installed this descriptor in our
                // table for this message; nothing else refers to it yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `cmsg` are valid as established above.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

/// Takes ownership of a descriptor number this process inherited across
/// `exec` (the `<fd>` of `swrk <fd>`), after checking that it is open.
///
/// Only call this once per number, for a number given on the command line:
/// such a descriptor has no other owner in this process.
pub(crate) fn claim_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the descriptor flags; an invalid number just
    // yields EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the number is open (checked above) and was handed to this process
    // by its parent; per this function's contract nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `accept4(SOCK_CLOEXEC)` on a listening socket, returning the connection
/// as an owned descriptor.
pub(crate) fn accept_cloexec(listener: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let raw = nix::sys::socket::accept4(
        listener.as_raw_fd(),
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 just created this descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Arranges for `fd` to stay open, under the same number, in the program
/// that `cmd` executes, and returns that number. The descriptor stays
/// close-on-exec in this process, so programs spawned concurrently by other
/// threads never inherit it; it is cleared only in the forked child.
///
/// `cmd` keeps `fd` alive until it is dropped.
pub(crate) fn pass_across_exec(cmd: &mut Command, fd: OwnedFd) -> RawFd {
    let raw = fd.as_raw_fd();
    let hook = move || -> io::Result<()> {
        // Clearing FD_CLOEXEC is a single fcntl, async-signal-safe.
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map(drop)
        .map_err(io::Error::from)
    };
    // SAFETY: the hook runs between fork and exec and only calls fcntl(2),
    // which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe { cmd.pre_exec(hook) };
    raw
}

/// Ignores SIGPIPE process-wide, so that writing to a closed peer fails with
/// EPIPE instead of killing the process (rpc-protocol.md 1.1). Call it at the
/// start of `main` of every binary that serves CRIU-RPC.
pub fn ignore_sigpipe() -> Result<(), Errno> {
    // SAFETY: SIG_IGN installs no handler code, so there is no signal-safety
    // requirement to uphold.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }.map(drop)
}
