//! Seccomp state of the dumped threads: `thread_core.seccomp_mode` /
//! `seccomp_filter` and the shared `seccomp.img` (CRIU's `criu/seccomp.c`:
//! `collect_filter`, `try_use_tsync`, `dump_seccomp_filters`).
//!
//! Each thread in filter mode has a chain of BPF programs, read with
//! `PTRACE_SECCOMP_GET_FILTER` (index 0 is the first installed) and their
//! flags with `PTRACE_SECCOMP_GET_METADATA`. In `seccomp.img` a chain is
//! stored newest first, each older program naming the one stored just
//! before it as `prev`; the thread points at its oldest program, and a
//! restore installs from there following `prev`. When every thread of a
//! process has the same chain, only the leader keeps it, with
//! `SECCOMP_FILTER_FLAG_TSYNC` on each program, and the other threads are
//! stored without seccomp: the restore then gives the chain to all of them
//! at once, as CRIU does.
//!
//! As in CRIU, the chains of the whole tree are collected right after the
//! freeze, before any task is dumped, and numbered in ascending host tid
//! order; `seccomp.img` is written first.
//!
//! # References
//!
//! - [seccomp(2)](https://man7.org/linux/man-pages/man2/seccomp.2.html),
//!   [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html)
//!   (`PTRACE_SECCOMP_GET_FILTER`, `PTRACE_SECCOMP_GET_METADATA`)

use std::collections::HashMap;

use criu_proto::images::{SeccompEntry, SeccompFilter};
use nix::errno::Errno;

use crate::pstree::RealPid;
use crate::sys::ptrace::{seccomp_filter, seccomp_metadata};

/// `SECCOMP_MODE_FILTER`.
pub const SECCOMP_MODE_FILTER: u32 = 2;
/// `SECCOMP_FILTER_FLAG_TSYNC`.
pub const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;

/// A filter chain could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A ptrace query failed.
    #[error("thread {tid}: cannot read seccomp filter {index}")]
    Ptrace {
        /// The thread.
        tid: RealPid,
        /// Filter index (0: the first installed).
        index: usize,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// What a thread's `thread_core` says about seccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadSeccomp {
    /// `seccomp_mode` (absent when disabled).
    pub mode: Option<i32>,
    /// `seccomp_filter`: index of its oldest program in `seccomp.img`.
    pub filter: Option<u32>,
}

/// One program of a chain: instructions and flags.
type Program = (Vec<u8>, u32);

/// The programs of every dumped thread, in `seccomp.img` order, and what
/// each thread's core says.
#[derive(Debug, Default)]
pub struct SeccompDump {
    filters: Vec<SeccompFilter>,
    threads: HashMap<RealPid, ThreadSeccomp>,
}

/// The chain of `tid`, first installed first.
fn chain(tid: RealPid) -> Result<Vec<Program>, SeccompError> {
    let mut out = Vec::new();
    let mut with_meta = true;
    for index in 0.. {
        let err = |source| SeccompError::Ptrace { tid, index, source };
        let bytes = match seccomp_filter(tid.as_nix(), index) {
            Ok(b) => b,
            Err(Errno::ENOENT) => break,
            Err(e) => return Err(err(e)),
        };
        let mut flags = 0;
        if with_meta {
            match seccomp_metadata(tid.as_nix(), index) {
                Ok(f) => flags = u32::try_from(f).unwrap_or(0),
                // Kernels without the request.
                Err(Errno::EIO) => with_meta = false,
                Err(e) => return Err(err(e)),
            }
        }
        out.push((bytes, flags));
    }
    Ok(out)
}

/// Applies the TSYNC rule to one process's `(tid, mode, chain)`s, leader
/// first: when every thread has the leader's chain, only the leader keeps
/// it, flagged `SECCOMP_FILTER_FLAG_TSYNC`.
fn share_chains(threads: &mut [(RealPid, u32, Vec<Program>)]) {
    let Some((first, rest)) = threads.split_first_mut() else {
        return;
    };
    let same =
        first.1 == SECCOMP_MODE_FILTER && rest.iter().all(|t| t.1 == first.1 && t.2 == first.2);
    if !same {
        return;
    }
    for p in &mut first.2 {
        p.1 |= SECCOMP_FILTER_FLAG_TSYNC;
    }
    for t in rest {
        t.1 = 0;
        t.2.clear();
    }
}

impl SeccompDump {
    /// Reads the chains of every thread of the frozen tree: `processes`
    /// holds each process's `(tid, mode)`s, leader first (mode as
    /// `/proc/<tid>/status` says).
    pub fn collect(processes: &[Vec<(RealPid, u32)>]) -> Result<SeccompDump, SeccompError> {
        let mut all = Vec::new();
        for threads in processes {
            let mut these = Vec::with_capacity(threads.len());
            for &(tid, mode) in threads {
                let programs = if mode == SECCOMP_MODE_FILTER {
                    chain(tid)?
                } else {
                    Vec::new()
                };
                these.push((tid, mode, programs));
            }
            share_chains(&mut these);
            all.extend(these);
        }
        Ok(SeccompDump::number(all))
    }

