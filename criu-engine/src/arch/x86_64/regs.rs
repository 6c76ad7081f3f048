//! x86-64 registers, syscall numbers and the syscall-restart rules the
//! engine needs to run syscalls inside a traced task.
//!
//! CRIU counterparts: `compel/arch/x86/src/lib/infect.c` (`code_syscall`,
//! `compel_syscall`, `parasite_setup_regs`, `arch_can_dump_task`, the restart
//! fix-up in `compel_get_task_regs`) and `criu/arch/x86/include/asm/restorer.h`.
//!
//! # References
//!
//! - [syscall(2)](https://man7.org/linux/man-pages/man2/syscall.2.html) (register convention)
//! - [restart_syscall(2)](https://man7.org/linux/man-pages/man2/restart_syscall.2.html)

use std::fmt;

/// General-purpose registers as `PTRACE_GETREGS` reports them.
pub use libc::user_regs_struct as UserRegs;

/// An address in a traced task's address space. Never dereferenced by the
/// engine; it only travels to the kernel or into the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteAddr(pub u64);

impl RemoteAddr {
    /// The address `bytes` further on (wrapping like the CPU does).
    pub fn offset(self, bytes: u64) -> Self {
        Self(self.0.wrapping_add(bytes))
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Syscall numbers of the native x86-64 table.
pub mod nr {
    /// `read`.
    pub const READ: i64 = libc::SYS_read;
    /// `write`.
    pub const WRITE: i64 = libc::SYS_write;
    /// `close`.
    pub const CLOSE: i64 = libc::SYS_close;
    /// `mmap`.
    pub const MMAP: i64 = libc::SYS_mmap;
    /// `mprotect`.
    pub const MPROTECT: i64 = libc::SYS_mprotect;
    /// `munmap`.
    pub const MUNMAP: i64 = libc::SYS_munmap;
    /// `mremap`.
    pub const MREMAP: i64 = libc::SYS_mremap;
    /// `madvise`.
    pub const MADVISE: i64 = libc::SYS_madvise;
    /// `rt_sigaction`.
    pub const RT_SIGACTION: i64 = libc::SYS_rt_sigaction;
    /// `rt_sigprocmask`.
    pub const RT_SIGPROCMASK: i64 = libc::SYS_rt_sigprocmask;
    /// `sigaltstack`.
    pub const SIGALTSTACK: i64 = libc::SYS_sigaltstack;
    /// `ioctl`.
    pub const IOCTL: i64 = libc::SYS_ioctl;
    /// `fcntl`.
    pub const FCNTL: i64 = libc::SYS_fcntl;
    /// `dup2`.
    pub const DUP2: i64 = libc::SYS_dup2;
    /// `getpid`.
    pub const GETPID: i64 = libc::SYS_getpid;
    /// `getppid`.
    pub const GETPPID: i64 = libc::SYS_getppid;
    /// `gettid`.
    pub const GETTID: i64 = libc::SYS_gettid;
    /// `prctl`.
    pub const PRCTL: i64 = libc::SYS_prctl;
    /// `arch_prctl`.
    pub const ARCH_PRCTL: i64 = libc::SYS_arch_prctl;
    /// `set_tid_address`.
    pub const SET_TID_ADDRESS: i64 = libc::SYS_set_tid_address;
    /// `set_robust_list`.
    pub const SET_ROBUST_LIST: i64 = libc::SYS_set_robust_list;
    /// `restart_syscall`.
    pub const RESTART_SYSCALL: i64 = libc::SYS_restart_syscall;
    /// `vmsplice`.
    pub const VMSPLICE: i64 = libc::SYS_vmsplice;
    /// `pipe2`.
    pub const PIPE2: i64 = libc::SYS_pipe2;
    /// `preadv`.
    pub const PREADV: i64 = libc::SYS_preadv;
    /// `rseq`.
    pub const RSEQ: i64 = libc::SYS_rseq;
    /// `timer_create`.
    pub const TIMER_CREATE: i64 = libc::SYS_timer_create;
    /// `timer_settime`.
    pub const TIMER_SETTIME: i64 = libc::SYS_timer_settime;
    /// `seccomp`.
    pub const SECCOMP: i64 = libc::SYS_seccomp;
    /// `userfaultfd`.
    pub const USERFAULTFD: i64 = libc::SYS_userfaultfd;
}

/// Kernel-internal "restart me" results a task stopped in a syscall may show
/// in `rax` (`include/linux/errno.h`); never seen by user space.
pub mod restart {
    /// Restart if no handler ran or the handler has `SA_RESTART`.
    pub const ERESTARTSYS: i64 = 512;
    /// Always restart.
    pub const ERESTARTNOINTR: i64 = 513;
    /// Restart only if no handler ran.
    pub const ERESTARTNOHAND: i64 = 514;
    /// Restart through `restart_syscall` and the task's `restart_block`.
    pub const ERESTART_RESTARTBLOCK: i64 = 516;
}

/// The injected code: `syscall` then `int3` padding (8 bytes, one word).
pub const SYSCALL_STUB: [u8; 8] = [0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];
/// Length of the `syscall` instruction.
pub const SYSCALL_INSN_LEN: u64 = 2;
/// Where `rip` points, relative to the stub, once its `int3` trapped.
pub const STUB_TRAP_OFFSET: u64 = 3;

/// Where the syscall chain starts in the stub page (after [`SYSCALL_STUB`]).
pub const CHAIN_OFFSET: u64 = 16;
/// Bytes of one syscall chain entry: `nr`, six arguments, the result.
pub const CHAIN_ENTRY_LEN: usize = 64;
/// Code running a table of syscalls in a row, one trap in all: `rbx` points
/// at the table, `r12` holds the number of entries. Each entry is eight
/// words (`nr`, `a1`..`a6`, result); the code stores `rax` in the result
/// word after each `syscall`, then ends with `int3`.
///
/// ```text
/// 0:  test r12, r12        4d 85 e4
/// 3:  jz   47              74 2a
/// 5:  mov  rax, [rbx]      48 8b 03
///     mov  rdi, [rbx+8]    48 8b 7b 08
///     mov  rsi, [rbx+16]   48 8b 73 10
///     mov  rdx, [rbx+24]   48 8b 53 18
///     mov  r10, [rbx+32]   4c 8b 53 20
///     mov  r8,  [rbx+40]   4c 8b 43 28
///     mov  r9,  [rbx+48]   4c 8b 4b 30
///     syscall              0f 05
///     mov  [rbx+56], rax   48 89 43 38
///     add  rbx, 64         48 83 c3 40
///     dec  r12             49 ff cc
/// 45: jmp  0               eb d1
/// 47: int3                 cc
/// ```
pub const SYSCALL_CHAIN: [u8; 48] = [
    0x4d, 0x85, 0xe4, 0x74, 0x2a, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10,
    0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
    0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc, 0xeb, 0xd1, 0xcc,
];
/// Where `rip` points, relative to the chain, once its `int3` trapped.
pub const CHAIN_TRAP_OFFSET: u64 = SYSCALL_CHAIN.len() as u64;

/// Registers that run the syscall chain at `ip` over `count` entries at
/// `table`, starting from `base` (see [`syscall_regs`]).
pub fn chain_regs(base: &UserRegs, ip: u64, table: u64, count: u64) -> UserRegs {
    let mut regs = syscall_regs(base, ip, 0, &[]);
    regs.rbx = table;
    regs.r12 = count;
    regs
}

/// Code segment selector of 64-bit user mode (`__USER_CS`).
pub const USER_CS: u64 = 0x33;
/// Code segment selector of 32-bit compat user mode (`__USER32_CS`).
pub const USER32_CS: u64 = 0x23;

const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;

/// Whether the task runs 64-bit code with the standard code segment, the only
/// mode the injection supports (`arch_can_dump_task`).
#[doc(alias = "arch_can_dump_task")]
pub fn is_native(regs: &UserRegs) -> bool {
    regs.cs == USER_CS
}

/// Registers that run syscall `nr` with `args` from `ip` (which must hold
/// [`SYSCALL_STUB`]), starting from `base` so that segment and TLS registers
/// stay the task's own. `orig_rax = -1` keeps the kernel's restart logic out
/// of the way; trace and direction flags are cleared.
#[doc(alias = "compel_syscall")]
#[doc(alias = "parasite_setup_regs")]
pub fn syscall_regs(base: &UserRegs, ip: u64, nr: i64, args: &[u64]) -> UserRegs {
    let mut regs = *base;
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    regs.rax = nr as u64;
    regs.rdi = arg(0);
    regs.rsi = arg(1);
    regs.rdx = arg(2);
    regs.r10 = arg(3);
    regs.r8 = arg(4);
    regs.r9 = arg(5);
    regs.rip = ip;
    regs.orig_rax = u64::MAX;
    regs.eflags &= !(EFLAGS_TF | EFLAGS_DF);
    regs
}

/// The result register read as the kernel's signed return value.
pub fn syscall_result(regs: &UserRegs) -> i64 {
    regs.rax as i64
}

/// Resolves a pending syscall restart the way CRIU does when it saves a
/// task's registers for an image: a task stopped inside a syscall that
/// returned `-ERESTARTSYS`, `-ERESTARTNOHAND` or `-ERESTARTNOINTR` gets
/// `rax = orig_rax` and `rip` moved back over the `syscall` instruction, so it
/// simply issues the syscall again when it resumes with these registers; a
/// `-ERESTART_RESTARTBLOCK` (sleeps with a remaining time kept in the kernel's
/// `restart_block`, which no image carries) becomes `-EINTR`.
///
/// Registers that are not in a restartable syscall come back unchanged, and
/// applying it twice changes nothing (after the fix-up `rax` is a syscall
/// number, never a restart code). `orig_rax` is left alone; callers that
/// install the result as a return-to-user context must set it to -1 so the
/// kernel does not try to restart once more.
#[doc(alias = "compel_get_task_regs")]
pub fn restart_adjusted(regs: &UserRegs) -> UserRegs {
    let mut out = *regs;
    if (regs.orig_rax as i64) < 0 {
        return out;
    }
    match -(regs.rax as i64) {
        restart::ERESTARTSYS | restart::ERESTARTNOHAND | restart::ERESTARTNOINTR => {
            out.rax = regs.orig_rax;
            out.rip = regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
        }
        restart::ERESTART_RESTARTBLOCK => {
            out.rax = (-i64::from(libc::EINTR)) as u64;
        }
        _ => {}
    }
    out
}

/// Size of the buffer `PTRACE_GETREGSET NT_X86_XSTATE` may fill: the largest
/// XSAVE area the CPU can use (CPUID leaf 0xd, `ecx`), at least the legacy
/// 512-byte area plus the 64-byte header.
pub fn xstate_size() -> usize {
    let max_leaf = crate::sys::cpuid::cpuid(0, 0).eax;
    let size = if (0xd..0x8000_0000).contains(&max_leaf) {
        let r = crate::sys::cpuid::cpuid(0xd, 0);
        r.ecx.max(r.ebx)
    } else {
        0
    };
    usize::try_from(size).unwrap_or(0).max(576)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> UserRegs {
        UserRegs {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            orig_rax: 0,
            rip: 0,
            cs: USER_CS,
            eflags: 0x246,
            rsp: 0,
            ss: 0x2b,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        }
    }

    #[test]
    fn restart_sys_rewinds_to_the_syscall() {
        let mut r = zero();
        r.orig_rax = 0; // read
        r.rax = (-restart::ERESTARTSYS) as u64;
        r.rip = 0x1002;
        let a = restart_adjusted(&r);
        assert_eq!(a.rax, 0);
        assert_eq!(a.rip, 0x1000);
        assert_eq!(restart_adjusted(&a), a, "idempotent");
    }

    #[test]
    fn restart_block_becomes_eintr() {
        let mut r = zero();
        r.orig_rax = 230; // clock_nanosleep
        r.rax = (-restart::ERESTART_RESTARTBLOCK) as u64;
        r.rip = 0x2002;
        let a = restart_adjusted(&r);
        assert_eq!(a.rax as i64, -i64::from(libc::EINTR));
        assert_eq!(a.rip, 0x2002);
    }

    #[test]
    fn no_syscall_no_change() {
        let mut r = zero();
        r.orig_rax = u64::MAX;
        r.rax = (-restart::ERESTARTSYS) as u64;
        r.rip = 0x3000;
        assert_eq!(restart_adjusted(&r), r);
    }

    #[test]
    fn syscall_regs_follow_the_abi() {
        let mut base = zero();
        base.eflags = 0x246 | EFLAGS_TF | EFLAGS_DF;
        let r = syscall_regs(&base, 0x5000, nr::MMAP, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            (r.rax, r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9),
            (9, 1, 2, 3, 4, 5, 6)
        );
        assert_eq!((r.rip, r.orig_rax, r.eflags), (0x5000, u64::MAX, 0x246));
        assert!(is_native(&r));
    }
}
