//! The threads of a restored process besides its leader (CRIU's
//! `prepare_thread_entries` / `restore_one_alive_task` in
//! `criu/cr-restore.c` and the thread part of `criu/pie/restorer.c`, which
//! clones every thread with its tid and gives each its registers).
//!
//! Once the leader's memory and state are back, the leader, traced with
//! `PTRACE_O_TRACECLONE`, runs an injected `clone3` with `set_tid` for each
//! thread. The kernel attaches the new thread to us and stops it before it
//! runs any code; its own state (alternate stack, TLS, clear-tid address,
//! robust list, rseq, name, private signals) is set with syscalls injected
//! into it from the leader's stub, then its registers, XSAVE state and
//! signal mask. The threads stay stopped until the leader is complete.
//!
//! # References
//!
//! - [clone3(2)](https://man7.org/linux/man-pages/man2/clone3.2.html)
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html),
//!   `PTRACE_O_TRACECLONE`

use criu_proto::images::{CoreEntry, PstreeEntry, ThreadCoreEntry, ThreadInfoX86};
use criu_proto::img::{ImageKind, ImagesDir};

use super::finish::{regs_from_image, xstate_from_image};
use super::images::{required, ImagesError};
use super::mm::Remote;
use super::task::{restore_thread_state, TaskError};
use crate::arch::x86_64::restart_adjusted;
use crate::inject::{InjectError, Injection};
use crate::pstree::RealPid;
use crate::seize::{SeizeError, SeizedTask};

/// Flags of a thread's `clone3`: what `pthread_create` shares.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;
/// Size of `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
const CLONE_ARGS_SIZE: usize = 80;
/// Scratch offset of the `set_tid` array.
const SET_TID_OFFSET: usize = 128;

/// What one non-leader thread needs.
#[derive(Debug)]
pub(crate) struct ThreadImages {
    /// Its tid in the images.
    pub(crate) tid: u32,
    /// Registers and TLS.
    pub(crate) thread_info: ThreadInfoX86,
    /// Per-thread state.
    pub(crate) thread_core: ThreadCoreEntry,
}

