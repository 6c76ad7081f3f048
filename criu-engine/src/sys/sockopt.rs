//! Integer and `struct linger` socket options `nix` has no typed wrapper
//! for (`SO_PEEK_OFF`, `SO_RCVLOWAT`, `SO_PASSSEC`, `SO_NO_CHECK`,
//! `SO_BUF_LOCK`, ...), as CRIU's `dump_opt`/`restore_opt` in
//! `criu/sockets.c` read and write them.
//!
//! # References
//!
//! - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html)
//! - [getsockopt(2)](https://man7.org/linux/man-pages/man2/getsockopt.2.html)

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// Reads an `int` option.
pub(crate) fn get_int(sock: impl AsFd, level: i32, name: i32) -> nix::Result<i32> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals of the sizes the kernel is told.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            (&raw mut val).cast(),
            &raw mut len,
        )
    };
    Errno::result(r).map(|_| val)
}

/// Writes an `int` option.
pub(crate) fn set_int(sock: impl AsFd, level: i32, name: i32, val: i32) -> nix::Result<()> {
    // SAFETY: the kernel reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const val).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// Reads a `struct timeval` option (`SO_SNDTIMEO`, `SO_RCVTIMEO`) as
/// `(seconds, microseconds)`.
pub(crate) fn get_timeval(sock: impl AsFd, name: i32) -> nix::Result<(u64, u64)> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are live locals of the sizes the kernel is told.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw mut tv).cast(),
            &raw mut len,
        )
    };
    Errno::result(r)?;
    Ok((
        u64::try_from(tv.tv_sec).unwrap_or(0),
        u64::try_from(tv.tv_usec).unwrap_or(0),
    ))
}

/// Writes a `struct timeval` option.
pub(crate) fn set_timeval(sock: impl AsFd, name: i32, sec: u64, usec: u64) -> nix::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(sec).map_err(|_| Errno::EINVAL)?,
        tv_usec: libc::suseconds_t::try_from(usec).map_err(|_| Errno::EINVAL)?,
    };
    // SAFETY: the kernel reads `size_of::<timeval>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// Reads `SO_LINGER` as `Some(seconds)` when lingering is on.
pub(crate) fn get_linger(sock: impl AsFd) -> nix::Result<Option<i32>> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `l` and `len` are live locals of the sizes the kernel is told.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw mut l).cast(),
            &raw mut len,
        )
    };
    Errno::result(r)?;
    Ok((l.l_onoff != 0).then_some(l.l_linger))
}

/// Turns `SO_LINGER` on with `seconds`.
pub(crate) fn set_linger(sock: impl AsFd, seconds: i32) -> nix::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: seconds,
    };
    // SAFETY: the kernel reads `size_of::<linger>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}
