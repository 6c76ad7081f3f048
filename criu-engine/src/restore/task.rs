//! Per-task kernel state restored with injected syscalls once the memory is
//! back (the task part of CRIU's `criu/pie/restorer.c`: sigactions,
//! alternate stack, rseq, TLS, robust list, interval timers, membarrier
//! registrations, pending signals, personality, login uid; and `criu/cr-restore.c` for what the restorer gets from it).
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
use super::mm::{MmError, Remote, RemoteCall};
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

/// Injected calls collected for one batch, with the data they point to
/// laid out in the scratch area from [`Calls::BASE`] on.
struct Calls {
    calls: Vec<RemoteCall>,
    data: Vec<u8>,
    scratch: u64,
}

impl Calls {
    /// Scratch offset of the batch's data.
    const BASE: usize = 0;

    fn new(r: &Remote<'_, '_>) -> Self {
        Calls {
            calls: Vec::new(),
            data: Vec::new(),
            scratch: r.inj.scratch().0 + Self::BASE as u64,
        }
    }

    /// Places `bytes` in the batch's data; returns their address in the task.
    fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        self.data.resize(self.data.len().div_ceil(8) * 8, 0);
        self.scratch + at as u64
    }

    fn push(&mut self, step: &'static str, addr: u64, nr: i64, args: &[u64]) {
        self.calls.push((step, addr, nr, args.to_vec()));
    }

    /// Copies the data into the scratch area and runs the calls (one trap).
    fn run(self, r: &Remote<'_, '_>) -> Result<(), TaskError> {
        if self.calls.is_empty() {
            return Ok(());
        }
        r.scratch("copy the state to restore", Self::BASE, &self.data)?;
        r.batch(&self.calls)?;
        Ok(())
    }
}

fn sigactions(c: &mut Calls, images: &TaskImages) {
    for (i, sa) in images.tc.sigactions.iter().enumerate() {
        let raw: Vec<u8> = [sa.sigaction, sa.flags, sa.restorer, sa.mask]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        debug_assert_eq!(raw.len(), KSIGACTION);
        let act = c.put(&raw);
        let sig = sigaction_signo(i);
        c.push(
            "set a signal action",
            sig,
            nr::RT_SIGACTION,
            &[sig, act, 0, 8],
        );
    }
}

fn sigaltstack(c: &mut Calls, th: &ThreadCoreEntry) {
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
    let addr = c.put(&st);
    c.push(
        "set the alternate stack",
        sas.ss_sp,
        nr::SIGALTSTACK,
        &[addr, 0],
    );
}

fn rseq_register(c: &mut Calls, th: &ThreadCoreEntry) {
    let Some(rs) = th.rseq_entry.as_ref().filter(|rs| rs.rseq_abi_pointer != 0) else {
        return;
    };
    c.push(
        "register rseq",
        rs.rseq_abi_pointer,
        nr::RSEQ,
        &[
            rs.rseq_abi_pointer,
            rs.rseq_abi_size.into(),
            0,
            rs.signature.into(),
        ],
    );
}

