//! The engine's only home for `unsafe`: thin wrappers around kernel interfaces
//! that neither `nix` nor `libc` cover safely (raw ptrace requests, `clone3`,
//! pidfds, `userfaultfd`, `PAGEMAP_SCAN`, `cpuid`, a few socket options).
//!
//! CRIU counterparts: `compel/src/lib/ptrace.c`, `criu/kerndat.c` syscall
//! helpers, `compel/arch/x86/src/lib/cpu.c` (`cpuid`).
//!
//! # Safety
//!
//! Every `unsafe` block here passes the kernel only pointers to live, correctly
//! sized Rust values (or null where the kernel documents it), and turns every
//! descriptor the kernel returns into an `OwnedFd` on the spot. Callers outside
//! this module see safe functions returning `nix::Result`.
#![allow(unsafe_code)]

pub(crate) mod abi;
pub(crate) mod anon_fd;
pub(crate) mod anon_map;
pub(crate) mod clone3;
#[cfg(target_arch = "x86_64")]
pub(crate) mod cpuid;
pub(crate) mod file_map;
pub(crate) mod fork;
pub(crate) mod probe;
pub(crate) mod probe_child;
pub(crate) mod ptrace;
pub(crate) mod sock_diag;
pub(crate) mod sockopt;
pub(crate) mod task_query;
pub(crate) mod tty;
pub(crate) mod uffd;
