//! Queries run as one batch of injected syscalls: each call gets its own
//! output slot in the scratch area, the whole batch runs with a single trap
//! ([`Injection::syscall_batch`]), and the outputs are read back with one
//! memory read. CRIU gets the same effect from its parasite answering one
//! RPC command with many syscalls (`compel_rpc_call` / `parasite_dump_misc`).

use super::{InjectError, Injection};
use crate::pstree::RealPid;

/// A failed call of a batch, named by what it asked.
#[derive(Debug, thiserror::Error)]
#[error("task {pid}: {what} failed")]
pub struct BatchCallError {
    /// The task.
    pub pid: RealPid,
    /// What the call asked.
    pub what: &'static str,
    /// Why.
    #[source]
    pub source: InjectError,
}

/// Syscalls queued for one trap, with their output slots.
pub struct QueryBatch<'i, 't> {
    inj: &'i Injection<'t>,
    calls: Vec<(i64, [u64; 6], usize, &'static str)>,
    out_len: usize,
}

impl<'i, 't> QueryBatch<'i, 't> {
    /// An empty batch for `inj`.
    pub fn new(inj: &'i Injection<'t>) -> Self {
        QueryBatch {
            inj,
            calls: Vec::new(),
            out_len: 0,
        }
    }

    /// Reserves `len` bytes (rounded up to words) of output; returns their
    /// offset among the outputs and their address in the task.
    pub fn out(&mut self, len: usize) -> (usize, u64) {
        let off = self.out_len;
        self.out_len += len.div_ceil(8) * 8;
        (off, self.inj.scratch().0 + off as u64)
    }

    /// Queues syscall `nr` (at most six `args`); returns its index.
    pub fn push(&mut self, what: &'static str, nr: i64, args: &[u64]) -> usize {
        let mut a = [0u64; 6];
        let n = args.len().min(6);
        a[..n].copy_from_slice(&args[..n]);
        self.calls.push((nr, a, args.len(), what));
        self.calls.len() - 1
    }

    /// Runs the batch and reads the outputs back.
    pub fn run(self) -> Result<BatchAnswers<'i, 't>, BatchCallError> {
        let pid = self.inj.task().pid();
        let fail = |what, source| BatchCallError { pid, what, source };
        if self.out_len > Injection::BATCH_TABLE {
            return Err(fail(
                "batch outputs",
                InjectError::ScratchRange {
                    pid,
                    offset: 0,
                    len: self.out_len,
                },
            ));
        }
        let calls: Vec<(i64, &[u64])> = self
            .calls
            .iter()
            .map(|(nr, a, n, _)| (*nr, &a[..*n]))
            .collect();
        let rets = self
            .inj
            .syscall_batch(&calls)
            .map_err(|e| fail("injected batch", e))?;
        let mut out = vec![0u8; self.out_len];
        self.inj
            .read_scratch(0, &mut out)
            .map_err(|e| fail("batch outputs", e))?;
        Ok(BatchAnswers {
            inj: self.inj,
            calls: self.calls,
            rets,
            out,
        })
    }
}

/// The results and outputs of a [`QueryBatch`].
pub struct BatchAnswers<'i, 't> {
    inj: &'i Injection<'t>,
    calls: Vec<(i64, [u64; 6], usize, &'static str)>,
    rets: Vec<i64>,
    out: Vec<u8>,
}

impl BatchAnswers<'_, '_> {
    /// The raw result of call `i` (negative = `-errno`).
    pub fn raw(&self, i: usize) -> i64 {
        self.rets[i]
    }

    /// The result of call `i`, an error when negative.
    pub fn ok(&self, i: usize) -> Result<u64, BatchCallError> {
        let (nr, _, _, what) = self.calls[i];
        self.inj
            .result_ok(nr, self.rets[i])
            .map_err(|source| BatchCallError {
                pid: self.inj.task().pid(),
                what,
                source,
            })
    }

    /// `W` words of output at `off`.
    pub fn words<const W: usize>(&self, off: usize) -> [u64; W] {
        std::array::from_fn(|i| {
            let at = off + i * 8;
            u64::from_le_bytes(self.out[at..at + 8].try_into().expect("8 bytes"))
        })
    }

    /// `N` bytes of output at `off`.
    pub fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        self.out[off..off + N].try_into().expect("N bytes")
    }
}
