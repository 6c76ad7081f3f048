//! The page pipes' side of [`PageXfer`]: a batch cut into sets of pipes,
//! one set filled by the task while the engine drains the one before, and
//! a task's last set handed to the drainer thread.

use super::{Dest, PageXfer, PageXferError};
use crate::mem::page_pipe::{PagePipe, SET_PIPES};

impl PageXfer<'_, '_, '_> {
    /// Moves a batch through the page pipes: the task fills one set of
    /// pipes (one trap) while the engine drains the set filled before, so
    /// the task's `vmsplice`s overlap the engine's `splice`s.
    /// With `last`, the final set may go to the drainer undrained.
    pub(super) fn flush_pipes(
        &mut self,
        pipe: &PagePipe<'_, '_>,
        mut todo: Vec<(u64, u64)>,
        mut todo_flags: Vec<u32>,
        last: bool,
    ) -> Result<(), PageXferError> {
        let mut filled: Option<Filled> = None;
        let mut set = 0;
        while !todo.is_empty() {
            let (cap, per) = (pipe.capacity(), pipe.max_iovs());
            let total: u64 = todo.iter().map(|i| i.1).sum();
            let want = (total as usize)
                .div_ceil(cap)
                .max(todo.len().div_ceil(per))
                .min(SET_PIPES);
            let mut first = set * SET_PIPES;
            let mut have = pipe.ensure(first + want)?;
            if have <= first {
                // No second set (descriptor limits): one set, no overlap.
                if let Some(mut f) = filled.take() {
                    self.drain_filled(pipe, &mut f, true)?;
                }
                first = 0;
                have = pipe.count();
            }
            let pipes = (have - first).min(SET_PIPES);
            // Before a hand-off, the first fill takes what does not make a
            // whole set, so that the set handed off at the end is full.
            let set_bytes = (cap * pipes) as u64;
            let head = (last && filled.is_none() && self.drainer.is_some() && total > set_bytes)
                .then_some(total % set_bytes)
                .filter(|&rest| rest > 0);
            let (chunks, covered) = match head {
                Some(bytes) => {
                    let (iovs, flags) = prefix(&todo, &todo_flags, bytes);
                    split_chunks(&iovs, &flags, pipes, cap, per)
                }
                None => split_chunks(&todo, &todo_flags, pipes, cap, per),
            };
            let refs: Vec<&[(u64, u64)]> = chunks.iter().map(|c| &c.0[..]).collect();
            let running = pipe.fill_start(first, &refs)?;
            self.stats.fills += 1;
            let drained = match filled.as_mut() {
                Some(f) => self.drain_filled(pipe, f, false),
                None => Ok(true),
            };
            // Wait for the task before anything else, even after a failure.
            let got = running.finish();
            let drained = drained?;
            let got = got?;
            if let Some(mut f) = filled.take() {
                if !drained {
                    self.drain_filled(pipe, &mut f, true)?;
                }
            }
            let before = todo.len();
            consume(&mut todo, covered);
            todo_flags.drain(..before - todo.len());
            filled = Some(Filled {
                first,
                chunks,
                got,
                next: 0,
                rest: None,
            });
            set = if first == 0 { 1 } else { 0 };
        }
        if let Some(mut f) = filled {
            if !(last && self.hand_off(pipe, &f)?) {
                self.drain_filled(pipe, &mut f, true)?;
            }
        }
        Ok(())
    }

    /// Gives a filled set of pipes to the drainer, if there is one, the
    /// image is local and every pipe got its whole chunk; returns whether
    /// it did.
    fn hand_off(&mut self, pipe: &PagePipe<'_, '_>, f: &Filled) -> Result<bool, PageXferError> {
        let Some(drainer) = self.drainer else {
            return Ok(false);
        };
        let Dest::Local {
            pages, pages_path, ..
        } = &self.dest
        else {
            return Ok(false);
        };
        let whole = f
            .chunks
            .iter()
            .zip(&f.got)
            .all(|(c, got)| c.0.iter().map(|i| i.1 as usize).sum::<usize>() == *got);
        if !whole || f.next != 0 {
            return Ok(false);
        }
        let write = |source| PageXferError::Write {
            path: pages_path.clone(),
            source,
        };
        let mut pipes = Vec::with_capacity(f.chunks.len());
        for (i, got) in f.got.iter().enumerate() {
            let read = pipe.read_end(f.first + i).try_clone().map_err(write)?;
            pipes.push((read, *got));
        }
        let file = pages.try_clone().map_err(write)?;
        drainer.hand_off(pipes, file, pages_path.clone())?;
        Ok(true)
    }

    /// Drains a filled set of pipes in file order. A short `vmsplice` left
    /// part of a chunk in the task: it is put through the set's first pipe
    /// (already drained) when `refill` allows injections; otherwise this
    /// stops there and returns `false`, to be called again with `refill`.
    fn drain_filled(
        &mut self,
        pipe: &PagePipe<'_, '_>,
        f: &mut Filled,
        refill: bool,
    ) -> Result<bool, PageXferError> {
        loop {
            if let Some((rest, rest_flags)) = f.rest.take() {
                if !refill {
                    f.rest = Some((rest, rest_flags));
                    return Ok(false);
                }
                pipe.ensure(f.first + 1)?;
                let n = pipe.fill_start(f.first, &[&rest])?.finish()?[0];
                self.stats.fills += 1;
                if n == 0 {
                    return Err(PageXferError::ShortSplice {
                        pid: pipe.pid(),
                        got: 0,
                        want: rest.iter().map(|i| i.1 as usize).sum(),
                    });
                }
                self.drain_pieces(pipe, f.first, &rest, &rest_flags, n)?;
                f.rest = leftover(&rest, &rest_flags, n);
                continue;
            }
            let Some((iovs, flags)) = f.chunks.get(f.next) else {
                return Ok(true);
            };
            let (iovs, flags) = (iovs.clone(), flags.clone());
            let n = f.got[f.next];
            self.drain_pieces(pipe, f.first + f.next, &iovs, &flags, n)?;
            f.next += 1;
            f.rest = leftover(&iovs, &flags, n);
        }
    }
}