/// Puts back the rseq critical section pointer (after the registration).
fn rseq_cs(r: &Remote<'_, '_>, task: &SeizedTask, th: &ThreadCoreEntry) -> Result<(), TaskError> {
    let Some(rs) = th.rseq_entry.as_ref().filter(|rs| rs.rseq_abi_pointer != 0) else {
        return Ok(());
    };
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

fn tls(c: &mut Calls, ti: &ThreadInfoX86) {
    for d in &ti.tls {
        if d.seg_not_present && d.base_addr == 0 && d.limit == 0 {
            continue;
        }
        let addr = c.put(&user_desc(d));
        c.push(
            "set a TLS descriptor",
            d.entry_number.into(),
            libc::SYS_set_thread_area,
            &[addr],
        );
    }
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

fn itimer(c: &mut Calls, which: u64, t: &ItimerEntry) {
    if t.isec == 0 && t.iusec == 0 && t.vsec == 0 && t.vusec == 0 {
        return;
    }
    let val: Vec<u8> = itimerval(t).iter().flat_map(|w| w.to_le_bytes()).collect();
    let addr = c.put(&val);
    c.push(
        "set an interval timer",
        which,
        libc::SYS_setitimer,
        &[which, addr, 0],
    );
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

/// Restores what belongs to one thread (`r` runs in it): alternate stack,
/// TLS, clear-tid address, robust list, rseq, nice value, scheduling policy,
/// name and private pending signals.
pub(crate) fn restore_thread_state(
    r: &Remote<'_, '_>,
    task: &SeizedTask,
    ti: &ThreadInfoX86,
    th: &ThreadCoreEntry,
    pdeath_now: bool,
) -> Result<(), TaskError> {
    let mut c = Calls::new(r);
    thread_state(&mut c, ti, th, pdeath_now);
    c.run(r)?;
    rseq_cs(r, task, th)?;
    let private = th.signals_p.iter().flat_map(|q| q.signals.iter());
    queue_signals(r, private, true)
}

/// The calls of [`restore_thread_state`] (all but the rseq critical section
/// and the pending signals).
fn thread_state(c: &mut Calls, ti: &ThreadInfoX86, th: &ThreadCoreEntry, pdeath_now: bool) {
    sigaltstack(c, th);
    tls(c, ti);
    c.push(
        "set the clear-tid address",
        ti.clear_tid_addr,
        nr::SET_TID_ADDRESS,
        &[ti.clear_tid_addr],
    );
    c.push(
        "set the robust futex list",
        th.futex_rla,
        nr::SET_ROBUST_LIST,
        &[th.futex_rla, th.futex_rla_len.into()],
    );
    rseq_register(c, th);
    // A main thread keeps SIGKILL (see `child`) until [`set_pdeath`] at
    // the very end of its restore; other threads get theirs now.
    if pdeath_now {
        let sig = th.pdeath_sig.unwrap_or(0).into();
        c.push(
            "set the parent-death signal",
            sig,
            nr::PRCTL,
            &[libc::PR_SET_PDEATHSIG as u64, sig, 0, 0, 0],
        );
    }
    if let Some(nice) = th.sched_nice.filter(|&n| n != 0) {
        c.push(
            "set the nice value",
            nice.unsigned_abs().into(),
            libc::SYS_setpriority,
            &[
                libc::PRIO_PROCESS as u64,
                0,
                u64::from_ne_bytes(i64::from(nice).to_ne_bytes()),
            ],
        );
    }
    if let Some(policy) = th.sched_policy.filter(|&p| p != 0) {
        let param = th.sched_prio.unwrap_or(0).to_le_bytes();
        let addr = c.put(&param);
        c.push(
            "set the scheduling policy",
            policy.into(),
            libc::SYS_sched_setscheduler,
            &[0, policy.into(), addr],
        );
    }
    if let Some(comm) = th.comm.as_ref().filter(|c| !c.is_empty()) {
        let mut name = comm.as_bytes()[..comm.len().min(15)].to_vec();
        name.push(0);
        let addr = c.put(&name);
        c.push(
            "set the thread name",
            addr,
            nr::PRCTL,
            &[libc::PR_SET_NAME as u64, addr, 0, 0, 0],
        );
    }
}

/// The audit login uid (CRIU's `prepare_loginuid`): written by the task
/// itself to `/proc/self/loginuid`, the only task the kernel lets change
/// it. Unset (`u32::MAX`) or unknown ids, and a task that already has the
/// dumped one, are left alone.
fn loginuid(r: &Remote<'_, '_>, dumped: Option<u32>) -> Result<(), TaskError> {
    let Some(uid) = dumped.filter(|&u| u != u32::MAX) else {
        return Ok(());
    };
    let current = std::fs::read_to_string(format!("/proc/{}/loginuid", r.pid))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if current.is_none_or(|c| c == uid) {
        return Ok(());
    }
    let fd = r.open("/proc/self/loginuid", libc::O_WRONLY)?;
    let text = uid.to_string();
    let addr = r.scratch("copy the login uid", 0, text.as_bytes())?;
    let written = r.call(
        "set the login uid",
        uid.into(),
        libc::SYS_write,
        &[fd, addr, text.len() as u64],
    );
    r.call("close the login uid file", fd, libc::SYS_close, &[fd])?;
    written?;
    Ok(())
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
    // Before the credentials: setting it takes CAP_AUDIT_CONTROL.
    loginuid(r, images.tc.loginuid)?;
    // First: everything after runs with the task's own credentials, so the
    // kernel itself refuses what they do not allow.
    super::creds::apply(r, images.thread_core.creds.as_ref(), images.mm.dumpable)?;
    // The rest runs as one batch, in this order.
    let mut c = Calls::new(r);
    // New ids clear the parent-death signal: the task dies with the worker
    // until its restore completes.
    let kill = libc::SIGKILL as u64;
    c.push(
        "set the parent-death signal",
        kill,
        nr::PRCTL,
        &[libc::PR_SET_PDEATHSIG as u64, kill, 0, 0, 0],
    );
    sigactions(&mut c, images);
    thread_state(&mut c, &images.thread_info, &images.thread_core, false);
    if let Some(p) = personality_value(images.tc.personality).filter(|&p| p != 0) {
        c.push("set the personality", p, libc::SYS_personality, &[p]);
    }
    let mm = &images.mm;
    if let Some(d) = mm.dumpable.filter(|&d| d != 1) {
        let d = u64::try_from(d).unwrap_or(0);
        c.push("set dumpable", d, nr::PRCTL, &[PR_SET_DUMPABLE, d, 0, 0, 0]);
    }
    if mm.thp_disabled == Some(true) {
        c.push(
            "disable THP",
            1,
            nr::PRCTL,
            &[PR_SET_THP_DISABLE, 1, 0, 0, 0],
        );
    }
    if images.tc.child_subreaper == Some(true) {
        c.push(
            "become a child subreaper",
            1,
            nr::PRCTL,
            &[PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0],
        );
    }
    // Each bit of the mask is the `MEMBARRIER_CMD_REGISTER_*` command that
    // made it.
    let membarrier = images.tc.membarrier_registration_mask.unwrap_or(0);
    for bit in (0..32).filter(|b| membarrier & (1 << b) != 0) {
        r.call(
            "register for membarrier",
            1 << bit,
            libc::SYS_membarrier,
            &[1 << bit, 0, 0],
        )?;
    }
    if let Some(t) = &images.tc.timers {
        itimer(&mut c, libc::ITIMER_REAL as u64, &t.real);
        itimer(&mut c, libc::ITIMER_VIRTUAL as u64, &t.virt);
        itimer(&mut c, libc::ITIMER_PROF as u64, &t.prof);
    }
    c.run(r)?;
    rseq_cs(r, task, &images.thread_core)?;
    let private = images
        .thread_core
        .signals_p
        .iter()
        .flat_map(|q| q.signals.iter());
    queue_signals(r, private, true)?;
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
