//! `core-<pid>.img` of a single-threaded task (CRIU's `criu/cr-dump.c`
//! `dump_task_core_all`, `dump_thread_core`, and the parasite's
//! `dump_misc`, `dump_thread`).
//!
//! What ptrace gives (registers, XSAVE state, TLS slots, blocked signals,
//! pending signals, rseq) is captured right after the freeze, before the
//! injection stub touches the registers ([`Frozen::capture`]); what only
//! the task can say (robust list, clear-tid address, signal actions,
//! alternate stack, parent-death signal, interval timers, rlimits,
//! securebits, child subreaper, membarrier registrations) is asked with
//! injected syscalls writing into the injection scratch ([`Queried::ask`]);
//! the rest comes from `/proc`.

pub mod posix_timers;
pub mod regs;
pub mod rseq;
pub mod seccomp;
pub mod thread;

use std::mem::MaybeUninit;

use criu_proto::images::{
    CoreEntry, ItimerEntry, RlimitEntry, RseqEntry, SaEntry, SiginfoEntry, SignalQueueEntry,
    TaskCoreEntry, TaskRlimitsEntry, TaskTimersEntry, ThreadCoreEntry, ThreadInfoX86,
    ThreadSasEntry, UserDescT, UserX86FpregsEntry, UserX86RegsEntry,
};

use crate::arch::nr;
use crate::inject::batch::{BatchCallError, QueryBatch};
use crate::inject::{InjectError, Injection};
use crate::proc::stat::ProcStat;
use crate::proc::status::ProcStatus;
use crate::pstree::RealPid;
use crate::seize::{SeizeError, SeizedTask};
use crate::sys::ptrace::peek_siginfo;
use crate::sys::task_query::get_thread_area;

/// `CORE_ENTRY__MARCH__X86_64`.
const MARCH_X86_64: i32 = 1;
/// Number of resource limits CRIU stores.
const RLIM_NLIMITS: u32 = 16;
/// `TASK_ALIVE` / `TASK_STOPPED` of `tc.task_state`.
const TASK_ALIVE: u32 = 1;
const TASK_STOPPED: u32 = 3;
/// `PR_GET_CHILD_SUBREAPER`, `PR_GET_TID_ADDRESS`, `PR_GET_SECUREBITS`...
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_TID_ADDRESS: u64 = 40;
/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3).
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

