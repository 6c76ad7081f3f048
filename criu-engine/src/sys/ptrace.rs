//! Raw ptrace requests that `nix` does not wrap.
//!
//! All of them act on a task this thread has already seized and stopped; the
//! kernel checks that, so a wrong pid yields `ESRCH`, never memory unsafety.
//!
//! # References
//!
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html)

use std::mem::MaybeUninit;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::abi;

/// Issues one ptrace request whose `addr` and `data` are plain integers or
/// pointers the caller vouches for.
///
/// # Safety
///
/// `addr` and `data` must be what `request` expects: either integers, or
/// pointers to live buffers of the size the request writes or reads.
unsafe fn raw(
    request: libc::c_uint,
    pid: Pid,
    addr: usize,
    data: usize,
) -> nix::Result<libc::c_long> {
    Errno::clear();
    // SAFETY: the caller guarantees `addr`/`data` match the request.
    let ret = unsafe { libc::ptrace(request as _, pid.as_raw(), addr, data) };
    Errno::result(ret)
}

/// `PTRACE_SETOPTIONS` with raw option bits, for options `nix::sys::ptrace::Options`
/// lacks (such as `PTRACE_O_SUSPEND_SECCOMP`).
pub(crate) fn set_options_raw(pid: Pid, options: libc::c_ulong) -> nix::Result<()> {
    // SAFETY: PTRACE_SETOPTIONS takes the option bits by value in `data`.
    unsafe { raw(libc::PTRACE_SETOPTIONS as _, pid, 0, options as usize) }.map(drop)
}

/// `PTRACE_PEEKSIGINFO`: copies up to `buf.len()` queued signals starting at
/// `offset` from the per-thread (or, with `shared`, the process-wide) queue.
/// Returns how many were copied.
pub(crate) fn peek_siginfo(
    pid: Pid,
    offset: u64,
    shared: bool,
    buf: &mut [MaybeUninit<libc::siginfo_t>],
) -> nix::Result<usize> {
    let args = libc::ptrace_peeksiginfo_args {
        off: offset,
        flags: if shared {
            libc::PTRACE_PEEKSIGINFO_SHARED
        } else {
            0
        },
        nr: i32::try_from(buf.len()).unwrap_or(i32::MAX),
    };
    // SAFETY: `addr` points to a live `ptrace_peeksiginfo_args`; `data` points
    // to `args.nr` writable `siginfo_t` slots.
    let n = unsafe {
        raw(
            libc::PTRACE_PEEKSIGINFO as _,
            pid,
            std::ptr::from_ref(&args) as usize,
            buf.as_mut_ptr() as usize,
        )
    }?;
    usize::try_from(n).map_err(|_| Errno::EINVAL)
}

/// `PTRACE_GETSIGMASK`: the blocked-signal mask of a stopped task.
pub(crate) fn get_sigmask(pid: Pid) -> nix::Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: `addr` is the size of the buffer and `data` points to a live u64
    // of exactly that size.
    unsafe {
        raw(
            libc::PTRACE_GETSIGMASK as _,
            pid,
            size_of::<u64>(),
            std::ptr::from_mut(&mut mask) as usize,
        )
    }?;
    Ok(mask)
}

/// `PTRACE_SECCOMP_GET_FILTER` with a null buffer: the number of BPF
/// instructions of the task's seccomp filter number `index` (0 = the
/// first installed).
pub(crate) fn seccomp_filter_len(pid: Pid, index: usize) -> nix::Result<usize> {
    // SAFETY: a null `data` asks only for the length; nothing is written.
    let n = unsafe { raw(abi::PTRACE_SECCOMP_GET_FILTER, pid, index, 0) }?;
    usize::try_from(n).map_err(|_| Errno::EINVAL)
}

/// Bytes of one BPF instruction (`struct sock_filter`).
pub(crate) const SOCK_FILTER_SIZE: usize = 8;
/// Most instructions of one BPF program (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// `PTRACE_SECCOMP_GET_FILTER`: the instructions (`struct sock_filter`s,
/// 8 bytes each) of the task's seccomp filter number `index` (0 = the
/// first installed). `ENOENT` past the last one.
pub(crate) fn seccomp_filter(pid: Pid, index: usize) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; BPF_MAXINSNS * SOCK_FILTER_SIZE];
    // SAFETY: `data` points to a live buffer of BPF_MAXINSNS instructions,
    // the most one filter can hold.
    let n = unsafe {
        raw(
            abi::PTRACE_SECCOMP_GET_FILTER,
            pid,
            index,
            buf.as_mut_ptr() as usize,
        )
    }?;
    let n = usize::try_from(n).map_err(|_| Errno::EINVAL)?;
    buf.truncate(n.min(BPF_MAXINSNS) * SOCK_FILTER_SIZE);
    Ok(buf)
}

