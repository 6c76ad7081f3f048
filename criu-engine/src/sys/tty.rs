//! Terminal `ioctl`s the dump and restore of ttys need (CRIU's `criu/tty.c`
//! calls them directly): termios in the kernel's own layout, window size,
//! pty index, lock and packet mode, controlling terminal and foreground
//! group.
//!
//! Every function is a plain syscall, safe to call in a new task right
//! after `clone3`.
//!
//! # References
//!
//! - [ioctl_tty(2)](https://man7.org/linux/man-pages/man2/ioctl_tty.2.html)
//! - [pts(4)](https://man7.org/linux/man-pages/man4/pts.4.html)

use std::os::fd::RawFd;

use nix::errno::Errno;

/// Control characters of the kernel's `struct termios` (`NCCS` of
/// `asm-generic/termbits.h`).
pub(crate) const KERNEL_NCCS: usize = 19;

/// The kernel's `struct termios` as `TCGETS` and `TIOCGLCKTRMIOS` fill it
/// (not glibc's, which is larger).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KernelTermios {
    pub(crate) c_iflag: u32,
    pub(crate) c_oflag: u32,
    pub(crate) c_cflag: u32,
    pub(crate) c_lflag: u32,
    pub(crate) c_line: u8,
    pub(crate) c_cc: [u8; KERNEL_NCCS],
}

/// `struct winsize`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WinSize {
    pub(crate) ws_row: u16,
    pub(crate) ws_col: u16,
    pub(crate) ws_xpixel: u16,
    pub(crate) ws_ypixel: u16,
}

/// `TIOCGPTN`.
pub(crate) const TIOCGPTN: u64 = 0x8004_5430;
/// `TIOCSPTLCK`.
const TIOCSPTLCK: u64 = 0x4004_5431;
/// `TIOCGPKT`.
pub(crate) const TIOCGPKT: u64 = 0x8004_5438;
/// `TIOCGPTLCK`.
pub(crate) const TIOCGPTLCK: u64 = 0x8004_5439;
/// `TIOCGEXCL`.
pub(crate) const TIOCGEXCL: u64 = 0x8004_5440;
/// `TIOCGSID`.
pub(crate) const TIOCGSID: u64 = 0x5429;
/// `TIOCGPGRP`.
pub(crate) const TIOCGPGRP: u64 = 0x540F;

fn ioctl_ptr<T>(fd: RawFd, req: libc::Ioctl, arg: *mut T) -> nix::Result<libc::c_int> {
    // SAFETY: `arg` points to a live value of the type the request reads or
    // writes (callers below pass `&mut` of the documented structure), and
    // the kernel checks `fd`.
    let ret = unsafe { libc::ioctl(fd, req, arg) };
    Errno::result(ret)
}

fn ioctl_val(fd: RawFd, req: libc::Ioctl, arg: libc::c_ulong) -> nix::Result<libc::c_int> {
    // SAFETY: the request takes its argument by value; no memory is passed.
    let ret = unsafe { libc::ioctl(fd, req, arg) };
    Errno::result(ret)
}

/// Index of the pty whose master is `fd` (`TIOCGPTN`).
pub(crate) fn pty_index(fd: RawFd) -> nix::Result<u32> {
    let mut n: libc::c_uint = 0;
    ioctl_ptr(fd, TIOCGPTN, &mut n)?;
    Ok(n)
}

/// Locks or unlocks the slave of master `fd` (`TIOCSPTLCK`).
pub(crate) fn set_pty_lock(fd: RawFd, locked: bool) -> nix::Result<()> {
    let mut v: libc::c_int = locked.into();
    ioctl_ptr(fd, TIOCSPTLCK, &mut v).map(drop)
}

/// Turns packet mode on master `fd` on (`TIOCPKT`).
pub(crate) fn set_packet_mode(fd: RawFd) -> nix::Result<()> {
    let mut v: libc::c_int = 1;
    ioctl_ptr(fd, libc::TIOCPKT, &mut v).map(drop)
}

/// The termios (`locked`: the locked bits, `TIOCGLCKTRMIOS`) of `fd`.
pub(crate) fn termios(fd: RawFd, locked: bool) -> nix::Result<KernelTermios> {
    let req = if locked {
        libc::TIOCGLCKTRMIOS
    } else {
        libc::TCGETS
    };
    let mut t = KernelTermios::default();
    ioctl_ptr(fd, req, &mut t)?;
    Ok(t)
}

/// Sets the termios (`locked`: the locked bits, `TIOCSLCKTRMIOS`) of `fd`.
pub(crate) fn set_termios(fd: RawFd, locked: bool, t: &KernelTermios) -> nix::Result<()> {
    let req = if locked {
        libc::TIOCSLCKTRMIOS
    } else {
        libc::TCSETS
    };
    let mut t = *t;
    ioctl_ptr(fd, req, &mut t).map(drop)
}

/// The window size of `fd`.
pub(crate) fn winsize(fd: RawFd) -> nix::Result<WinSize> {
    let mut w = WinSize::default();
    ioctl_ptr(fd, libc::TIOCGWINSZ, &mut w)?;
    Ok(w)
}

/// Sets the window size of `fd`.
pub(crate) fn set_winsize(fd: RawFd, w: &WinSize) -> nix::Result<()> {
    let mut w = *w;
    ioctl_ptr(fd, libc::TIOCSWINSZ, &mut w).map(drop)
}

/// Makes the terminal of `fd` the caller's controlling terminal, taking it
/// from another session if needed (`TIOCSCTTY` with 1).
pub(crate) fn set_ctty(fd: RawFd) -> nix::Result<()> {
    ioctl_val(fd, libc::TIOCSCTTY, 1).map(drop)
}

/// Makes `pgrp` the foreground process group of the caller's controlling
/// terminal `fd` (`TIOCSPGRP`).
pub(crate) fn set_foreground(fd: RawFd, pgrp: i32) -> nix::Result<()> {
    let mut g: libc::pid_t = pgrp;
    ioctl_ptr(fd, libc::TIOCSPGRP, &mut g).map(drop)
}

/// Whether `fd` is a terminal (`TCGETS` succeeds).
pub(crate) fn is_terminal(fd: RawFd) -> bool {
    termios(fd, false).is_ok()
}