/// Something of the task's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A ptrace query failed.
    #[error(transparent)]
    Seize(#[from] SeizeError),
    /// A raw ptrace query failed.
    #[error("task {pid}: {what} failed")]
    Ptrace {
        /// The task.
        pid: RealPid,
        /// Which query.
        what: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// An injected query failed.
    #[error("task {pid}: injected {what} failed")]
    Inject {
        /// The task.
        pid: RealPid,
        /// Which query.
        what: &'static str,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// The POSIX timers could not be described.
    #[error(transparent)]
    PosixTimers(#[from] posix_timers::PosixTimerError),
    /// A seccomp filter chain could not be read.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The thread is in an rseq critical section of an unknown layout.
    #[error("task {pid}: rseq critical section of unsupported ABI version {version}")]
    RseqVersion {
        /// The thread.
        pid: RealPid,
        /// The `rseq_cs` version.
        version: u32,
    },
    /// The task runs 32-bit code.
    #[error("task {pid} runs in 32-bit compatibility mode, which is not supported yet")]
    Compat {
        /// The task.
        pid: RealPid,
    },
}

/// What ptrace says about the task right after the freeze.
pub struct Frozen {
    /// General registers, restart-adjusted as CRIU saves them.
    pub gpregs: UserX86RegsEntry,
    /// FPU/XSAVE state.
    pub fpregs: UserX86FpregsEntry,
    /// Stack pointer (for the pagemap's lazy flags).
    pub sp: u64,
    /// TLS slots.
    pub tls: Vec<UserDescT>,
    /// Blocked signals.
    pub blk_sigset: u64,
    /// Pending signals: (shared, private).
    pub signals: (Vec<SiginfoEntry>, Vec<SiginfoEntry>),
    /// rseq registration, when the kernel reports it.
    pub rseq: Option<RseqEntry>,
}

fn pending(pid: RealPid, shared: bool) -> Result<Vec<SiginfoEntry>, CoreError> {
    let mut out = Vec::new();
    let mut buf = [MaybeUninit::<libc::siginfo_t>::uninit(); 32];
    loop {
        let n =
            peek_siginfo(pid.as_nix(), out.len() as u64, shared, &mut buf).map_err(|source| {
                CoreError::Ptrace {
                    pid,
                    what: "PTRACE_PEEKSIGINFO",
                    source,
                }
            })?;
        if n == 0 {
            return Ok(out);
        }
        for si in &buf[..n] {
            out.push(SiginfoEntry {
                siginfo: crate::sys::task_query::siginfo_bytes(si).to_vec(),
            });
        }
    }
}

impl Frozen {
    /// Reads everything ptrace can tell about the (stopped) task.
    pub fn capture(task: &SeizedTask) -> Result<Frozen, CoreError> {
        let pid = task.pid();
        let raw = task.regs()?;
        if raw.cs != 0x33 {
            return Err(CoreError::Compat { pid });
        }
        let r = crate::arch::x86_64::restart_adjusted(&raw);
        let xstate = task.xstate()?;
        let mut tls = Vec::with_capacity(regs::GDT_ENTRY_TLS_NUM as usize);
        for i in 0..regs::GDT_ENTRY_TLS_NUM {
            let d =
                get_thread_area(pid.as_nix(), regs::GDT_ENTRY_TLS_MIN + i).map_err(|source| {
                    CoreError::Ptrace {
                        pid,
                        what: "PTRACE_GET_THREAD_AREA",
                        source,
                    }
                })?;
            tls.push(regs::tls(&d));
        }
        let (rseq, abort_ip) = rseq::capture(task, r.rip)?;
        let mut gpregs = regs::gpregs(&r);
        if let Some(ip) = abort_ip {
            // The live thread goes there too (for `leave_running` or a
            // failed dump): the kernel forgets the section once anything
            // is injected.
            tracing::warn!(%pid, ip, "thread stopped in an rseq critical section goes to its abort handler");
            gpregs.ip = ip;
            task.set_regs(&crate::arch::UserRegs { rip: ip, ..raw })?;
        }
        Ok(Frozen {
            gpregs,
            fpregs: regs::fpregs(&xstate, regs::FpuFeatures::host()),
            sp: r.rsp,
            tls,
            blk_sigset: task.sigmask()?,
            signals: (pending(pid, true)?, pending(pid, false)?),
            rseq,
        })
    }
}

/// What the task itself reports through injected syscalls.
pub struct Queried {
    /// `set_tid_address` value.
    pub clear_tid_addr: u64,
    /// Robust futex list head and length.
    pub futex_rla: (u64, u32),
    /// The 62 signal actions.
    pub sigactions: Vec<SaEntry>,
    /// Alternate signal stack.
    pub sas: ThreadSasEntry,
    /// Parent-death signal.
    pub pdeath_sig: u32,
    /// `real`, `virt`, `prof` interval timers.
    pub itimers: [ItimerEntry; 3],
    /// The 16 resource limits.
    pub rlimits: Vec<RlimitEntry>,
    /// Securebits.
    pub secbits: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: i32,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: bool,
    /// Current program break.
    pub brk: u64,
    /// membarrier registrations (0 when none or unsupported).
    pub membarrier: u32,
}

impl From<BatchCallError> for CoreError {
    fn from(e: BatchCallError) -> Self {
        CoreError::Inject {
            pid: e.pid,
            what: e.what,
            source: e.source,
        }
    }
}

impl Queried {
    /// Runs the injected queries, all in one batch (one trap).
    pub fn ask(inj: &Injection<'_>, _pid: RealPid) -> Result<Queried, CoreError> {
        let mut b = QueryBatch::new(inj);
        let thread_slots = thread::ThreadQueried::push(&mut b);
        let (pdeath_off, pdeath_at) = b.out(8);
        let pdeath = b.push(
            "prctl(PR_GET_PDEATHSIG)",
            nr::PRCTL,
            &[PR_GET_PDEATHSIG, pdeath_at],
        );
        let itimer_calls: Vec<(usize, usize)> = (0..3u64)
            .map(|which| {
                let (off, at) = b.out(32);
                (b.push("getitimer", libc::SYS_getitimer, &[which, at]), off)
            })
            .collect();
        let rlimit_calls: Vec<(usize, usize)> = (0..RLIM_NLIMITS)
            .map(|res| {
                let (off, at) = b.out(16);
                (
                    b.push("prlimit64", libc::SYS_prlimit64, &[0, res.into(), 0, at]),
                    off,
                )
            })
            .collect();
        let secbits = b.push("prctl(PR_GET_SECUREBITS)", nr::PRCTL, &[PR_GET_SECUREBITS]);
        let (subreaper_off, subreaper_at) = b.out(8);
        let subreaper = b.push(
            "prctl(PR_GET_CHILD_SUBREAPER)",
            nr::PRCTL,
            &[PR_GET_CHILD_SUBREAPER, subreaper_at],
        );
        let dumpable = b.push("prctl(PR_GET_DUMPABLE)", nr::PRCTL, &[PR_GET_DUMPABLE]);
        let thp = b.push(
            "prctl(PR_GET_THP_DISABLE)",
            nr::PRCTL,
            &[PR_GET_THP_DISABLE],
        );
        let brk = b.push("brk", libc::SYS_brk, &[0]);
        let membarrier = b.push(
            "membarrier",
            libc::SYS_membarrier,
            &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
        );
        let sigact_calls: Vec<(usize, usize)> = crate::sigact::dumped_signals()
            .map(|sig| {
                let (off, at) = b.out(crate::sigact::RAW_LEN);
                (
                    b.push("rt_sigaction", nr::RT_SIGACTION, &[sig.into(), 0, at, 8]),
                    off,
                )
            })
            .collect();

        let a = b.run()?;
        let own = thread::ThreadQueried::read(&thread_slots, &a)?;
        for i in [pdeath, subreaper] {
            a.ok(i)?;
        }
        let [pdeath] = a.words::<1>(pdeath_off);
        let mut itimers = [ItimerEntry::default(); 3];
        for (t, &(i, off)) in itimers.iter_mut().zip(&itimer_calls) {
            a.ok(i)?;
            let [isec, iusec, vsec, vusec] = a.words::<4>(off);
            *t = ItimerEntry {
                isec,
                iusec,
                vsec,
                vusec,
            };
        }
        let mut rlimits = Vec::with_capacity(RLIM_NLIMITS as usize);
        for &(i, off) in &rlimit_calls {
            a.ok(i)?;
            let [cur, max] = a.words::<2>(off);
            rlimits.push(RlimitEntry { cur, max });
        }
        let [subreaper] = a.words::<1>(subreaper_off);
        let mut sigactions = Vec::with_capacity(sigact_calls.len());
        for &(i, off) in &sigact_calls {
            a.ok(i)?;
            sigactions.push(crate::sigact::decode(&a.bytes(off)));
        }
        Ok(Queried {
            clear_tid_addr: own.clear_tid_addr,
            futex_rla: own.futex_rla,
            sigactions,
            sas: own.sas,
            pdeath_sig: pdeath as u32,
            itimers,
            rlimits,
            secbits: a.ok(secbits)? as u32,
            child_subreaper: subreaper as u32 != 0,
            dumpable: a.ok(dumpable)? as i32,
            thp_disabled: a.ok(thp)? != 0,
            brk: a.ok(brk)?,
            membarrier: u32::try_from(a.raw(membarrier)).unwrap_or(0),
        })
    }
}

/// Everything else, from `/proc`.
pub struct FromProc<'a> {
    /// `/proc/<pid>/stat`.
    pub stat: &'a ProcStat,
    /// `/proc/<pid>/status`.
    pub status: &'a ProcStatus,
    /// `/proc/<pid>/personality` as CRIU stores it.
    pub personality: u32,
    /// `/proc/<pid>/loginuid`.
    pub loginuid: Option<u32>,
    /// `/proc/<pid>/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// Whether the task was stopped (SIGSTOP) before we seized it, and by what.
    pub stop_signo: Option<u32>,
}

/// Reads the `/proc` bits of [`FromProc`] that are not `stat`/`status`:
/// (personality, loginuid, oom_score_adj).
pub fn proc_extras(pid: i32) -> (u32, Option<u32>, Option<i32>) {
    let read = |n: &str| crate::proc::read(pid, n).ok();
    // CRIU reads the hexadecimal text as a decimal number; restore ignores it.
    let personality = read("personality")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let loginuid = read("loginuid").and_then(|s| s.trim().parse().ok());
    let oom = read("oom_score_adj").and_then(|s| s.trim().parse().ok());
    (personality, loginuid, oom)
}

/// Assembles the leader's `core_entry`.
pub fn entry(
    f: Frozen,
    q: &Queried,
    p: &FromProc<'_>,
    secbits_creds: criu_proto::images::CredsEntry,
) -> CoreEntry {
    let comm = p.stat.comm.clone();
    let (policy, prio) = (p.stat.policy, p.stat.rt_priority);
    let rt = policy == libc::SCHED_FIFO as u32 || policy == libc::SCHED_RR as u32;
    let seccomp = p.status.seccomp;
    CoreEntry {
        mtype: MARCH_X86_64,
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr: q.clear_tid_addr,
            gpregs: f.gpregs,
            fpregs: f.fpregs,
            tls: f.tls,
        }),
        tc: Some(TaskCoreEntry {
            task_state: if p.stop_signo.is_some() {
                TASK_STOPPED
            } else {
                TASK_ALIVE
            },
            exit_code: 0,
            personality: p.personality,
            flags: p.stat.flags,
            blk_sigset: f.blk_sigset,
            comm: comm.clone(),
            timers: Some(TaskTimersEntry {
                real: q.itimers[0],
                virt: q.itimers[1],
                prof: q.itimers[2],
                posix: Vec::new(),
            }),
            rlimits: Some(TaskRlimitsEntry {
                rlimits: q.rlimits.clone(),
            }),
            cg_set: None,
            signals_s: Some(SignalQueueEntry {
                signals: f.signals.0,
            }),
            old_seccomp_mode: None,
            old_seccomp_filter: None,
            loginuid: p.loginuid,
            oom_score_adj: p.oom_score_adj,
            sigactions: q.sigactions.clone(),
            child_subreaper: Some(q.child_subreaper),
            blk_sigset_extended: None,
            stop_signo: p.stop_signo,
            membarrier_registration_mask: (q.membarrier != 0).then_some(q.membarrier),
        }),
        thread_core: Some(ThreadCoreEntry {
            futex_rla: q.futex_rla.0,
            futex_rla_len: q.futex_rla.1,
            sched_nice: Some(p.stat.nice),
            sched_policy: Some(policy),
            sched_prio: rt.then_some(prio),
            blk_sigset: None,
            sas: Some(q.sas),
            pdeath_sig: (q.pdeath_sig != 0).then_some(q.pdeath_sig),
            signals_p: Some(SignalQueueEntry {
                signals: f.signals.1,
            }),
            creds: Some(secbits_creds),
            seccomp_mode: (seccomp != 0).then_some(seccomp as i32),
            seccomp_filter: None,
            comm: Some(comm),
            blk_sigset_extended: None,
            rseq_entry: f.rseq,
            cg_set: Some(1),
        }),
        ..Default::default()
    }
}