/// Errors of creating the threads.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// A ptrace request failed.
    #[error("thread {tid}: cannot {step}")]
    Ptrace {
        /// Thread (or the leader, for the clone).
        tid: RealPid,
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: SeizeError,
    },
    /// The injected `clone3` failed.
    #[error("cannot create thread {tid}")]
    Clone {
        /// The tid asked for.
        tid: u32,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// The new thread got another tid.
    #[error("thread {tid} was created as {got}")]
    WrongTid {
        /// The tid asked for.
        tid: u32,
        /// The tid it got.
        got: i64,
    },
    /// Its per-thread state cannot be restored.
    #[error(transparent)]
    State(#[from] TaskError),
}

/// Reads `core-<tid>.img` of every thread of `leader` but the first.
pub(crate) fn load(
    dir: &ImagesDir,
    leader: &PstreeEntry,
) -> Result<Vec<ThreadImages>, ImagesError> {
    let mut out = Vec::with_capacity(leader.threads.len().saturating_sub(1));
    for &tid in leader.threads.iter().skip(1) {
        let core: CoreEntry = required(dir, ImageKind::Core, tid.into())?;
        let bad = |reason| ImagesError::Core { pid: tid, reason };
        if core.tc.is_some() || core.ids.is_some() {
            return Err(bad("a thread core with process fields"));
        }
        let thread_info = core.thread_info.ok_or_else(|| bad("no thread_info"))?;
        let thread_core = core.thread_core.ok_or_else(|| bad("no thread_core"))?;
        if thread_info.gpregs.mode.unwrap_or(1) != 1 {
            return Err(bad("a 32-bit thread"));
        }
        if thread_info.fpregs.st_space.len() < 32 || thread_info.fpregs.xmm_space.len() < 64 {
            return Err(bad("short FPU register arrays"));
        }
        out.push(ThreadImages {
            tid,
            thread_info,
            thread_core,
        });
    }
    Ok(out)
}

fn clone_args(set_tid: u64) -> Vec<u8> {
    // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    // tls, set_tid, set_tid_size
    [THREAD_FLAGS, 0, 0, 0, 0, 0, 0, 0, set_tid, 1]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Creates one thread from the leader (see the module docs) and returns
/// its tid as we see it; the kernel attaches it to us and stops it before
/// its first instruction. With `own_ns`, the leader sees our ids.
fn create(inj: &Injection<'_>, tid: u32, own_ns: bool) -> Result<RealPid, ThreadError> {
    let err = |source| ThreadError::Clone { tid, source };
    let set_tid = inj
        .write_scratch(SET_TID_OFFSET, &tid.to_le_bytes())
        .map_err(err)?;
    let args = inj.write_scratch(0, &clone_args(set_tid.0)).map_err(err)?;
    let got = inj
        .syscall_ok(libc::SYS_clone3, &[args.0, CLONE_ARGS_SIZE as u64])
        .map_err(err)?;
    if got != u64::from(tid) {
        return Err(ThreadError::WrongTid {
            tid,
            got: got as i64,
        });
    }
    if own_ns {
        return Ok(RealPid(got as i32));
    }
    // Inside a new pid namespace the tid the task sees is not ours.
    let leader = inj.task().pid();
    Ok(super::tree::host_tid(leader, tid).unwrap_or(RealPid(got as i32)))
}

/// Gives a new thread its state and final registers.
fn restore_one(inj: &Injection<'_>, t: &SeizedTask, img: &ThreadImages) -> Result<(), ThreadError> {
    let tid = t.pid();
    let ptrace = |step| move |source| ThreadError::Ptrace { tid, step, source };
    let thread_inj = inj.for_thread(t);
    let remote = Remote {
        inj: &thread_inj,
        pid: tid,
    };
    restore_thread_state(&remote, t, &img.thread_info, &img.thread_core, true)?;
    let mut regs = restart_adjusted(&regs_from_image(&img.thread_info.gpregs));
    // The new thread stops on its way out of clone3: keep the kernel from
    // restarting anything when it leaves that stop.
    regs.orig_rax = u64::MAX;
    t.set_regs(&regs).map_err(ptrace("set its registers"))?;
    let current = t.xstate().map_err(ptrace("read its FPU state"))?;
    t.set_xstate(&xstate_from_image(&img.thread_info.fpregs, &current))
        .map_err(ptrace("set its FPU state"))?;
    let mask = img.thread_core.blk_sigset.unwrap_or(0);
    t.set_sigmask(mask).map_err(ptrace("set its signal mask"))
}

/// Creates and restores every thread of `threads`, from the leader that
/// `inj` runs in, adding each to `created` as soon as it exists, so that on
/// failure the caller can kill and collect them.
pub(crate) fn restore_all(
    inj: &Injection<'_>,
    threads: &[ThreadImages],
    created: &mut Vec<SeizedTask>,
) -> Result<(), ThreadError> {
    if threads.is_empty() {
        return Ok(());
    }
    let leader = inj.task();
    let tgid = leader.pid();
    let trace = |on| {
        leader
            .set_trace_clone(on)
            .map_err(|source| ThreadError::Ptrace {
                tid: tgid,
                step: "trace its clones",
                source,
            })
    };
    trace(true)?;
    let own_ns = super::tree::in_our_pidns(tgid);
    // Every clone first, then every new thread taken over: each reaches its
    // first stop while the next ones are created.
    let mut result = Ok(());
    let mut born = Vec::with_capacity(threads.len());
    for img in threads {
        match create(inj, img.tid, own_ns) {
            Ok(tid) => born.push(tid),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let first = created.len();
    for tid in born {
        match SeizedTask::adopt_clone(tid) {
            Ok(t) => created.push(t),
            Err(source) => {
                if result.is_ok() {
                    result = Err(ThreadError::Ptrace {
                        tid,
                        step: "take over the new thread",
                        source,
                    });
                }
            }
        }
    }
    result?;
    for (t, img) in created[first..].iter().zip(threads) {
        restore_one(inj, t, img)?;
    }
    trace(false)?;
    tracing::debug!(pid = %tgid, threads = threads.len(), "threads restored");
    Ok(())
}
