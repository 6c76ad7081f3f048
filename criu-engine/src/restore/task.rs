//! Per-task kernel state restored with injected syscalls once the memory is
//! back (the task part of CRIU's `criu/pie/restorer.c`: sigactions,
//! alternate stack, rseq, TLS, robust list, timers, pending signals,
//! personality; and `criu/cr-restore.c` for what the restorer gets from it).
//!
//! # References
//!
//! - [rt_sigaction(2)](https://man7.org/linux/man-pages/man2/rt_sigaction.2.html),
//!   [sigaltstack(2)](https://man7.org/linux/man-pages/man2/sigaltstack.2.html),
//!   [set_thread_area(2)](https://man7.org/linux/man-pages/man2/set_thread_area.2.html),
//!   [set_robust_list(2)](https://man7.org/linux/man-pages/man2/set_robust_list.2.html),
//!   [setitimer(2)](https://man7.org/linux/man-pages/man2/setitimer.2.html),
//!   [rt_sigqueueinfo(2)](https://man7.org/linux/man-pages/man2/rt_sigqueueinfo.2.html)

use criu_proto::images::{ItimerEntry, ThreadCoreEntry, ThreadInfoX86, UserDescT};

use super::images::TaskImages;
use super::mm::{MmError, Remote};
use crate::arch::x86_64::{nr, RemoteAddr};
use crate::pstree::RealPid;
use crate::seize::{SeizeError, SeizedTask};

/// Bytes of one `struct kernel_sigaction` on x86-64.
const KSIGACTION: usize = 32;
/// `PR_SET_DUMPABLE`, `PR_SET_THP_DISABLE`, `PR_SET_CHILD_SUBREAPER`.
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_SET_CHILD_SUBREAPER: u64 = 36;

