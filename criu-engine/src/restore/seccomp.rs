//! Seccomp state of restored threads (CRIU's `seccomp_prepare_threads` in
//! `criu/seccomp.c` and `restore_seccomp` in `criu/pie/restorer.c`).
//!
//! Each thread's programs are taken from `seccomp.img` at load time,
//! following `prev` from the program its core names (the first installed).
//! They are installed with injected `seccomp(SECCOMP_SET_MODE_FILTER)`
//! calls once every thread exists, the leader last, so that a leader's
//! `SECCOMP_FILTER_FLAG_TSYNC` chain reaches the threads. The engine's
//! ptrace sessions suspend seccomp (`PTRACE_O_SUSPEND_SECCOMP`), so the
//! syscalls injected afterwards are not filtered. Installing needs
//! `no_new_privs` or `CAP_SYS_ADMIN`, which the credentials restored
//! before give or refuse.
//!
//! # References
//!
//! - [seccomp(2)](https://man7.org/linux/man-pages/man2/seccomp.2.html)

use criu_proto::images::{SeccompEntry, ThreadCoreEntry};
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;

use super::images::{ImagesError, TaskImages};
use super::mm::{MmError, Remote};
use super::task::TaskError;
use crate::inject::Injection;
use crate::seize::SeizedTask;
use crate::task_core::seccomp::{install_order, SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_MODE_FILTER};

/// `SECCOMP_MODE_STRICT`.
const SECCOMP_MODE_STRICT: u32 = 1;
/// `SECCOMP_SET_MODE_STRICT`, `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// Bytes of one BPF instruction.
const SOCK_FILTER_SIZE: usize = 8;
/// Scratch offset of the program (after the `struct sock_fprog`).
const PROGRAM_OFFSET: usize = 16;

/// What one thread gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ThreadFilters {
    /// `SECCOMP_MODE_*` (0: none).
    pub(crate) mode: u32,
    /// Programs and their flags, in install order.
    pub(crate) programs: Vec<(Vec<u8>, u32)>,
}

/// Resolves the seccomp state of every thread of a process, `cores` in
/// `pstree_entry.threads` order with their tids.
pub(crate) fn load(
    dir: &ImagesDir,
    cores: &[(u32, &ThreadCoreEntry)],
) -> Result<Vec<ThreadFilters>, ImagesError> {
    let mut entry: Option<SeccompEntry> = None;
    let mut out = Vec::with_capacity(cores.len());
    for &(tid, th) in cores {
        let bad = |reason| ImagesError::Core { pid: tid, reason };
        let mode = u32::try_from(th.seccomp_mode.unwrap_or(0))
            .map_err(|_| bad("a negative seccomp mode"))?;
        let programs = match mode {
            0 | SECCOMP_MODE_STRICT => Vec::new(),
            SECCOMP_MODE_FILTER => {
                if entry.is_none() {
                    entry = Some(
                        dir.read_single(ImageKind::Seccomp, 0)
                            .map_err(|source| ImagesError::Read {
                                image: ImageKind::Seccomp.file_name(0),
                                source,
                            })?
                            .unwrap_or_default(),
                    );
                }
                let all = entry.as_ref().expect("just read");
                let index = th
                    .seccomp_filter
                    .ok_or_else(|| bad("seccomp filter mode without a filter"))?;
                let chain = install_order(all, index)
                    .ok_or_else(|| bad("a seccomp filter index outside seccomp.img"))?;
                if chain
                    .iter()
                    .any(|f| f.filter.is_empty() || f.filter.len() % SOCK_FILTER_SIZE != 0)
                {
                    return Err(bad("a seccomp filter of a partial instruction"));
                }
                chain
                    .into_iter()
                    .map(|f| (f.filter.clone(), f.flags.unwrap_or(0)))
                    .collect()
            }
            other => {
                return Err(ImagesError::Unsupported {
                    what: format!("seccomp mode {other} of thread {tid}"),
                })
            }
        };
        out.push(ThreadFilters { mode, programs });
    }
    Ok(out)
}

/// Installs `f` in the thread `r` runs in.
fn install(r: &Remote<'_, '_>, f: &ThreadFilters) -> Result<(), TaskError> {
    if f.mode == SECCOMP_MODE_STRICT {
        r.call(
            "enter seccomp strict mode",
            0,
            libc::SYS_seccomp,
            &[SECCOMP_SET_MODE_STRICT, 0, 0],
        )?;
        return Ok(());
    }
    for (i, (program, flags)) in f.programs.iter().enumerate() {
        let code = r.scratch("copy a seccomp filter", PROGRAM_OFFSET, program)?;
        let mut fprog = Vec::with_capacity(PROGRAM_OFFSET);
        let len = u16::try_from(program.len() / SOCK_FILTER_SIZE).unwrap_or(u16::MAX);
        fprog.extend_from_slice(&u64::from(len).to_le_bytes());
        fprog.extend_from_slice(&code.to_le_bytes());
        let addr = r.scratch("copy a seccomp filter", 0, &fprog)?;
        let got = r.call(
            "install a seccomp filter",
            i as u64,
            libc::SYS_seccomp,
            &[SECCOMP_SET_MODE_FILTER, (*flags).into(), addr],
        )?;
        // With TSYNC a positive result names a thread that could not follow.
        if got != 0 && flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
            return Err(MmError::Syscall {
                pid: r.pid,
                step: "synchronise a seccomp filter with the other threads",
                addr: got,
                source: Errno::ESRCH,
            }
            .into());
        }
    }
    Ok(())
}

/// Installs the seccomp state of every thread of a restored process (see
/// the module docs): `threads` are the created threads in image order.
pub(crate) fn install_all(
    inj: &Injection<'_>,
    images: &TaskImages,
    threads: &[SeizedTask],
) -> Result<(), TaskError> {
    for (t, f) in threads.iter().zip(images.seccomp.iter().skip(1)) {
        if f.mode != 0 {
            let thread_inj = inj.for_thread(t);
            install(
                &Remote {
                    inj: &thread_inj,
                    pid: t.pid(),
                },
                f,
            )?;
        }
    }
    match images.seccomp.first() {
        Some(f) if f.mode != 0 => install(
            &Remote {
                inj,
                pid: inj.task().pid(),
            },
            f,
        ),
        _ => Ok(()),
    }
}
