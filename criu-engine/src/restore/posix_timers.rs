//! POSIX timers of a restored process, with their dumped ids (CRIU's
//! `create_posix_timers` and `restore_posix_timers` in
//! `criu/pie/restorer.c`, `prepare_posix_timers` in `criu/timer.c`).
//!
//! The timers are created by injected `timer_create` calls in the leader
//! once every thread exists (a `SIGEV_THREAD_ID` timer names one), in
//! ascending id order. On kernels with `PR_TIMER_CREATE_RESTORE_IDS`
//! (Linux 6.16) the wanted id is passed in; otherwise the kernel's
//! sequential ids are taken one by one, deleting the ones in between. Each
//! timer is then armed with its dumped interval and remaining time (a timer
//! that was about to expire gets one interval, as CRIU does). Overrun
//! counts cannot be given back to the kernel.
//!
//! # References
//!
//! - [timer_create(2)](https://man7.org/linux/man-pages/man2/timer_create.2.html),
//!   [PR_TIMER_CREATE_RESTORE_IDS](https://man7.org/linux/man-pages/man2/prctl.2.html)

use criu_proto::images::PosixTimerEntry;
use nix::errno::Errno;

use super::mm::{MmError, Remote};
use super::task::TaskError;
use crate::arch::x86_64::nr;
use crate::sys::abi::PR_TIMER_CREATE_RESTORE_IDS;

/// `PR_TIMER_CREATE_RESTORE_IDS_OFF` / `_ON`.
const RESTORE_IDS_OFF: u64 = 0;
const RESTORE_IDS_ON: u64 = 1;
/// Scratch offsets: the `sigevent`, the timer id, the `itimerspec`.
const ID_OFFSET: usize = 64;
const SPEC_OFFSET: usize = 128;
/// Nanoseconds per second.
const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The kernel `struct sigevent` of `t` (64 bytes).
pub(crate) fn sigevent(t: &PosixTimerEntry) -> [u8; 64] {
    let mut ev = [0u8; 64];
    ev[0..8].copy_from_slice(&t.sival_ptr.to_le_bytes());
    ev[8..12].copy_from_slice(&t.si_signo.to_le_bytes());
    ev[12..16].copy_from_slice(&t.it_sigev_notify.to_le_bytes());
    ev[16..20].copy_from_slice(&t.notify_thread_id.unwrap_or(0).to_le_bytes());
    ev
}

