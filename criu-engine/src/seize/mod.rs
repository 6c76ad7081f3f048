//! Seizing a task: attach with `PTRACE_SEIZE`, stop it with
//! `PTRACE_INTERRUPT`, read and write its registers and memory, and let it go
//! exactly as it was.
//!
//! CRIU counterparts: `compel_stop_task`, `compel_interrupt_task`,
//! `compel_wait_task` and `compel_resume_task` in `compel/src/lib/infect.c`,
//! `compel/src/lib/ptrace.c`, and the per-task part of `criu/seize.c`.
//!
//! Task states handled while seizing:
//!
//! - a running or sleeping task stops in the `PTRACE_EVENT_STOP` trap of the
//!   interrupt; a task interrupted inside a syscall shows `orig_rax` = the
//!   syscall and `rax` = `-ERESTART*` and restarts it on resumption as long as
//!   those registers are given back unchanged;
//! - a task in group-stop (`T`) is reported through a group-stop trap; its stop
//!   signal is kept and sent again on [`SeizedTask::detach`], so it stays stopped;
//! - a stop signal that reaches the task while we hold it is suppressed and
//!   likewise sent again on detach;
//! - any other signal delivered while seizing is passed on to the task;
//! - a zombie cannot be seized ([`SeizeError::Zombie`]); a pid that disappears
//!   gives [`SeizeError::Vanished`].
//!
//! `PTRACE_O_EXITKILL` is deliberately not set: a dumped task must survive
//! the engine's death (the kernel detaches it then).
//!
//! # References
//!
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html)
//! - [process_vm_readv(2)](https://man7.org/linux/man-pages/man2/process_vm_readv.2.html)
//! - [proc_pid_mem(5)](https://man7.org/linux/man-pages/man5/proc_pid_mem.5.html)

mod clone;
mod process;
mod status;
mod tree;
mod wait;

use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::io::IoSliceMut;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::sys::wait::WaitStatus;

pub use self::process::SeizedProcess;
pub(crate) use self::status::TaskStatus;
pub(crate) use self::tree::list_children;
pub use self::tree::{MemberKind, SeizedTree, TreeMember};
use crate::arch::{RemoteAddr, UserRegs};
use crate::pstree::RealPid;
use crate::sys::{abi, ptrace as rawptrace};

/// Options of every seize: report syscall stops as `SIGTRAP | 0x80` and keep
/// seccomp filters from acting on the syscalls we inject.
const SEIZE_OPTIONS: libc::c_ulong =
    libc::PTRACE_O_TRACESYSGOOD as libc::c_ulong | abi::PTRACE_O_SUSPEND_SECCOMP;

/// How long [`SeizedTask::attach_child_stopped`] waits for the child to stop.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Tunables of [`SeizedTask::seize`].
#[derive(Debug, Clone)]
pub struct SeizeOptions {
    /// How long to wait for the task to stop after the interrupt.
    pub timeout: Duration,
}

impl Default for SeizeOptions {
    /// CRIU's default `--timeout` of 10 seconds.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
        }
    }
}

