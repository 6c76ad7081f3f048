//! `core-<tid>.img` of a thread other than the leader (CRIU's
//! `dump_task_thread` in `criu/cr-dump.c` and the parasite's `dump_thread`):
//! `mtype`, `thread_info` and `thread_core`, no `tc`. The blocked signals of
//! such a thread live in `thread_core.blk_sigset`.
//!
//! What only the thread itself can say (its clear-tid address and alternate
//! stack) is asked with syscalls injected into that thread, running from the
//! stub the leader's injection mapped in the shared address space.

use criu_proto::images::{
    CoreEntry, CredsEntry, SignalQueueEntry, ThreadCoreEntry, ThreadInfoX86, ThreadSasEntry,
};

use super::{CoreError, Frozen, MARCH_X86_64, PR_GET_TID_ADDRESS};
use crate::arch::nr;
use crate::inject::batch::{BatchAnswers, QueryBatch};
use crate::inject::Injection;
use crate::proc::stat::ProcStat;

/// What a thread reports about itself through injected syscalls.
#[derive(Debug, Clone, Copy)]
pub struct ThreadQueried {
    /// `set_tid_address` value.
    pub clear_tid_addr: u64,
    /// Robust futex list head and length.
    pub futex_rla: (u64, u32),
    /// Alternate signal stack.
    pub sas: ThreadSasEntry,
}

/// Where the per-thread queries sit in a batch ([`ThreadQueried::push`]).
pub(crate) struct ThreadSlots {
    calls: [usize; 3],
    tid_off: usize,
    rla_off: usize,
    sas_off: usize,
}

impl ThreadQueried {
    /// Runs the per-thread queries in the thread `inj` runs in (one batch).
    pub fn ask(inj: &Injection<'_>) -> Result<ThreadQueried, CoreError> {
        let mut b = QueryBatch::new(inj);
        let slots = Self::push(&mut b);
        let a = b.run()?;
        Self::read(&slots, &a)
    }

    /// Adds the per-thread queries to batch `b` (the leader's batch asks
    /// them along with the process-wide ones).
    pub(crate) fn push(b: &mut QueryBatch<'_, '_>) -> ThreadSlots {
        let (tid_off, tid_at) = b.out(8);
        let tid = b.push(
            "prctl(PR_GET_TID_ADDRESS)",
            nr::PRCTL,
            &[PR_GET_TID_ADDRESS, tid_at],
        );
        let (rla_off, rla_at) = b.out(16);
        let rla = b.push(
            "get_robust_list",
            libc::SYS_get_robust_list,
            &[0, rla_at, rla_at + 8],
        );
        let (sas_off, sas_at) = b.out(24);
        let sas = b.push("sigaltstack", nr::SIGALTSTACK, &[0, sas_at]);
        ThreadSlots {
            calls: [tid, rla, sas],
            tid_off,
            rla_off,
            sas_off,
        }
    }

    /// The answers to the queries [`ThreadQueried::push`] added.
    pub(crate) fn read(
        s: &ThreadSlots,
        a: &BatchAnswers<'_, '_>,
    ) -> Result<ThreadQueried, CoreError> {
        for i in s.calls {
            a.ok(i)?;
        }
        let [clear_tid_addr] = a.words::<1>(s.tid_off);
        let [head, len] = a.words::<2>(s.rla_off);
        let [ss_sp, ss_flags, ss_size] = a.words::<3>(s.sas_off);
        Ok(ThreadQueried {
            clear_tid_addr,
            futex_rla: (head, len as u32),
            sas: ThreadSasEntry {
                ss_sp,
                ss_flags: ss_flags as u32,
                ss_size,
            },
        })
    }
}

/// Assembles the core of a non-leader thread from its frozen state, its
/// answers, its `/proc/<pid>/task/<tid>/stat`, its seccomp mode and the
/// process credentials.
pub fn thread_entry(
    f: Frozen,
    q: &ThreadQueried,
    stat: &ProcStat,
    seccomp: u32,
    creds: CredsEntry,
) -> CoreEntry {
    let policy = stat.policy;
    let rt = policy == libc::SCHED_FIFO as u32 || policy == libc::SCHED_RR as u32;
    CoreEntry {
        mtype: MARCH_X86_64,
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr: q.clear_tid_addr,
            gpregs: f.gpregs,
            fpregs: f.fpregs,
            tls: f.tls,
        }),
        thread_core: Some(ThreadCoreEntry {
            futex_rla: q.futex_rla.0,
            futex_rla_len: q.futex_rla.1,
            sched_nice: Some(stat.nice),
            sched_policy: Some(policy),
            sched_prio: rt.then_some(stat.rt_priority),
            blk_sigset: Some(f.blk_sigset),
            sas: Some(q.sas),
            pdeath_sig: None,
            signals_p: Some(SignalQueueEntry {
                signals: f.signals.1,
            }),
            creds: Some(creds),
            seccomp_mode: (seccomp != 0).then_some(seccomp as i32),
            seccomp_filter: None,
            comm: Some(stat.comm.clone()),
            blk_sigset_extended: None,
            rseq_entry: f.rseq,
            cg_set: None,
        }),
        ..Default::default()
    }
}