/// The `struct itimerspec` that arms `t` again, or `None` when the times
/// are out of range.
pub(crate) fn itimerspec(t: &PosixTimerEntry) -> Option<[u8; 32]> {
    let (vsec, vnsec) = if t.vsec == 0 && t.vnsec == 0 {
        (t.isec, t.insec)
    } else {
        (t.vsec, t.vnsec)
    };
    let words = [t.isec, t.insec, vsec, vnsec];
    if words.iter().any(|&w| i64::try_from(w).is_err()) || t.insec >= NSEC_PER_SEC {
        return None;
    }
    if vnsec >= NSEC_PER_SEC {
        return None;
    }
    let mut spec = [0u8; 32];
    for (i, w) in words.iter().enumerate() {
        spec[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    Some(spec)
}

fn read_id(r: &Remote<'_, '_>) -> Result<u32, TaskError> {
    let mut id = [0u8; 4];
    r.inj
        .read_scratch(ID_OFFSET, &mut id)
        .map_err(|source| MmError::Inject {
            pid: r.pid,
            step: "read a new timer id",
            source,
        })?;
    Ok(u32::from_le_bytes(id))
}

fn create(r: &Remote<'_, '_>, t: &PosixTimerEntry, ev: u64, id: u64) -> Result<u32, TaskError> {
    r.call(
        "create a POSIX timer",
        t.it_id.into(),
        libc::SYS_timer_create,
        &[t.clock_id.into(), ev, id],
    )?;
    read_id(r)
}

/// Creates and arms the dumped timers in the leader `r` runs in.
pub(crate) fn restore(r: &Remote<'_, '_>, timers: &[PosixTimerEntry]) -> Result<(), TaskError> {
    if timers.is_empty() {
        return Ok(());
    }
    let mut timers: Vec<&PosixTimerEntry> = timers.iter().collect();
    timers.sort_by_key(|t| t.it_id);
    let bad_id = |want: u32, got: u32| TaskError::TimerId {
        pid: r.pid,
        want,
        got,
    };
    let restore_ids = match r.inj.syscall(
        nr::PRCTL,
        &[PR_TIMER_CREATE_RESTORE_IDS as u64, RESTORE_IDS_ON, 0, 0, 0],
    ) {
        Ok(0) => true,
        Ok(ret) if ret == -i64::from(libc::EINVAL) => false,
        Ok(ret) => {
            return Err(MmError::Syscall {
                pid: r.pid,
                step: "ask for POSIX timer ids",
                addr: 0,
                source: Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)),
            }
            .into())
        }
        Err(source) => {
            return Err(MmError::Inject {
                pid: r.pid,
                step: "ask for POSIX timer ids",
                source,
            }
            .into())
        }
    };
    let result = (|| {
        let mut next = 0u32;
        for t in &timers {
            let ev = r.scratch("copy a sigevent", 0, &sigevent(t))?;
            let id = r.scratch("copy a timer id", ID_OFFSET, &t.it_id.to_le_bytes())?;
            if restore_ids {
                let got = create(r, t, ev, id)?;
                if got != t.it_id {
                    return Err(bad_id(t.it_id, got));
                }
                continue;
            }
            loop {
                let got = create(r, t, ev, id)?;
                if got != next || got > t.it_id {
                    return Err(bad_id(t.it_id, got));
                }
                next += 1;
                if got == t.it_id {
                    break;
                }
                r.call(
                    "delete a stand-in POSIX timer",
                    got.into(),
                    libc::SYS_timer_delete,
                    &[got.into()],
                )?;
            }
        }
        Ok::<(), TaskError>(())
    })();
    if restore_ids {
        r.call(
            "stop asking for POSIX timer ids",
            0,
            nr::PRCTL,
            &[PR_TIMER_CREATE_RESTORE_IDS as u64, RESTORE_IDS_OFF, 0, 0, 0],
        )?;
    }
    result?;
    for t in &timers {
        let spec = itimerspec(t).ok_or(MmError::Syscall {
            pid: r.pid,
            step: "arm a POSIX timer (its dumped times are out of range)",
            addr: t.it_id.into(),
            source: Errno::EINVAL,
        })?;
        let addr = r.scratch("copy a timer value", SPEC_OFFSET, &spec)?;
        r.call(
            "arm a POSIX timer",
            t.it_id.into(),
            libc::SYS_timer_settime,
            &[t.it_id.into(), 0, addr, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer() -> PosixTimerEntry {
        PosixTimerEntry {
            it_id: 3,
            clock_id: 7,
            si_signo: 41,
            it_sigev_notify: 4,
            sival_ptr: 0x77,
            overrun: 0,
            isec: 9,
            insec: 0,
            vsec: 0,
            vnsec: 0,
            notify_thread_id: Some(12),
        }
    }

    #[test]
    fn sigevent_layout() {
        let ev = sigevent(&timer());
        assert_eq!(&ev[0..8], &0x77u64.to_le_bytes());
        assert_eq!(&ev[8..12], &41u32.to_le_bytes());
        assert_eq!(&ev[12..16], &4u32.to_le_bytes());
        assert_eq!(&ev[16..20], &12i32.to_le_bytes());
    }

    #[test]
    fn expired_value_becomes_one_interval() {
        let spec = itimerspec(&timer()).unwrap();
        assert_eq!(&spec[16..24], &9u64.to_le_bytes());
        let t = PosixTimerEntry {
            vsec: 5,
            vnsec: 10,
            ..timer()
        };
        let spec = itimerspec(&t).unwrap();
        assert_eq!(&spec[16..24], &5u64.to_le_bytes());
        assert_eq!(&spec[24..32], &10u64.to_le_bytes());
        let t = PosixTimerEntry {
            insec: NSEC_PER_SEC,
            ..timer()
        };
        assert!(itimerspec(&t).is_none());
    }
}