/// Failures while seizing, inspecting or releasing a task.
#[derive(Debug, thiserror::Error)]
pub enum SeizeError {
    /// The pid does not exist (any more).
    #[error("task {pid} vanished while being seized")]
    Vanished {
        /// The task.
        pid: RealPid,
    },
    /// The task is a zombie; it has no registers or memory to seize.
    #[error("task {pid} is a zombie")]
    Zombie {
        /// The task.
        pid: RealPid,
    },
    /// `/proc/<pid>/status` could not be read.
    #[error("cannot read the status of task {pid}")]
    Status {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `PTRACE_SEIZE` failed.
    #[error("cannot seize task {pid}")]
    Attach {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// `PTRACE_INTERRUPT` failed.
    #[error("cannot interrupt task {pid}")]
    Interrupt {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The task did not stop in time.
    #[error("task {pid} did not stop within {timeout:?}")]
    Timeout {
        /// The task.
        pid: RealPid,
        /// The limit that passed.
        timeout: Duration,
    },
    /// `waitpid` failed.
    #[error("cannot wait for task {pid}")]
    Wait {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The task reported a state change that seizing does not expect.
    #[error("task {pid} stopped unexpectedly ({status})")]
    UnexpectedStop {
        /// The task.
        pid: RealPid,
        /// The wait status, as text.
        status: String,
    },
    /// The task died while we held it.
    #[error("task {pid} died while seized ({status})")]
    Died {
        /// The task.
        pid: RealPid,
        /// The wait status, as text.
        status: String,
    },
    /// Resuming the task (`PTRACE_CONT`, `PTRACE_SYSCALL`) failed.
    #[error("cannot resume task {pid}")]
    Resume {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Sending a signal to the task failed.
    #[error("cannot send {signal} to task {pid}")]
    Signal {
        /// The task.
        pid: RealPid,
        /// The signal.
        signal: Signal,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// A register-set request failed.
    #[error("cannot {op} of task {pid}")]
    Registers {
        /// The task.
        pid: RealPid,
        /// What was attempted ("read registers", "write the xstate", ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Reading the task's memory failed.
    #[error("cannot read {len} bytes at {addr} in task {pid}")]
    ReadMem {
        /// The task.
        pid: RealPid,
        /// Start of the range.
        addr: RemoteAddr,
        /// Length of the range.
        len: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the task's memory failed.
    #[error("cannot write {len} bytes at {addr} in task {pid}")]
    WriteMem {
        /// The task.
        pid: RealPid,
        /// Start of the range.
        addr: RemoteAddr,
        /// Length of the range.
        len: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `PTRACE_DETACH` failed.
    #[error("cannot detach from task {pid}")]
    Detach {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// Whether `sig` starts a group stop by default.
pub(crate) fn is_stop_signal(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

/// The bit of `sig` in a kernel signal mask.
pub(crate) fn sig_bit(sig: Signal) -> u64 {
    1u64 << (sig as i32 - 1)
}

/// A task (thread) we attached with `PTRACE_SEIZE` and stopped with
/// `PTRACE_INTERRUPT`.
///
/// Only this type exposes registers and injection. It is thread-affine (the
/// kernel honours ptrace requests only from the attaching thread), hence
/// neither `Send` nor `Sync`: use and drop it on the thread that created it.
/// Dropping it detaches (resuming the task, or leaving it stopped if it was
/// stopped when seized) unless it was already released.
#[derive(Debug)]
pub struct SeizedTask {
    pid: RealPid,
    status: TaskStatus,
    stop_signal: Cell<Option<Signal>>,
    mem: OnceCell<File>,
    attached: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl SeizedTask {
    /// Seizes and stops task `tid` (a thread id works too).
    ///
    /// Reads the task's state first: a zombie gives [`SeizeError::Zombie`], a
    /// missing pid [`SeizeError::Vanished`]. A task in group-stop is held in
    /// its group-stop trap and its stop signal kept (see
    /// [`SeizedTask::stop_signal`]).
    #[doc(alias = "compel_stop_task")]
    #[doc(alias = "compel_wait_task")]
    #[tracing::instrument(level = "debug", skip_all, fields(pid = %tid))]
    pub fn seize(tid: RealPid, opts: &SeizeOptions) -> Result<SeizedTask, SeizeError> {
        let status = read_status(tid)?;
        if status.state == 'Z' {
            return Err(SeizeError::Zombie { pid: tid });
        }
        let mut task = Self::attach(tid, status)?;
        let deadline = Instant::now() + opts.timeout;
        match task.wait_interrupt_stop(deadline, opts.timeout) {
            Ok(stop) => {
                task.stop_signal.set(stop);
                task.attached = true;
                tracing::debug!(state = %status.state, ?stop, "seized");
                Ok(task)
            }
            Err(e) => {
                task.abandon();
                Err(e)
            }
        }
    }

    /// Seizes the engine's own child `tid` that stopped itself with `SIGSTOP`
    /// (or is about to), for restore.
    ///
    /// Waits until the child is in group-stop, seizes it, then ends the group
    /// stop with `SIGCONT` and swallows that `SIGCONT` in its
    /// signal-delivery stop, where the task is left: it never runs its own
    /// code again before [`SeizedTask::detach`], and after the detach it runs
    /// (no stop signal is re-sent). The parent may see a `CLD_CONTINUED`
    /// wait event for it.
    #[tracing::instrument(level = "debug", skip_all, fields(pid = %tid))]
    pub fn attach_child_stopped(tid: RealPid) -> Result<SeizedTask, SeizeError> {
        let deadline = Instant::now() + CHILD_STOP_TIMEOUT;
        let status = loop {
            let status = read_status(tid)?;
            match status.state {
                'T' => break status,
                'Z' => return Err(SeizeError::Zombie { pid: tid }),
                _ if Instant::now() >= deadline => {
                    return Err(SeizeError::Timeout {
                        pid: tid,
                        timeout: CHILD_STOP_TIMEOUT,
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let mut task = Self::attach(tid, status)?;
        let result = task
            .wait_interrupt_stop(deadline, CHILD_STOP_TIMEOUT)
            .and_then(|stop| match stop {
                Some(_) => task.end_group_stop(deadline),
                None => Ok(()),
            });
        match result {
            Ok(()) => {
                task.attached = true;
                Ok(task)
            }
            Err(e) => {
                task.abandon();
                Err(e)
            }
        }
    }

    /// `PTRACE_SEIZE` + `PTRACE_INTERRUPT`; not yet waited for.
    fn attach(pid: RealPid, status: TaskStatus) -> Result<Self, SeizeError> {
        let npid = pid.as_nix();
        if let Err(e) = rawptrace::seize_raw(npid, SEIZE_OPTIONS) {
            return Err(match (e, read_status(pid)) {
                (Errno::ESRCH, _) | (_, Err(SeizeError::Vanished { .. })) => {
                    SeizeError::Vanished { pid }
                }
                (_, Ok(st)) if st.state == 'Z' => SeizeError::Zombie { pid },
                (source, _) => SeizeError::Attach { pid, source },
            });
        }
        let task = Self {
            pid,
            status,
            stop_signal: Cell::new(None),
            mem: OnceCell::new(),
            attached: false,
            _thread_bound: PhantomData,
        };
        if let Err(e) = ptrace::interrupt(npid) {
            task.abandon();
            return Err(match e {
                Errno::ESRCH => SeizeError::Vanished { pid },
                source => SeizeError::Interrupt { pid, source },
            });
        }
        Ok(task)
    }

    /// Waits for the stop our interrupt causes. Returns the group-stop signal
    /// if the task is (or was about to be) stopped by one.
    fn wait_interrupt_stop(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Option<Signal>, SeizeError> {
        let pid = self.pid;
        let mut suppressed = None;
        loop {
            let status = match wait::wait_until(pid.as_nix(), deadline) {
                Ok(Some(status)) => status,
                Ok(None) => return Err(SeizeError::Timeout { pid, timeout }),
                Err(Errno::ECHILD | Errno::ESRCH) => return Err(SeizeError::Vanished { pid }),
                Err(source) => return Err(SeizeError::Wait { pid, source }),
            };
            match status {
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(SeizeError::Vanished { pid });
                }
                WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
                    return Ok(if sig == Signal::SIGTRAP {
                        suppressed
                    } else {
                        Some(sig)
                    });
                }
                // A stop signal being delivered: hold it back, remember it
                // (detach sends it again) and go on to the interrupt trap.
                WaitStatus::Stopped(_, sig) if is_stop_signal(sig) => {
                    suppressed = Some(sig);
                    self.resume(None)?;
                }
                // Any other signal: let the task have it, as it would have.
                WaitStatus::Stopped(_, sig) => self.resume(Some(sig))?,
                other => {
                    return Err(SeizeError::UnexpectedStop {
                        pid,
                        status: format!("{other:?}"),
                    });
                }
            }
        }
    }

    /// Ends the group stop of a freshly seized child (see
    /// [`SeizedTask::attach_child_stopped`]).
    fn end_group_stop(&self, deadline: Instant) -> Result<(), SeizeError> {
        let pid = self.pid;
        // SIGCONT must be deliverable for its delivery stop to happen.
        let mask = self.sigmask()?;
        self.set_sigmask(mask & !sig_bit(Signal::SIGCONT))?;
        kill(pid.as_nix(), Signal::SIGCONT).map_err(|source| SeizeError::Signal {
            pid,
            signal: Signal::SIGCONT,
            source,
        })?;
        loop {
            self.resume(None)?;
            let status = match wait::wait_until(pid.as_nix(), deadline) {
                Ok(Some(status)) => status,
                Ok(None) => {
                    return Err(SeizeError::Timeout {
                        pid,
                        timeout: CHILD_STOP_TIMEOUT,
                    });
                }
                Err(source) => return Err(SeizeError::Wait { pid, source }),
            };
            match status {
                WaitStatus::Stopped(_, Signal::SIGCONT) => break,
                // A restored child of this task stopping or going on:
                // restore's doing, not something the task should see.
                WaitStatus::Stopped(_, Signal::SIGCHLD) => {}
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => {}
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(SeizeError::Died {
                        pid,
                        status: format!("{status:?}"),
                    });
                }
                other => {
                    return Err(SeizeError::UnexpectedStop {
                        pid,
                        status: format!("{other:?}"),
                    });
                }
            }
        }
        self.set_sigmask(mask)
    }

    /// Best-effort release of a task whose seize failed half-way. A task that
    /// never stopped cannot be detached; the kernel lets it go when the
    /// tracing thread exits.
    fn abandon(&self) {
        if let Err(err) = ptrace::detach(self.pid.as_nix(), None) {
            tracing::warn!(pid = %self.pid, %err, "cannot detach from a half-seized task");
        }
    }

    /// The task.
    pub fn pid(&self) -> RealPid {
        self.pid
    }

    /// The `State:` letter of `/proc/<pid>/status` just before seizing.
    pub fn proc_state(&self) -> char {
        self.status.state
    }

    /// The seccomp mode the task had (0 none, 1 strict, 2 filter).
    pub fn seccomp_mode(&self) -> u32 {
        self.status.seccomp_mode
    }

    /// The stop signal the task was stopped by (or that reached it while
    /// seized), which [`SeizedTask::detach`] sends again; `None` for a task
    /// that was running or sleeping.
    pub fn stop_signal(&self) -> Option<Signal> {
        self.stop_signal.get()
    }

    /// Records a stop signal that was suppressed while the task was held.
    pub(crate) fn note_stop_signal(&self, sig: Signal) {
        self.stop_signal.set(Some(sig));
    }

    /// General registers (`PTRACE_GETREGS`).
    pub fn regs(&self) -> Result<UserRegs, SeizeError> {
        ptrace::getregs(self.pid.as_nix()).map_err(|source| self.regs_err("read registers", source))
    }

    /// Replaces the general registers (`PTRACE_SETREGS`).
    pub fn set_regs(&self, regs: &UserRegs) -> Result<(), SeizeError> {
        ptrace::setregs(self.pid.as_nix(), *regs)
            .map_err(|source| self.regs_err("write registers", source))
    }

    /// The extended (XSAVE) state, `PTRACE_GETREGSET NT_X86_XSTATE`, as many
    /// bytes as the kernel filled. Components in their init state may be
    /// absent from `xstate_bv` (CRIU then fills the legacy area from
    /// [`SeizedTask::fpregs`]).
    pub fn xstate(&self) -> Result<Vec<u8>, SeizeError> {
        let mut buf = vec![0u8; crate::arch::x86_64::xstate_size()];
        let len = rawptrace::get_xstate(self.pid.as_nix(), &mut buf)
            .map_err(|source| self.regs_err("read the xstate", source))?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Replaces the extended state (`PTRACE_SETREGSET NT_X86_XSTATE`).
    pub fn set_xstate(&self, buf: &[u8]) -> Result<(), SeizeError> {
        rawptrace::set_xstate(self.pid.as_nix(), buf)
            .map_err(|source| self.regs_err("write the xstate", source))
    }

    /// The legacy FPU/SSE state (`PTRACE_GETFPREGS`).
    pub fn fpregs(&self) -> Result<libc::user_fpregs_struct, SeizeError> {
        rawptrace::get_fpregs(self.pid.as_nix())
            .map_err(|source| self.regs_err("read the fp registers", source))
    }

    /// The blocked-signal mask (`PTRACE_GETSIGMASK`), bit `n - 1` for signal `n`.
    pub fn sigmask(&self) -> Result<u64, SeizeError> {
        rawptrace::get_sigmask(self.pid.as_nix())
            .map_err(|source| self.regs_err("read the signal mask", source))
    }

    /// Replaces the blocked-signal mask (`PTRACE_SETSIGMASK`).
    pub fn set_sigmask(&self, mask: u64) -> Result<(), SeizeError> {
        rawptrace::set_sigmask(self.pid.as_nix(), mask)
            .map_err(|source| self.regs_err("write the signal mask", source))
    }

    fn regs_err(&self, op: &'static str, source: Errno) -> SeizeError {
        SeizeError::Registers {
            pid: self.pid,
            op,
            source,
        }
    }

    /// Opens `/proc/<pid>/mem` now rather than at the first access, e.g.
    /// while the worker still has the file-system identity that may open it.
    pub fn open_mem(&self) -> Result<(), SeizeError> {
        self.mem_file()
            .map(drop)
            .map_err(|source| SeizeError::WriteMem {
                pid: self.pid,
                addr: RemoteAddr(0),
                len: 0,
                source,
            })
    }

    fn mem_file(&self) -> std::io::Result<&File> {
        if let Some(f) = self.mem.get() {
            return Ok(f);
        }
        let f = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", self.pid))?;
        Ok(self.mem.get_or_init(|| f))
    }

    /// Fills `buf` from the task's memory at `addr`: `process_vm_readv`,
    /// falling back to `/proc/<pid>/mem` (which also reads pages the task
    /// cannot read itself).
    pub fn read_mem(&self, addr: RemoteAddr, buf: &mut [u8]) -> Result<(), SeizeError> {
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: usize::try_from(addr.0).unwrap_or(usize::MAX),
            len,
        }];
        let done = process_vm_readv(self.pid.as_nix(), &mut [IoSliceMut::new(buf)], &remote);
        if done == Ok(len) {
            return Ok(());
        }
        self.mem_file()
            .and_then(|f| f.read_exact_at(buf, addr.0))
            .map_err(|source| SeizeError::ReadMem {
                pid: self.pid,
                addr,
                len,
                source,
            })
    }

    /// Writes `buf` into the task's memory at `addr` through
    /// `/proc/<pid>/mem`, which also writes read-only and execute-only pages
    /// (private file pages get a private copy, as with `PTRACE_POKEDATA`).
    pub fn write_mem(&self, addr: RemoteAddr, buf: &[u8]) -> Result<(), SeizeError> {
        self.mem_file()
            .and_then(|f| f.write_all_at(buf, addr.0))
            .map_err(|source| SeizeError::WriteMem {
                pid: self.pid,
                addr,
                len: buf.len(),
                source,
            })
    }

    /// `PTRACE_CONT`, delivering `sig` if given.
    pub(crate) fn resume(&self, sig: Option<Signal>) -> Result<(), SeizeError> {
        ptrace::cont(self.pid.as_nix(), sig).map_err(|source| SeizeError::Resume {
            pid: self.pid,
            source,
        })
    }

    /// `PTRACE_SYSCALL`: run to the next syscall entry or exit.
    pub(crate) fn resume_to_syscall(&self) -> Result<(), SeizeError> {
        ptrace::syscall(self.pid.as_nix(), None).map_err(|source| SeizeError::Resume {
            pid: self.pid,
            source,
        })
    }

    /// Blocks until the task reports its next state change.
    pub(crate) fn wait(&self) -> Result<WaitStatus, SeizeError> {
        wait::wait(self.pid.as_nix()).map_err(|source| SeizeError::Wait {
            pid: self.pid,
            source,
        })
    }

    /// Releases the task: sends its stop signal again if it had one, then
    /// `PTRACE_DETACH`es, so it runs (or stays stopped) as before.
    #[doc(alias = "compel_resume_task")]
    pub fn detach(mut self) -> Result<(), SeizeError> {
        self.release(self.stop_signal.get())
    }

    /// Releases the task into a stopped state (`leave_stopped`): it gets its
    /// original stop signal, or `SIGSTOP`, before `PTRACE_DETACH`.
    pub fn detach_stopped(mut self) -> Result<(), SeizeError> {
        self.release(Some(self.stop_signal.get().unwrap_or(Signal::SIGSTOP)))
    }

    fn release(&mut self, restop: Option<Signal>) -> Result<(), SeizeError> {
        self.attached = false;
        let pid = self.pid;
        if let Some(signal) = restop {
            kill(pid.as_nix(), signal).map_err(|source| SeizeError::Signal {
                pid,
                signal,
                source,
            })?;
        }
        ptrace::detach(pid.as_nix(), None).map_err(|source| SeizeError::Detach { pid, source })
    }

    /// Kills the task with `SIGKILL` and collects its exit report (reaping it
    /// if it is our child). Errors are logged: the task is gone either way.
    pub fn kill(mut self) {
        self.attached = false;
        let pid = self.pid;
        if let Err(err) = kill(pid.as_nix(), Signal::SIGKILL) {
            tracing::warn!(%pid, %err, "cannot kill a seized task");
            return;
        }
        loop {
            match wait::wait(pid.as_nix()) {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

impl Drop for SeizedTask {
    fn drop(&mut self) {
        if self.attached {
            if let Err(err) = self.release(self.stop_signal.get()) {
                tracing::error!(pid = %self.pid, error = %err, "cannot release a seized task");
            }
        }
    }
}

/// Reads the status file, mapping a missing pid to [`SeizeError::Vanished`].
pub(crate) fn read_status(pid: RealPid) -> Result<TaskStatus, SeizeError> {
    TaskStatus::read(pid).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SeizeError::Vanished { pid },
        _ => SeizeError::Status { pid, source },
    })
}
