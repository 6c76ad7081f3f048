//! `clone3` with `set_tid`: a new process with a chosen pid, for restore.
//!
//! The child shares nothing with the parent (no `CLONE_VM`): it is a
//! copy-on-write image of the worker, like after `fork`, and runs a closure
//! that must stay async-signal-safe (raw syscalls, no allocation, no locks).
//! It then leaves with `_exit`, never returning into the parent's code.
//!
//! # References
//!
//! - [clone3(2)](https://man7.org/linux/man-pages/man2/clone.2.html)
//! - [close_range(2)](https://man7.org/linux/man-pages/man2/close_range.2.html)

use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::unistd::Pid;

/// `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
}

/// The raw `clone3` system call; returns what the kernel returned (0 in
/// the child, the child's pid in the parent, -1 with `errno` on failure).
///
/// # Safety
///
/// Every pointer in `args` must be valid for the kernel to read or write as
/// `clone_args` documents, and the caller must make the child (which runs
/// on a copy of this stack, as after fork) leave with `_exit` without
/// touching shared parent state.
pub(super) unsafe fn raw_clone3(args: &CloneArgs) -> libc::c_long {
    // SAFETY: `args` is a live `clone_args` of the size passed; the
    // caller upholds the rest (see `# Safety`).
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_ref(args),
            size_of::<CloneArgs>(),
        )
    }
}

/// Creates our child whose pid (in our pid namespace) is `pid` (any free
/// pid if `pid` is 0); it sends
/// `SIGCHLD` when it dies and, with `share_files`, shares our descriptor
/// table (`CLONE_FILES`). In the child, `child` runs and its return value
/// becomes the exit status (`_exit`); the function returns only in the
/// parent.
///
/// `EEXIST` means the pid is taken; `EPERM` that we lack
/// `CAP_CHECKPOINT_RESTORE`.
///
/// The caller must be single-threaded: the child continues with a copy of
/// this address space, and `child` must only make async-signal-safe calls.
pub(crate) fn clone3_child(
    pid: libc::pid_t,
    share_files: bool,
    child: &mut dyn FnMut() -> u8,
) -> nix::Result<Pid> {
    let extra = if share_files {
        libc::CLONE_FILES as u64
    } else {
        0
    };
    clone3_flags(pid, extra, false, child)
}

/// [`clone3_child`] without sharing, or with `sibling` a child of our
/// parent (`CLONE_PARENT`), optionally in a new pid namespace (`new_pidns`),
/// where the child is pid 1 whatever `pid` says.
pub(crate) fn clone3_in(
    pid: libc::pid_t,
    sibling: bool,
    new_pidns: bool,
    child: &mut dyn FnMut() -> u8,
) -> nix::Result<Pid> {
    let flags = if sibling {
        libc::CLONE_PARENT as u64
    } else {
        0
    };
    clone3_flags(pid, flags, new_pidns, child)
}

fn clone3_flags(
    pid: libc::pid_t,
    mut flags: u64,
    new_pidns: bool,
    child: &mut dyn FnMut() -> u8,
) -> nix::Result<Pid> {
    let sibling = flags & libc::CLONE_PARENT as u64 != 0;
    let tid = [pid];
    if new_pidns {
        flags |= libc::CLONE_NEWPID as u64;
    }
    let args = CloneArgs {
        flags,
        // The kernel refuses an exit signal together with CLONE_PARENT: the
        // child then inherits ours.
        exit_signal: if sibling { 0 } else { libc::SIGCHLD as u64 },
        set_tid: if new_pidns || pid == 0 {
            0
        } else {
            tid.as_ptr() as u64
        },
        set_tid_size: u64::from(!new_pidns && pid != 0),
        ..CloneArgs::default()
    };
    // SAFETY: `args` and `tid` are live for the call and of the sizes
    // given. Without CLONE_VM or a new stack, the child resumes on its own
    // copy of our stack, exactly as after fork(2); it only runs `child`
    // (whose contract is async-signal safety) and then `_exit`s, so no
    // parent state (destructors, atexit handlers, locks) runs twice.
    let ret = unsafe { raw_clone3(&args) };
    match ret {
        0 => {
            let status = child();
            // SAFETY: leaving the child without unwinding or running any
            // of the parent's exit handlers.
            unsafe { libc::_exit(i32::from(status)) }
        }
        pid if pid > 0 => Ok(Pid::from_raw(
            libc::pid_t::try_from(pid).map_err(|_| Errno::EOVERFLOW)?,
        )),
        _ => Err(Errno::last()),
    }
}

/// Puts a duplicate of descriptor `src` at number `dst` (closing what was
/// there), with or without `FD_CLOEXEC`. When `src == dst` only the flag is
/// set.
///
/// For the restore child, which owns its whole descriptor table and
/// arranges it by number; `src` stays open.
pub(crate) fn dup_to(src: RawFd, dst: RawFd, cloexec: bool) -> nix::Result<()> {
    if src == dst {
        let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD takes an integer; an invalid fd yields EBADF.
        let ret = unsafe { libc::fcntl(dst, libc::F_SETFD, flags) };
        return Errno::result(ret).map(drop);
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 only manipulates the descriptor table; the restore child
    // owns every descriptor number it names and no Rust object there will
    // use the replaced number again.
    let ret = unsafe { libc::dup3(src, dst, flags) };
    Errno::result(ret).map(drop)
}

/// Duplicates `src` to the lowest free number at or above `min`, with
/// `FD_CLOEXEC`. Returns the new number (owned by the restore child).
pub(crate) fn dup_above(src: RawFd, min: RawFd) -> nix::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer and creates a new descriptor
    // nothing else refers to.
    let ret = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, min) };
    Errno::result(ret)
}

/// `F_SETFL`: sets the file status flags of descriptor number `fd`
/// (restore child only).
pub(crate) fn set_status_flags(fd: RawFd, flags: i32) -> nix::Result<()> {
    // SAFETY: F_SETFL takes an integer; an invalid fd yields EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    Errno::result(ret).map(drop)
}

/// Closes every descriptor in `first..=last` (Linux 5.9 `close_range`).
///
/// For the restore child only, which owns its descriptor table.
pub(crate) fn close_range(first: u32, last: u32) -> nix::Result<()> {
    // SAFETY: close_range only touches the descriptor table; in the restore
    // child no Rust object will use the closed numbers again.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    Errno::result(ret).map(drop)
}

/// Closes descriptor number `fd` (restore child only, see [`close_range`]).
pub(crate) fn close_raw(fd: RawFd) -> nix::Result<()> {
    // SAFETY: as for `close_range`.
    let ret = unsafe { libc::close(fd) };
    Errno::result(ret).map(drop)
}

/// Writes all of `buf` to descriptor number `fd` (restore child only).
pub(crate) fn write_raw(fd: RawFd, buf: &[u8]) -> nix::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe a live slice.
        let ret = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        match Errno::result(ret) {
            Ok(n) => done += usize::try_from(n).map_err(|_| Errno::EIO)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Gives `sig` its default action (for a new task before it stops or dies
/// as a zombie).
pub(crate) fn set_default_action(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    // SAFETY: installing SIG_DFL registers no handler code, so no Rust code
    // can run in signal context because of it.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }.map(drop)
}
