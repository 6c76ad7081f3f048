//! Running one syscall in a seized task from a `syscall; int3` stub, and the
//! stops that may come in between.
//!
//! CRIU counterparts: `parasite_run`, `parasite_trap` and `restore_thread_ctx`
//! in `compel/src/lib/infect.c`.
//!
//! While the syscall runs, every signal except `SIGTRAP` is blocked (a forced
//! `SIGTRAP` from `int3` that finds the signal blocked would reset the task's
//! handler to the default). Stop signals cannot be blocked: one that arrives
//! is suppressed and noted on the [`SeizedTask`], which sends it again on
//! detach. Registers and the signal mask are put back after every syscall, so
//! between injected syscalls the task looks exactly as when seized.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::InjectError;
use crate::arch::x86_64::{
    chain_regs, syscall_regs, syscall_result, CHAIN_TRAP_OFFSET, STUB_TRAP_OFFSET,
};
use crate::arch::{RemoteAddr, UserRegs};
use crate::seize::{is_stop_signal, sig_bit, SeizedTask};

/// The mask installed while injected code runs: everything but `SIGTRAP`.
pub(super) const INJECT_SIGMASK: u64 = !(1u64 << (Signal::SIGTRAP as u32 - 1));

/// Runs syscall `nr` with `args` from a stub at `ip`; returns the raw result.
pub(super) fn run_at(
    task: &SeizedTask,
    ip: RemoteAddr,
    nr: i64,
    args: &[u64],
) -> Result<i64, InjectError> {
    if args.len() > 6 {
        return Err(InjectError::TooManyArgs {
            pid: task.pid(),
            nr,
            count: args.len(),
        });
    }
    run_code(
        task,
        |saved| syscall_regs(saved, ip.0, nr, args),
        ip.offset(STUB_TRAP_OFFSET),
    )
    .map(|regs| syscall_result(&regs))
}

/// Runs the task with the registers `regs` makes from its own until it
/// traps at `trap`; returns the registers at the trap. The task's registers
/// and signal mask are put back whatever happened.
fn run_code(
    task: &SeizedTask,
    regs: impl FnOnce(&UserRegs) -> UserRegs,
    trap: RemoteAddr,
) -> Result<UserRegs, InjectError> {
    start_code(task, regs, trap)?.finish()
}

/// Code started in the task by [`start_chain`]: it runs while the engine
/// does other work, until [`Running::finish`] waits for its trap. Dropped
/// unfinished, it still waits for the trap and puts the task back.
pub(super) struct Running<'t> {
    task: &'t SeizedTask,
    saved: UserRegs,
    mask: u64,
    trap: RemoteAddr,
    /// The resume failed: nothing runs, only the state is put back.
    failed: Option<InjectError>,
    done: bool,
}

impl Running<'_> {
    /// Waits for the trap; returns the registers there, with the task's own
    /// registers and signal mask put back whatever happened.
    pub(super) fn finish(mut self) -> Result<UserRegs, InjectError> {
        self.complete()
    }

    fn complete(&mut self) -> Result<UserRegs, InjectError> {
        self.done = true;
        let result = match self.failed.take() {
            Some(e) => Err(e),
            None => wait_trap(self.task, self.trap),
        };
        let restored = self
            .task
            .set_regs(&self.saved)
            .and_then(|()| self.task.set_sigmask(self.mask));
        match (result, restored) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(err) = self.complete() {
            tracing::error!(pid = %self.task.pid(), %err, "injected code left unfinished");
        }
    }
}

/// Sets the task running the registers `regs` makes from its own, to trap
/// at `trap`; the caller finishes it with [`Running::finish`].
fn start_code(
    task: &SeizedTask,
    regs: impl FnOnce(&UserRegs) -> UserRegs,
    trap: RemoteAddr,
) -> Result<Running<'_>, InjectError> {
    let saved = task.regs()?;
    let mask = task.sigmask()?;
    debug_assert_eq!(INJECT_SIGMASK & sig_bit(Signal::SIGTRAP), 0);
    task.set_sigmask(INJECT_SIGMASK)?;
    let failed = task
        .set_regs(&regs(&saved))
        .map_err(InjectError::from)
        .and_then(|()| task.resume(None).map_err(InjectError::from))
        .err();
    Ok(Running {
        task,
        saved,
        mask,
        trap,
        failed,
        done: false,
    })
}

