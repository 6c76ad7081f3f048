//! Tasks the kernel attaches to us: threads created by a traced task's
//! `clone` under `PTRACE_O_TRACECLONE` (restore's thread creation), and
//! collecting traced tasks killed with their whole process.
//!
//! CRIU counterpart: the thread part of `criu/pie/restorer.c` and
//! `compel/src/lib/infect.c` (`compel_wait_task`).

use std::cell::{Cell, OnceCell};
use std::marker::PhantomData;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::{process, wait, SeizeError, SeizedTask, TaskStatus, CHILD_STOP_TIMEOUT, SEIZE_OPTIONS};
use crate::pstree::RealPid;
use crate::sys::ptrace as rawptrace;

impl SeizedTask {
    /// Takes over thread `tid`, just created by a `clone` that a task traced
    /// with [`SeizedTask::set_trace_clone`] made: the kernel attached it to
    /// us and it stops before running any code. Waits for that stop.
    #[tracing::instrument(level = "debug", skip_all, fields(pid = %tid))]
    pub fn adopt_clone(tid: RealPid) -> Result<SeizedTask, SeizeError> {
        let deadline = Instant::now() + CHILD_STOP_TIMEOUT;
        let status = match wait::wait_until(tid.as_nix(), deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(SeizeError::Timeout {
                    pid: tid,
                    timeout: CHILD_STOP_TIMEOUT,
                })
            }
            Err(source) => return Err(SeizeError::Wait { pid: tid, source }),
        };
        match status {
            WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)
            | WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                return Err(SeizeError::Died {
                    pid: tid,
                    status: format!("{status:?}"),
                });
            }
            other => {
                return Err(SeizeError::UnexpectedStop {
                    pid: tid,
                    status: format!("{other:?}"),
                });
            }
        }
        Ok(Self {
            pid: tid,
            status: TaskStatus {
                state: 't',
                ..TaskStatus::default()
            },
            stop_signal: Cell::new(None),
            mem: OnceCell::new(),
            attached: true,
            _thread_bound: PhantomData,
        })
    }

    /// Makes the kernel attach every thread or process this task creates
    /// (`PTRACE_O_TRACECLONE`), or stops doing so.
    pub fn set_trace_clone(&self, on: bool) -> Result<(), SeizeError> {
        let mut options = SEIZE_OPTIONS;
        if on {
            options |= libc::PTRACE_O_TRACECLONE as libc::c_ulong;
        }
        rawptrace::set_options_raw(self.pid.as_nix(), options)
            .map_err(|source| self.regs_err("set ptrace options", source))
    }

    /// Forgets a task that was killed (by a signal to its whole process)
    /// and collects its exit.
    pub(crate) fn reap_killed(mut self) {
        self.attached = false;
        process::reap(self.pid);
    }
}