/// Errors of restoring task state.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// An injected call failed.
    #[error(transparent)]
    Remote(#[from] MmError),
    /// A ptrace request on the task failed.
    #[error("task {pid}: cannot {step}")]
    Ptrace {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: SeizeError,
    },
    /// The dumped credentials differ from the restoring process's.
    #[error("task {pid}: cannot restore its credentials ({what} differ after setting them)")]
    Creds {
        /// Task.
        pid: RealPid,
        /// What differs.
        what: &'static str,
    },
    /// A POSIX timer could not get its dumped id.
    #[error("task {pid}: POSIX timer {want} was created with id {got}")]
    TimerId {
        /// Task.
        pid: RealPid,
        /// The dumped id.
        want: u32,
        /// The id the kernel gave.
        got: u32,
    },
    /// `/proc/<pid>/status` cannot be read.
    #[error("task {pid}: cannot read its status")]
    Status {
        /// Task.
        pid: RealPid,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Signal number of entry `i` of `tc.sigactions` (SIGKILL and SIGSTOP are
/// not stored).
pub(crate) fn sigaction_signo(i: usize) -> u64 {
    let i = i as u64;
    match i {
        0..8 => i + 1,
        8..17 => i + 2,
        _ => i + 3,
    }
}

fn sigactions(r: &Remote<'_, '_>, images: &TaskImages) -> Result<(), TaskError> {
    let mut table = Vec::with_capacity(images.tc.sigactions.len() * KSIGACTION);
    for sa in &images.tc.sigactions {
        for w in [sa.sigaction, sa.flags, sa.restorer, sa.mask] {
            table.extend_from_slice(&w.to_le_bytes());
        }
    }
    let base = r.scratch("copy signal actions", 0, &table)?;
    for i in 0..images.tc.sigactions.len() {
        let act = base + (i * KSIGACTION) as u64;
        let sig = sigaction_signo(i);
        r.call(
            "set a signal action",
            sig,
            nr::RT_SIGACTION,
            &[sig, act, 0, 8],
        )?;
    }
    Ok(())
}

fn sigaltstack(r: &Remote<'_, '_>, th: &ThreadCoreEntry) -> Result<(), TaskError> {
    let sas = th.sas.unwrap_or_default();
    let flags = if sas.ss_size == 0 && sas.ss_sp == 0 {
        libc::SS_DISABLE as u32
    } else {
        // SS_ONSTACK only says the task was running on it.
        sas.ss_flags & !(libc::SS_ONSTACK as u32)
    };
    let mut st = Vec::with_capacity(24);
    st.extend_from_slice(&sas.ss_sp.to_le_bytes());
    st.extend_from_slice(&u64::from(flags).to_le_bytes());
    st.extend_from_slice(&sas.ss_size.to_le_bytes());
    let addr = r.scratch("copy the alternate stack", 0, &st)?;
    r.call(
        "set the alternate stack",
        sas.ss_sp,
        nr::SIGALTSTACK,
        &[addr, 0],
    )?;
    Ok(())
}

fn rseq(r: &Remote<'_, '_>, task: &SeizedTask, th: &ThreadCoreEntry) -> Result<(), TaskError> {
    let Some(rs) = th.rseq_entry.as_ref() else {
        return Ok(());
    };
    if rs.rseq_abi_pointer == 0 {
        return Ok(());
    }
    r.call(
        "register rseq",
        rs.rseq_abi_pointer,
        nr::RSEQ,
        &[
            rs.rseq_abi_pointer,
            rs.rseq_abi_size.into(),
            0,
            rs.signature.into(),
        ],
    )?;
    if let Some(cs) = rs.rseq_cs_pointer.filter(|&cs| cs != 0) {
        // `struct rseq`: cpu_id_start, cpu_id, then the rseq_cs pointer.
        task.write_mem(RemoteAddr(rs.rseq_abi_pointer + 8), &cs.to_le_bytes())
            .map_err(|source| TaskError::Ptrace {
                pid: r.pid,
                step: "restore the rseq critical section",
                source,
            })?;
    }
    Ok(())
}

fn user_desc(d: &UserDescT) -> Vec<u8> {
    let flags = u32::from(d.seg_32bit)
        | (u32::from(d.contents_h) << 2)
        | (u32::from(d.contents_l) << 1)
        | (u32::from(d.read_exec_only) << 3)
        | (u32::from(d.limit_in_pages) << 4)
        | (u32::from(d.seg_not_present) << 5)
        | (u32::from(d.usable) << 6);
    [d.entry_number, d.base_addr, d.limit, flags]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn tls(r: &Remote<'_, '_>, ti: &ThreadInfoX86) -> Result<(), TaskError> {
    for d in &ti.tls {
        if d.seg_not_present && d.base_addr == 0 && d.limit == 0 {
            continue;
        }
        let addr = r.scratch("copy a TLS descriptor", 0, &user_desc(d))?;
        r.call(
            "set a TLS descriptor",
            d.entry_number.into(),
            libc::SYS_set_thread_area,
            &[addr],
        )?;
    }
    Ok(())
}

/// The `struct itimerval` words (interval, then value) that arm `t` again:
/// a periodic timer dumped with no time left (its signal was pending) gets
/// one interval, as CRIU does.
pub(crate) fn itimerval(t: &ItimerEntry) -> [u64; 4] {
    if t.vsec == 0 && t.vusec == 0 {
        [t.isec, t.iusec, t.isec, t.iusec]
    } else {
        [t.isec, t.iusec, t.vsec, t.vusec]
    }
}

fn itimer(r: &Remote<'_, '_>, which: u64, t: &ItimerEntry) -> Result<(), TaskError> {
    if t.isec == 0 && t.iusec == 0 && t.vsec == 0 && t.vusec == 0 {
        return Ok(());
    }
    let val: Vec<u8> = itimerval(t).iter().flat_map(|w| w.to_le_bytes()).collect();
    let addr = r.scratch("copy an interval timer", 0, &val)?;
    r.call(
        "set an interval timer",
        which,
        libc::SYS_setitimer,
        &[which, addr, 0],
    )?;
    Ok(())
}

/// Queues `signals` again: to the thread `r` runs in when `private`, to
/// its whole process otherwise. The ids are asked from the task itself:
/// in a pid namespace they are not ours.
fn queue_signals<'s>(
    r: &Remote<'_, '_>,
    signals: impl Iterator<Item = &'s criu_proto::images::SiginfoEntry>,
    private: bool,
) -> Result<(), TaskError> {
    let mut signals = signals.peekable();
    if signals.peek().is_none() {
        return Ok(());
    }
    let tgid = r.call("ask its pid", 0, libc::SYS_getpid, &[])?;
    let tid = r.call("ask its tid", 0, libc::SYS_gettid, &[])?;
    for info in signals {
        let bytes = &info.siginfo;
        let Some(signo) = bytes.get(..4) else {
            continue;
        };
        let signo = u64::from(u32::from_le_bytes(signo.try_into().expect("4 bytes")));
        let addr = r.scratch("copy a pending signal", 0, bytes)?;
        if private {
            r.call(
                "queue a pending signal",
                signo,
                libc::SYS_rt_tgsigqueueinfo,
                &[tgid, tid, signo, addr],
            )?;
        } else {
            r.call(
                "queue a pending signal",
                signo,
                libc::SYS_rt_sigqueueinfo,
                &[tgid, signo, addr],
            )?;
        }
    }
    Ok(())
}

/// `tc.personality` holds the hexadecimal text of `/proc/<pid>/personality`
/// read as a decimal number; undo that.
pub(crate) fn personality_value(stored: u32) -> Option<u64> {
    u64::from_str_radix(&stored.to_string(), 16).ok()
}

/// Restores what belongs to one thread (`r` runs in it): alternate stack, TLS, clear-tid address, robust list, rseq,
/// nice value, scheduling policy, name and private pending signals.
pub(crate) fn restore_thread_state(
    r: &Remote<'_, '_>,
    task: &SeizedTask,
    ti: &ThreadInfoX86,
    th: &ThreadCoreEntry,
    pdeath_now: bool,
) -> Result<(), TaskError> {
    sigaltstack(r, th)?;
    tls(r, ti)?;
    r.call(
        "set the clear-tid address",
        ti.clear_tid_addr,
        nr::SET_TID_ADDRESS,
        &[ti.clear_tid_addr],
    )?;
    r.call(
        "set the robust futex list",
        th.futex_rla,
        nr::SET_ROBUST_LIST,
        &[th.futex_rla, th.futex_rla_len.into()],
    )?;
    rseq(r, task, th)?;
    // A main thread keeps SIGKILL (see `child`) until [`set_pdeath`] at
    // the very end of its restore; other threads get theirs now.
    if pdeath_now {
        set_pdeath(r, th.pdeath_sig.unwrap_or(0).into())?;
    }
    if let Some(nice) = th.sched_nice.filter(|&n| n != 0) {
        r.call(
            "set the nice value",
            nice.unsigned_abs().into(),
            libc::SYS_setpriority,
            &[
                libc::PRIO_PROCESS as u64,
                0,
                u64::from_ne_bytes(i64::from(nice).to_ne_bytes()),
            ],
        )?;
    }
    if let Some(policy) = th.sched_policy.filter(|&p| p != 0) {
        let param = th.sched_prio.unwrap_or(0).to_le_bytes();
        let addr = r.scratch("copy the scheduling parameters", 0, &param)?;
        r.call(
            "set the scheduling policy",
            policy.into(),
            libc::SYS_sched_setscheduler,
            &[0, policy.into(), addr],
        )?;
    }
    if let Some(comm) = th.comm.as_ref().filter(|c| !c.is_empty()) {
        let mut name = comm.as_bytes()[..comm.len().min(15)].to_vec();
        name.push(0);
        let addr = r.scratch("copy the thread name", 0, &name)?;
        r.call(
            "set the thread name",
            addr,
            nr::PRCTL,
            &[libc::PR_SET_NAME as u64, addr, 0, 0, 0],
        )?;
    }
    let private = th.signals_p.iter().flat_map(|q| q.signals.iter());
    queue_signals(r, private, true)
}

/// `prctl(PR_SET_PDEATHSIG, sig)` in the task (0: none).
pub(crate) fn set_pdeath(r: &Remote<'_, '_>, sig: u64) -> Result<(), TaskError> {
    r.call(
        "set the parent-death signal",
        sig,
        nr::PRCTL,
        &[libc::PR_SET_PDEATHSIG as u64, sig, 0, 0, 0],
    )?;
    Ok(())
}

/// Restores the per-task state of a task whose memory is already back.
pub(crate) fn restore_state(
    r: &Remote<'_, '_>,
    task: &SeizedTask,
    images: &TaskImages,
) -> Result<(), TaskError> {
    // First: everything after runs with the task's own credentials, so the
    // kernel itself refuses what they do not allow.
    super::creds::apply(r, images.thread_core.creds.as_ref(), images.mm.dumpable)?;
    // New ids clear the parent-death signal: the task dies with the worker
    // until its restore completes.
    set_pdeath(r, libc::SIGKILL as u64)?;
    sigactions(r, images)?;
    restore_thread_state(r, task, &images.thread_info, &images.thread_core, false)?;
    if let Some(p) = personality_value(images.tc.personality).filter(|&p| p != 0) {
        r.call("set the personality", p, libc::SYS_personality, &[p])?;
    }
    let mm = &images.mm;
    if let Some(d) = mm.dumpable.filter(|&d| d != 1) {
        let d = u64::try_from(d).unwrap_or(0);
        r.call("set dumpable", d, nr::PRCTL, &[PR_SET_DUMPABLE, d, 0, 0, 0])?;
    }
    if mm.thp_disabled == Some(true) {
        r.call(
            "disable THP",
            1,
            nr::PRCTL,
            &[PR_SET_THP_DISABLE, 1, 0, 0, 0],
        )?;
    }
    if images.tc.child_subreaper == Some(true) {
        r.call(
            "become a child subreaper",
            1,
            nr::PRCTL,
            &[PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0],
        )?;
    }
    if let Some(t) = &images.tc.timers {
        itimer(r, libc::ITIMER_REAL as u64, &t.real)?;
        itimer(r, libc::ITIMER_VIRTUAL as u64, &t.virt)?;
        itimer(r, libc::ITIMER_PROF as u64, &t.prof)?;
    }
    let shared = images.tc.signals_s.iter().flat_map(|q| q.signals.iter());
    queue_signals(r, shared, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigaction_indices_skip_kill_and_stop() {
        assert_eq!(sigaction_signo(0), 1);
        assert_eq!(sigaction_signo(7), 8);
        assert_eq!(sigaction_signo(8), 10);
        assert_eq!(sigaction_signo(16), 18);
        assert_eq!(sigaction_signo(17), 20);
        assert_eq!(sigaction_signo(61), 64);
    }

    #[test]
    fn expired_itimer_gets_one_interval() {
        let t = ItimerEntry {
            isec: 0,
            iusec: 50_000,
            vsec: 0,
            vusec: 0,
        };
        assert_eq!(itimerval(&t), [0, 50_000, 0, 50_000]);
        let t = ItimerEntry { vsec: 3, ..t };
        assert_eq!(itimerval(&t), [0, 50_000, 3, 0]);
    }

    #[test]
    fn personality_quirk_is_undone() {
        assert_eq!(personality_value(40000), Some(0x40000));
        assert_eq!(personality_value(0), Some(0));
    }
}