/// One pipe's share of a batch: its iovecs and their flags.
type Chunk = (Vec<(u64, u64)>, Vec<u32>);

/// Sets of pipes (of [`SET_PIPES`] each) one flush of a page pipe moves.
pub(super) const SETS_PER_FLUSH: usize = 8;

/// A set of pipes the task has filled, drained chunk by chunk.
struct Filled {
    /// Index of the set's first pipe.
    first: usize,
    /// What went into each pipe.
    chunks: Vec<Chunk>,
    /// Bytes each pipe got.
    got: Vec<usize>,
    /// The next chunk to drain.
    next: usize,
    /// The part of a drained chunk its pipe did not get.
    rest: Option<Chunk>,
}

/// What remains of a chunk after its first `n` bytes.
fn leftover(iovs: &[(u64, u64)], flags: &[u32], n: usize) -> Option<Chunk> {
    let mut rest = iovs.to_vec();
    consume(&mut rest, n as u64);
    (!rest.is_empty()).then(|| (rest.clone(), flags[flags.len() - rest.len()..].to_vec()))
}

/// Cuts the head of `iovs` (flags alongside) into at most `pipes` chunks of
/// at most `cap` bytes and `per` iovecs each; returns them and the bytes
/// they cover.
fn split_chunks(
    iovs: &[(u64, u64)],
    flags: &[u32],
    pipes: usize,
    cap: usize,
    per: usize,
) -> (Vec<Chunk>, u64) {
    let mut chunks: Vec<Chunk> = Vec::with_capacity(pipes);
    let mut covered = 0u64;
    let mut bytes = 0usize;
    'iovs: for (&(addr, len), &f) in iovs.iter().zip(flags) {
        let (mut addr, mut len) = (addr, len);
        while len > 0 {
            let full = chunks
                .last()
                .is_none_or(|c| bytes == cap || c.0.len() == per);
            if full {
                if chunks.len() == pipes {
                    break 'iovs;
                }
                chunks.push((Vec::new(), Vec::new()));
                bytes = 0;
            }
            let take = len.min((cap - bytes) as u64);
            let chunk = chunks.last_mut().expect("a chunk");
            chunk.0.push((addr, take));
            chunk.1.push(f);
            bytes += take as usize;
            covered += take;
            addr += take;
            len -= take;
        }
    }
    (chunks, covered)
}

/// The first `n` bytes of an iovec list, with their flags.
fn prefix(iovs: &[(u64, u64)], flags: &[u32], mut n: u64) -> (Vec<(u64, u64)>, Vec<u32>) {
    let mut out = (Vec::new(), Vec::new());
    for (&(addr, len), &f) in iovs.iter().zip(flags) {
        if n == 0 {
            break;
        }
        let take = len.min(n);
        out.0.push((addr, take));
        out.1.push(f);
        n -= take;
    }
    out
}

/// Drops the first `n` bytes of an iovec list.
fn consume(iovs: &mut Vec<(u64, u64)>, mut n: u64) {
    let mut whole = 0;
    for iov in iovs.iter_mut() {
        if n >= iov.1 {
            n -= iov.1;
            whole += 1;
        } else {
            iov.0 += n;
            iov.1 -= n;
            break;
        }
    }
    iovs.drain(..whole);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_bytes_iovecs_and_pipes() {
        let iovs = [(0x10000, 0x3000), (0x20000, 0x1000), (0x30000, 0x1000)];
        let flags = [1, 2, 3];
        let (chunks, covered) = split_chunks(&iovs, &flags, 2, 0x2000, 8);
        assert_eq!(covered, 0x4000);
        assert_eq!(chunks[0].0, vec![(0x10000, 0x2000)]);
        assert_eq!(chunks[1].0, vec![(0x12000, 0x1000), (0x20000, 0x1000)]);
        assert_eq!(chunks[1].1, vec![1, 2]);
        let (chunks, covered) = split_chunks(&iovs, &flags, 3, 0x10000, 1);
        assert_eq!(covered, 0x5000);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2], (vec![(0x30000, 0x1000)], vec![3]));
    }

    #[test]
    fn prefix_cuts_inside_an_iovec() {
        let v = [(0x1000, 0x2000), (0x8000, 0x1000)];
        assert_eq!(
            prefix(&v, &[1, 2], 0x1000),
            (vec![(0x1000, 0x1000)], vec![1])
        );
        assert_eq!(
            prefix(&v, &[1, 2], 0x2800),
            (vec![(0x1000, 0x2000), (0x8000, 0x800)], vec![1, 2])
        );
        assert_eq!(prefix(&v, &[1, 2], 0x9000).0, v.to_vec());
    }

    #[test]
    fn consume_partial_iovecs() {
        let mut v = vec![(0x1000, 0x2000), (0x8000, 0x1000)];
        consume(&mut v, 0x1000);
        assert_eq!(v, vec![(0x2000, 0x1000), (0x8000, 0x1000)]);
        consume(&mut v, 0x1000);
        assert_eq!(v, vec![(0x8000, 0x1000)]);
        consume(&mut v, 0x1000);
        assert!(v.is_empty());
    }
}
