//! The last step of restore: leave the task at the syscall-exit stop of an
//! injected `munmap` of the stub, with the registers it is to resume with.
//!
//! CRIU's restorer ends with `rt_sigreturn` from a frame holding the dumped
//! registers (`criu/pie/restorer.c`) after unmapping itself; compel catches
//! the task at the exit of that `munmap` (`compel_unmap`,
//! `compel_stop_on_syscall`). We skip the signal frame: at the exit stop the
//! stub is already gone, and `PTRACE_SETREGS` installs the final registers,
//! which the kernel returns to when the task is detached.

use super::run::{run_at_syscall_stops, INJECT_SIGMASK};
use super::{errno_result, InjectError, Injection};
use crate::arch::x86_64::restart_adjusted;
use crate::arch::{nr, UserRegs};

impl Injection<'_> {
    /// Unmaps the stub from within the task and leaves the task at the exit
    /// of that `munmap`, holding `regs` (and `xstate`, if given), so that
    /// once detached it continues exactly there.
    ///
    /// Registers saved inside a restartable syscall (`orig_rax` = the syscall,
    /// `rax` = `-ERESTART*`) are first resolved with
    /// [`restart_adjusted`](crate::arch::x86_64::restart_adjusted), as CRIU's
    /// dump does: the task re-issues the syscall (a sleep with a remaining
    /// time gets `EINTR`). `orig_rax` is set to -1 so that the kernel does not
    /// apply its own restart logic on top when the task leaves the stop.
    ///
    /// The signal mask is left as it was before this call; set the final one
    /// with [`SeizedTask::set_sigmask`](crate::seize::SeizedTask::set_sigmask)
    /// before detaching. On failure the stub may still be mapped; restore
    /// kills such a task.
    pub fn finish_with_regs(
        mut self,
        regs: &UserRegs,
        xstate: Option<&[u8]>,
    ) -> Result<(), InjectError> {
        self.active = false;
        let task = self.task;
        let pid = task.pid();
        let mut last = restart_adjusted(regs);
        last.orig_rax = u64::MAX;

        let mask = task.sigmask()?;
        let saved = task.regs()?;
        task.set_sigmask(INJECT_SIGMASK)?;
        let len = Self::map_len() as u64;
        let ret = match run_at_syscall_stops(task, self.stub, nr::MUNMAP, &[self.stub.0, len]) {
            Ok(ret) => ret,
            Err(e) => {
                if let Err(err) = task.set_regs(&saved).and_then(|()| task.set_sigmask(mask)) {
                    tracing::error!(%pid, error = %err, "cannot put registers back after a failed finish");
                }
                return Err(e);
            }
        };
        errno_result(ret).map_err(|source| InjectError::StubUnmap {
            pid,
            addr: self.stub,
            source,
        })?;
        task.set_regs(&last)?;
        if let Some(xstate) = xstate {
            task.set_xstate(xstate)?;
        }
        task.set_sigmask(mask)?;
        tracing::debug!(%pid, rip = last.rip, "final registers set at munmap exit");
        Ok(())
    }
}