/// Starts the syscall chain at `ip` over `count` entries of the table at
/// `table` (see [`crate::arch::x86_64::SYSCALL_CHAIN`]): one trap for all,
/// awaited by [`Running::finish`] while the caller goes on meanwhile.
pub(super) fn start_chain(
    task: &SeizedTask,
    ip: RemoteAddr,
    table: RemoteAddr,
    count: usize,
) -> Result<Running<'_>, InjectError> {
    start_code(
        task,
        |saved| chain_regs(saved, ip.0, table.0, count as u64),
        ip.offset(CHAIN_TRAP_OFFSET),
    )
}

/// Runs syscall `nr` from the stub at `ip` under `PTRACE_SYSCALL` and stops
/// at its exit, returning the raw result. The task stays in that
/// syscall-exit stop with the injected registers; the caller installs the
/// next ones. Signals must already be blocked by the caller.
pub(super) fn run_at_syscall_stops(
    task: &SeizedTask,
    ip: RemoteAddr,
    nr: i64,
    args: &[u64],
) -> Result<i64, InjectError> {
    let current = task.regs()?;
    task.set_regs(&syscall_regs(&current, ip.0, nr, args))?;
    task.resume_to_syscall()?;
    let entry = wait_syscall_stop(task)?;
    if entry.orig_rax != nr as u64 {
        return Err(InjectError::UnexpectedStop {
            pid: task.pid(),
            status: format!("entry of syscall {} instead of {nr}", entry.orig_rax as i64),
        });
    }
    task.resume_to_syscall()?;
    let exit = wait_syscall_stop(task)?;
    Ok(syscall_result(&exit))
}

/// Waits until the `int3` of the stub traps with `rip` at `expect`.
fn wait_trap(task: &SeizedTask, expect: RemoteAddr) -> Result<UserRegs, InjectError> {
    loop {
        match task.wait()? {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                let regs = task.regs()?;
                if regs.rip == expect.0 {
                    return Ok(regs);
                }
                return Err(InjectError::UnexpectedSignal {
                    pid: task.pid(),
                    signal: Signal::SIGTRAP,
                    ip: RemoteAddr(regs.rip),
                });
            }
            status => step_over(task, status, false)?,
        }
    }
}

/// Waits for the next syscall-entry or syscall-exit stop (after
/// `PTRACE_SYSCALL`).
fn wait_syscall_stop(task: &SeizedTask) -> Result<UserRegs, InjectError> {
    loop {
        match task.wait()? {
            WaitStatus::PtraceSyscall(_) => return Ok(task.regs()?),
            status => step_over(task, status, true)?,
        }
    }
}

/// Handles a stop that is not the one awaited: group-stop, interrupt and
/// clone-event traps and stop signals are passed over (stop signals noted for detach);
/// anything else is an error, leaving the task in that stop.
fn step_over(task: &SeizedTask, status: WaitStatus, to_syscall: bool) -> Result<(), InjectError> {
    let pid = task.pid();
    let skip = match status {
        WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
            if is_stop_signal(sig) {
                task.note_stop_signal(sig);
            }
            true
        }
        WaitStatus::Stopped(_, sig) if is_stop_signal(sig) => {
            task.note_stop_signal(sig);
            true
        }
        // An injected clone under PTRACE_O_TRACECLONE reports the new
        // thread before the syscall returns.
        WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_CLONE) => true,
        // A child of the task stopped or went on (restore seizes and
        // releases whole trees): suppressed, the task never asked for it.
        WaitStatus::Stopped(_, Signal::SIGCHLD) => true,
        WaitStatus::Stopped(_, signal) => {
            let ip = task.regs().map(|r| RemoteAddr(r.rip)).unwrap_or_default();
            return Err(InjectError::UnexpectedSignal { pid, signal, ip });
        }
        WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
            return Err(InjectError::Died {
                pid,
                status: format!("{status:?}"),
            });
        }
        _ => false,
    };
    if !skip {
        return Err(InjectError::UnexpectedStop {
            pid,
            status: format!("{status:?}"),
        });
    }
    tracing::debug!(%pid, ?status, "passing over a stop during injection");
    if to_syscall {
        task.resume_to_syscall()?;
    } else {
        task.resume(None)?;
    }
    Ok(())
}