    /// Numbers the programs in ascending tid order.
    fn number(mut all: Vec<(RealPid, u32, Vec<Program>)>) -> SeccompDump {
        all.sort_by_key(|t| t.0 .0);
        let mut d = SeccompDump::default();
        for (tid, mode, programs) in all {
            if mode == 0 {
                continue;
            }
            let filter = (mode == SECCOMP_MODE_FILTER && !programs.is_empty())
                .then(|| d.push_chain(&programs));
            d.threads.insert(
                tid,
                ThreadSeccomp {
                    mode: Some(mode as i32),
                    filter,
                },
            );
        }
        d
    }

    /// What the core of thread `tid` says.
    pub fn thread(&self, tid: RealPid) -> ThreadSeccomp {
        self.threads.get(&tid).copied().unwrap_or_default()
    }

    /// Stores `chain` newest first; returns the index of its oldest program.
    fn push_chain(&mut self, chain: &[Program]) -> u32 {
        for (n, (bytes, flags)) in chain.iter().rev().enumerate() {
            let at = self.filters.len() as u32;
            self.filters.push(SeccompFilter {
                filter: bytes.clone(),
                prev: (n > 0).then(|| at - 1),
                flags: Some(*flags),
            });
        }
        self.filters.len() as u32 - 1
    }

    /// The `seccomp.img` entry.
    pub fn entry(&self) -> SeccompEntry {
        SeccompEntry {
            seccomp_filters: self.filters.clone(),
        }
    }
}

/// The programs of a thread whose core points at `index`, in install order
/// (following `prev` from the oldest); `None` when the indices are broken.
pub fn install_order(entry: &SeccompEntry, index: u32) -> Option<Vec<&SeccompFilter>> {
    let all = &entry.seccomp_filters;
    let mut out = Vec::new();
    let mut at = index;
    loop {
        let f = all.get(at as usize)?;
        if out.len() >= all.len() {
            return None;
        }
        out.push(f);
        match f.prev {
            Some(p) => at = p,
            None => return Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(b: u8) -> Program {
        (vec![b; 8], 0)
    }

    #[test]
    fn chain_stored_newest_first_and_read_back_oldest_first() {
        let mut d = SeccompDump::default();
        let first = d.push_chain(&[prog(1), prog(2), prog(3)]);
        let second = d.push_chain(&[prog(9)]);
        let e = d.entry();
        assert_eq!(e.seccomp_filters.len(), 4);
        assert_eq!(first, 2);
        assert_eq!(e.seccomp_filters[0].filter, vec![3; 8], "newest first");
        assert_eq!(e.seccomp_filters[0].prev, None);
        assert_eq!(e.seccomp_filters[2].prev, Some(1));
        assert_eq!(second, 3);
        assert_eq!(e.seccomp_filters[3].prev, None);
        let order: Vec<u8> = install_order(&e, first)
            .unwrap()
            .iter()
            .map(|f| f.filter[0])
            .collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert_eq!(install_order(&e, 7), None);
    }

    #[test]
    fn identical_chains_go_to_the_leader_with_tsync() {
        let (a, b) = (RealPid(20), RealPid(10));
        let mut these = vec![
            (a, 2, vec![prog(1), prog(2)]),
            (b, 2, vec![prog(1), prog(2)]),
        ];
        share_chains(&mut these);
        assert!(these[0].2.iter().all(|p| p.1 == SECCOMP_FILTER_FLAG_TSYNC));
        assert_eq!((these[1].1, these[1].2.len()), (0, 0));
        let d = SeccompDump::number(these);
        assert_eq!(d.thread(b), ThreadSeccomp::default());
        assert_eq!(
            d.thread(a),
            ThreadSeccomp {
                mode: Some(2),
                filter: Some(1)
            }
        );
    }

    #[test]
    fn numbered_by_tid_and_differing_chains_kept() {
        let (leader, thread, other) = (RealPid(30), RealPid(31), RealPid(5));
        let mut these = vec![
            (leader, 2, vec![prog(1), prog(2)]),
            (thread, 2, vec![prog(1)]),
        ];
        share_chains(&mut these);
        assert_eq!(these[0].2[0].1, 0, "no TSYNC");
        these.push((other, 1, Vec::new()));
        let d = SeccompDump::number(these);
        assert_eq!(d.entry().seccomp_filters.len(), 3);
        assert_eq!(d.thread(other).mode, Some(1));
        assert_eq!(d.thread(leader).filter, Some(1), "lower tid first");
        assert_eq!(d.thread(thread).filter, Some(2));
    }
}
