//! Queries about a dumped task that need raw calls: TLS descriptors through
//! ptrace and file identity through `kcmp`.
//!
//! # References
//!
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html)
//!   (`PTRACE_GET_THREAD_AREA`), [kcmp(2)](https://man7.org/linux/man-pages/man2/kcmp.2.html)

use nix::errno::Errno;
use nix::unistd::Pid;

/// `struct user_desc` (`asm/ldt.h`): the flag bits are packed in `flags`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UserDesc {
    pub(crate) entry_number: u32,
    pub(crate) base_addr: u32,
    pub(crate) limit: u32,
    /// `seg_32bit:1 contents:2 read_exec_only:1 limit_in_pages:1
    /// seg_not_present:1 useable:1 lm:1`, low bit first.
    pub(crate) flags: u32,
}

/// `PTRACE_GET_THREAD_AREA` (x86, `asm/ptrace-abi.h`).
const PTRACE_GET_THREAD_AREA: libc::c_uint = 25;

/// `PTRACE_GET_THREAD_AREA`: GDT TLS slot `index` of a stopped tracee.
pub(crate) fn get_thread_area(pid: Pid, index: u32) -> nix::Result<UserDesc> {
    let mut desc = UserDesc::default();
    Errno::clear();
    // SAFETY: `addr` is the slot number and `data` points to a live
    // `user_desc` the kernel fills.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GET_THREAD_AREA as _,
            pid.as_raw(),
            index as usize,
            std::ptr::from_mut(&mut desc),
        )
    };
    Errno::result(ret)?;
    Ok(desc)
}

/// `kcmp(pid1, pid2, kind)` for a whole-object kind (`KCMP_VM` 1,
/// `KCMP_FILES` 2, `KCMP_FS` 3, `KCMP_SIGHAND` 4): 0 when both tasks share
/// that object.
pub(crate) fn kcmp_object(pid1: Pid, pid2: Pid, kind: i32) -> nix::Result<i64> {
    // SAFETY: kcmp with these kinds takes only integers.
    Errno::result(unsafe {
        libc::syscall(libc::SYS_kcmp, pid1.as_raw(), pid2.as_raw(), kind, 0, 0)
    })
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: 0 when both descriptors refer
/// to the same open file description.
pub(crate) fn kcmp_file(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> nix::Result<i64> {
    // SAFETY: KCMP_FILE takes only integers.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            0, // KCMP_FILE
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    })
}

/// The raw 128 bytes of a `siginfo_t` that `PTRACE_PEEKSIGINFO` filled.
pub(crate) fn siginfo_bytes(si: &std::mem::MaybeUninit<libc::siginfo_t>) -> [u8; 128] {
    const _: () = assert!(size_of::<libc::siginfo_t>() == 128);
    // SAFETY: the kernel wrote all 128 bytes of this slot (it is among the
    // `n` entries PTRACE_PEEKSIGINFO reported), and any byte pattern is a
    // valid `[u8; 128]`.
    unsafe { std::mem::transmute_copy(si) }
}
