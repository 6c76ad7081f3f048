//! POSIX timers of a process as `posix_timer_entry`s of `tc.timers`
//! (CRIU's `parasite_dump_posix_timers_seized` and `encode_posix_timer` in
//! `criu/timer.c`, the parasite's `dump_posix_timers`).
//!
//! `/proc/<pid>/timers` names each timer, its clock, signal, value and
//! target; the remaining time, interval and overrun count are asked from the
//! task with injected `timer_gettime` and `timer_getoverrun`. Entries are
//! written in ascending id order (the order CRIU's restore creates them).
//!
//! # References
//!
//! - [timer_create(2)](https://man7.org/linux/man-pages/man2/timer_create.2.html),
//!   [timer_settime(2)](https://man7.org/linux/man-pages/man2/timer_settime.2.html),
//!   [proc_pid_timers(5)](https://man7.org/linux/man-pages/man5/proc_pid_timers.5.html)

use criu_proto::images::PosixTimerEntry;

use crate::inject::{InjectError, Injection};
use crate::proc::timers::{self, ProcTimer};
use crate::proc::ProcError;
use crate::pstree::RealPid;

/// The POSIX timers could not be described.
#[derive(Debug, thiserror::Error)]
pub enum PosixTimerError {
    /// `/proc/<pid>/timers` could not be read or parsed.
    #[error("task {pid}: cannot read its POSIX timers")]
    Proc {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// An injected query failed.
    #[error("task {pid}: injected {what} of timer {id} failed")]
    Inject {
        /// The task.
        pid: RealPid,
        /// The timer.
        id: u32,
        /// Which query.
        what: &'static str,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// A `SIGEV_THREAD_ID` timer targets a thread outside the process.
    #[error("task {pid}: timer {id} signals thread {tid}, which is not one of its threads")]
    ForeignThread {
        /// The task.
        pid: RealPid,
        /// The timer.
        id: u32,
        /// The target.
        tid: i32,
    },
}

/// Builds the image entry of `t` from its `timer_gettime` answer (interval
/// seconds and nanoseconds, then value) and overrun count; `vtid` is the
/// target thread's id in the images.
pub fn entry(t: &ProcTimer, spec: [u64; 4], overrun: u32, vtid: Option<u32>) -> PosixTimerEntry {
    PosixTimerEntry {
        it_id: t.id,
        clock_id: t.clock,
        si_signo: t.signo,
        it_sigev_notify: t.notify,
        sival_ptr: t.sival,
        overrun,
        isec: spec[0],
        insec: spec[1],
        vsec: spec[2],
        vnsec: spec[3],
        notify_thread_id: vtid.map(|v| v as i32),
    }
}

/// Describes every POSIX timer of the process `inj` runs in; `vtid` maps a
/// thread id as `/proc` shows it to its id in the images.
pub fn dump(
    inj: &Injection<'_>,
    pid: RealPid,
    vtid: &dyn Fn(i32) -> Option<u32>,
) -> Result<Vec<PosixTimerEntry>, PosixTimerError> {
    let mut list = crate::proc::read(pid.0, "timers")
        .and_then(|t| timers::parse(&t))
        .map_err(|source| PosixTimerError::Proc { pid, source })?;
    list.sort_by_key(|t| t.id);
    let out = inj.scratch().0;
    list.iter()
        .map(|t| {
            let id = t.id;
            let err = |what| {
                move |source| PosixTimerError::Inject {
                    pid,
                    id,
                    what,
                    source,
                }
            };
            inj.syscall_ok(libc::SYS_timer_gettime, &[id.into(), out])
                .map_err(err("timer_gettime"))?;
            let mut raw = [0u8; 32];
            inj.read_scratch(0, &mut raw)
                .map_err(err("timer_gettime"))?;
            let spec: [u64; 4] = std::array::from_fn(|i| {
                u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
            });
            let overrun = inj
                .syscall_ok(libc::SYS_timer_getoverrun, &[id.into()])
                .map_err(err("timer_getoverrun"))?;
            let target = match t.thread {
                Some(tid) => {
                    Some(vtid(tid).ok_or(PosixTimerError::ForeignThread { pid, id, tid })?)
                }
                None => None,
            };
            Ok(entry(
                t,
                spec,
                u32::try_from(overrun).unwrap_or(u32::MAX),
                target,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_like_criu() {
        let t = ProcTimer {
            id: 3,
            signo: 41,
            sival: 0x77,
            notify: timers::SIGEV_THREAD_ID,
            thread: Some(500),
            clock: 7,
        };
        let e = entry(&t, [9, 0, 799, 5], 2, Some(12));
        assert_eq!((e.it_id, e.clock_id, e.si_signo), (3, 7, 41));
        assert_eq!((e.it_sigev_notify, e.sival_ptr, e.overrun), (4, 0x77, 2));
        assert_eq!((e.isec, e.insec, e.vsec, e.vnsec), (9, 0, 799, 5));
        assert_eq!(e.notify_thread_id, Some(12));
    }
}