/// `PTRACE_SECCOMP_GET_METADATA`: the flags (`SECCOMP_FILTER_FLAG_LOG`)
/// filter number `index` was installed with.
pub(crate) fn seccomp_metadata(pid: Pid, index: usize) -> nix::Result<u64> {
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut meta = [index as u64, 0u64];
    // SAFETY: `addr` is the size of the live two-word buffer `data` points to.
    unsafe {
        raw(
            abi::PTRACE_SECCOMP_GET_METADATA,
            pid,
            size_of_val(&meta),
            meta.as_mut_ptr() as usize,
        )
    }?;
    Ok(meta[1])
}

/// What `PTRACE_GET_RSEQ_CONFIGURATION` reports (`struct ptrace_rseq_configuration`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RseqConfiguration {
    /// Address of the task's registered `struct rseq` (0 if none).
    pub(crate) rseq_abi_pointer: u64,
    /// Registered size of that area.
    pub(crate) rseq_abi_size: u32,
    /// Signature the task registered.
    pub(crate) signature: u32,
    /// Always 0 today.
    pub(crate) flags: u32,
    pad: u32,
}

/// `PTRACE_GET_RSEQ_CONFIGURATION` (Linux 5.13).
pub(crate) fn rseq_configuration(pid: Pid) -> nix::Result<RseqConfiguration> {
    let mut conf = RseqConfiguration::default();
    // SAFETY: `addr` is the buffer size, `data` a live struct of that size
    // with the kernel's layout.
    let n = unsafe {
        raw(
            abi::PTRACE_GET_RSEQ_CONFIGURATION,
            pid,
            size_of::<RseqConfiguration>(),
            std::ptr::from_mut(&mut conf) as usize,
        )
    }?;
    if usize::try_from(n).ok() != Some(size_of::<RseqConfiguration>()) {
        return Err(Errno::EINVAL);
    }
    Ok(conf)
}

/// `PTRACE_SEIZE` with raw option bits (nix's `Options` lacks
/// `PTRACE_O_SUSPEND_SECCOMP`).
pub(crate) fn seize_raw(pid: Pid, options: libc::c_ulong) -> nix::Result<()> {
    // SAFETY: PTRACE_SEIZE takes 0 in `addr` and the option bits by value.
    unsafe { raw(libc::PTRACE_SEIZE as _, pid, 0, options as usize) }.map(drop)
}

/// `PTRACE_SETSIGMASK`: replaces the blocked-signal mask of a stopped task.
pub(crate) fn set_sigmask(pid: Pid, mask: u64) -> nix::Result<()> {
    // SAFETY: `addr` is the size of the buffer and `data` points to a live u64
    // of exactly that size, which the kernel only reads.
    unsafe {
        raw(
            libc::PTRACE_SETSIGMASK as _,
            pid,
            size_of::<u64>(),
            std::ptr::from_ref(&mask) as usize,
        )
    }
    .map(drop)
}

/// `PTRACE_GETREGSET` of `NT_X86_XSTATE` into `buf`; returns how many bytes
/// the kernel filled.
#[cfg(target_arch = "x86_64")]
pub(crate) fn get_xstate(pid: Pid, buf: &mut [u8]) -> nix::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `data` points to a live iovec describing `buf`, which stays
    // borrowed mutably for the call; the kernel writes at most `iov_len`
    // bytes and updates `iov_len`.
    unsafe {
        raw(
            libc::PTRACE_GETREGSET as _,
            pid,
            NT_X86_XSTATE,
            std::ptr::from_mut(&mut iov) as usize,
        )
    }?;
    Ok(iov.iov_len)
}

/// `PTRACE_SETREGSET` of `NT_X86_XSTATE` from `buf`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn set_xstate(pid: Pid, buf: &[u8]) -> nix::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `data` points to a live iovec describing `buf`; for SETREGSET
    // the kernel only reads from it (the mutable pointer is the iovec ABI).
    unsafe {
        raw(
            libc::PTRACE_SETREGSET as _,
            pid,
            NT_X86_XSTATE,
            std::ptr::from_mut(&mut iov) as usize,
        )
    }
    .map(drop)
}

/// `NT_X86_XSTATE` (`linux/elf.h`).
#[cfg(target_arch = "x86_64")]
const NT_X86_XSTATE: usize = 0x202;

/// `PTRACE_GETFPREGS`: the legacy FXSAVE area of a stopped task.
#[cfg(target_arch = "x86_64")]
pub(crate) fn get_fpregs(pid: Pid) -> nix::Result<libc::user_fpregs_struct> {
    let mut regs = MaybeUninit::<libc::user_fpregs_struct>::zeroed();
    // SAFETY: `data` points to a live, writable `user_fpregs_struct`, the
    // size PTRACE_GETFPREGS writes.
    unsafe {
        raw(
            libc::PTRACE_GETFPREGS as _,
            pid,
            0,
            regs.as_mut_ptr() as usize,
        )
    }?;
    // SAFETY: zero-initialised plain integers, now filled by the kernel.
    Ok(unsafe { regs.assume_init() })
}
