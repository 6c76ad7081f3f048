//! Memory several tasks share copy-on-write (CRIU's `premap_priv_vmas`,
//! `vma_inherited` and the page comparison of `restore_priv_vma_content`
//! in `criu/mem.c`).
//!
//! Tasks forked from one another share their private anonymous pages until
//! either writes them; a dump saves those pages once per task. Before the
//! tree is forked, the engine maps each private anonymous VMA that two or
//! more tasks have at the same place (same bounds and flags) at a free
//! address of its own and fills it with the pages of the first task having
//! it. Every task is a fork of the engine, so it inherits these copies
//! copy-on-write. Restoring a task then moves its copies to their dumped
//! addresses (`mremap`), drops the pages its images lack and writes only the
//! pages that differ from the copy; the others stay shared, as they were.
//! The comparison needs only the images, so a helper thread ([`Diffs`])
//! makes it for every task, in tree order, while the tracing thread
//! restores the tasks before.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use criu_proto::images::VmaEntry;
use nix::sys::mman::MapFlags;

use super::{free_gap, read_maps_of, RemoteCall};
use crate::arch::x86_64::nr;
use crate::restore::images::{TaskImages, VMA_ANON_PRIVATE, VMA_AREA_REGULAR};
use crate::restore::pstree::TreeImages;
use crate::sys::anon_map::AnonMap;
use crate::sys::file_map::FileMap;

/// `VMA_AREA_STACK` and `VMA_AREA_HEAP`: allowed besides regular private
/// anonymous memory.
const VMA_AREA_STACK: u32 = 0x2;
const VMA_AREA_HEAP: u32 = 0x20;
/// `MREMAP_MAYMOVE | MREMAP_FIXED`.
const MREMAP_MOVE_FIXED: u64 = 1 | 2;
/// Page size.
const PAGE: u64 = 4096;

/// Pages of a task's premapped VMAs that its copy lacks or holds
/// otherwise: `(addr, pages file, offset, len)` runs.
pub(crate) type Diff = Vec<(u64, usize, u64, u64)>;

/// Bounds and flags that identify one VMA across tasks.
type Key = (u64, u64, u32);

/// One VMA mapped in the engine before the fork.
#[derive(Debug)]
pub(crate) struct Area {
    /// Dumped bounds.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Where every task has its copy until it is moved.
    pub(crate) at: u64,
    /// Index into [`Premaps::sources`].
    source: usize,
}

/// The pages of one task that filled copies.
#[derive(Debug)]
struct Source {
    /// `(vaddr, len, file, offset)` runs, by address.
    runs: Vec<(u64, u64, usize, u64)>,
    maps: Vec<Option<FileMap>>,
}

/// The copies made before the fork, and the pages they hold.
#[derive(Debug, Default)]
pub(crate) struct Premaps {
    areas: HashMap<Key, Area>,
    sources: Vec<Source>,
    /// The engine's own copies, dropped once every task is forked.
    engine: Vec<AnonMap>,
}

fn key(vma: &VmaEntry) -> Key {
    (vma.start, vma.end, vma.flags)
}

/// Whether `vma` is plain private anonymous memory a copy can stand for.
fn eligible(vma: &VmaEntry) -> bool {
    let plain = VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_STACK | VMA_AREA_HEAP;
    let flags_ok = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u32;
    vma.status & VMA_AREA_REGULAR != 0
        && vma.status & VMA_ANON_PRIVATE != 0
        && vma.status & !plain == 0
        && vma.flags & !flags_ok == 0
        && vma.flags & libc::MAP_PRIVATE as u32 != 0
        && vma.start < vma.end
}

/// Whether `images` has a saved page in `start..end`.
fn has_pages(images: &TaskImages, start: u64, end: u64) -> bool {
    let segs = &images.pages.segs;
    let i = segs.partition_point(|s| s.vaddr + s.len <= start);
    segs.get(i).is_some_and(|s| s.vaddr < end)
}

impl Premaps {
    /// Maps and fills the copies for the live tasks of `tree`. Copies that
    /// cannot be made are left out (their tasks get their pages written
    /// whole).
    pub(crate) fn prepare(tree: &TreeImages) -> Premaps {
        let alive: Vec<&TaskImages> = tree.tasks.iter().filter_map(|t| t.alive()).collect();
        // For each key: how many tasks have it and the first one.
        let mut seen: HashMap<Key, (usize, usize)> = HashMap::new();
        for (i, images) in alive.iter().enumerate() {
            for vma in images.mm.vmas.iter().filter(|v| eligible(v)) {
                seen.entry(key(vma)).or_insert((0, i)).0 += 1;
            }
        }
        let mut wanted: Vec<(Key, usize)> = seen
            .into_iter()
            .filter(|&((s, e, _), (n, first))| n >= 2 && has_pages(alive[first], s, e))
            .map(|(k, (_, first))| (k, first))
            .collect();
        let mut out = Premaps::default();
        if wanted.is_empty() {
            return out;
        }
        wanted.sort_unstable();
        let total: u64 = wanted.iter().map(|((s, e, _), _)| e - s + PAGE).sum();
        let Ok(mine) = read_maps_of("self") else {
            return out;
        };
        let mut busy: Vec<(u64, u64)> = mine
            .iter()
            .map(|m| (m.start, m.end))
            .chain(
                alive
                    .iter()
                    .flat_map(|t| t.mm.vmas.iter().map(|v| (v.start, v.end))),
            )
            .collect();
        let Some(mut at) = free_gap(&mut busy, total) else {
            return out;
        };
        let mut source_of: HashMap<usize, usize> = HashMap::new();
        for ((start, end, flags), first) in wanted {
            let len = end - start;
            let source = match source_of.get(&first) {
                Some(&s) => s,
                None => match out.add_source(alive[first]) {
                    Some(s) => {
                        source_of.insert(first, s);
                        s
                    }
                    None => continue,
                },
            };
            let extra = MapFlags::from_bits_truncate((flags & !(libc::MAP_PRIVATE as u32)) as i32);
            let mut copy = match AnonMap::map_at(at, len as usize, extra) {
                Ok(m) => m,
                Err(errno) => {
                    tracing::debug!(%errno, start, "cannot premap a shared vma");
                    continue;
                }
            };
            let src = &out.sources[source];
            for &(vaddr, rlen, file, off) in src.runs_in(start, end) {
                // A run may go on into the neighbouring VMAs.
                let (s, e) = (vaddr.max(start), (vaddr + rlen).min(end));
                if let Some(m) = &src.maps[file] {
                    let off = (off + (s - vaddr)) as usize;
                    let n = (e - s) as usize;
                    copy.write((s - start) as usize, &m.as_slice()[off..off + n]);
                    m.release(off, n);
                }
            }
            out.engine.push(copy);
            out.areas.insert(
                (start, end, flags),
                Area {
                    start,
                    end,
                    at,
                    source,
                },
            );
            at += len + PAGE;
        }
        tracing::debug!(areas = out.areas.len(), "shared memory premapped");
        out
    }

    fn add_source(&mut self, images: &TaskImages) -> Option<usize> {
        let maps = match super::map_pages(images) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(err = %e, "cannot map pages to premap");
                return None;
            }
        };
        let runs = images
            .pages
            .segs
            .iter()
            .map(|s| (s.vaddr, s.len, s.file, s.offset))
            .collect();
        self.sources.push(Source { runs, maps });
        Some(self.sources.len() - 1)
    }

    /// Whether any copy was made.
    pub(crate) fn any(&self) -> bool {
        !self.areas.is_empty()
    }

    /// Drops the engine's copies: every task is forked and has its own.
    pub(crate) fn forked(&mut self) {
        self.engine.clear();
    }

    /// The copy `vma` of a task comes from, if any.
    pub(crate) fn area(&self, vma: &VmaEntry) -> Option<&Area> {
        if !eligible(vma) {
            return None;
        }
        self.areas.get(&key(vma))
    }

    /// The copied bytes at `addr` of `area`, up to `limit` (exclusive):
    /// the end of the stretch that reads the same way, and its bytes if
    /// the copy has pages there (none: never written, so zero).
    pub(crate) fn copied(&self, area: &Area, addr: u64, limit: u64) -> (u64, Option<&[u8]>) {
        let src = &self.sources[area.source];
        let i = src.runs.partition_point(|r| r.0 + r.1 <= addr);
        match src.runs.get(i) {
            Some(&(vaddr, len, file, off)) if vaddr <= addr => {
                let end = (vaddr + len).min(limit);
                let bytes = src.maps[file].as_ref().map(|m| {
                    let from = (off + addr - vaddr) as usize;
                    &m.as_slice()[from..from + (end - addr) as usize]
                });
                (end, bytes)
            }
            Some(&(vaddr, ..)) => (vaddr.min(limit), None),
            None => (limit, None),
        }
    }

    /// The runs of the saved pages of `images` (whose pages files are
    /// `pages`) in its premapped VMAs that differ from its copies.
    pub(crate) fn diff(&self, images: &TaskImages, pages: &[&[u8]]) -> Diff {
        let mut out: Diff = Vec::new();
        let mut push = |addr: u64, file: usize, off: u64, len: u64| match out.last_mut() {
            Some(l) if l.1 == file && l.0 + l.3 == addr && l.2 + l.3 == off => l.3 += len,
            _ => out.push((addr, file, off, len)),
        };
        for (vma, seg) in images.pages.in_vmas(&images.mm.vmas) {
            let Some(area) = self.area(vma) else {
                continue;
            };
            let (mut addr, stop) = (seg.vaddr, seg.vaddr + seg.len);
            while addr < stop {
                let (to, base) = self.copied(area, addr, stop);
                let off = seg.offset + (addr - seg.vaddr);
                let Some(base) = base else {
                    push(addr, seg.file, off, to - addr);
                    addr = to;
                    continue;
                };
                let local = &pages[seg.file][off as usize..(off + to - addr) as usize];
                for (i, (mine, copy)) in local
                    .chunks(PAGE as usize)
                    .zip(base.chunks(PAGE as usize))
                    .enumerate()
                {
                    if mine != copy {
                        let at = i as u64 * PAGE;
                        push(addr + at, seg.file, off + at, mine.len() as u64);
                    }
                }
                addr = to;
            }
        }
        out
    }

    /// The injected calls that move the copies of `images`' VMAs in place,
    /// then drop the pages the copies have and the images lack.
    pub(crate) fn move_calls(&self, images: &TaskImages) -> Vec<RemoteCall> {
        let mut moves = Vec::new();
        let mut zaps = Vec::new();
        for vma in &images.mm.vmas {
            let Some(area) = self.area(vma) else {
                continue;
            };
            let len = area.end - area.start;
            moves.push((
                "move a premapped vma",
                area.start,
                nr::MREMAP,
                vec![area.at, len, len, MREMAP_MOVE_FIXED, area.start],
            ));
            let own: Vec<(u64, u64)> = runs_between(images, area.start, area.end);
            let copied: Vec<(u64, u64)> = self.sources[area.source]
                .runs_in(area.start, area.end)
                .iter()
                .map(|r| (r.0.max(area.start), (r.0 + r.1).min(area.end)))
                .collect();
            for (s, e) in subtract(&copied, &own) {
                zaps.push((
                    "drop pages of a premapped vma",
                    s,
                    nr::MADVISE,
                    vec![s, e - s, libc::MADV_DONTNEED as u64],
                ));
            }
        }
        moves.extend(zaps);
        moves
    }

    /// The ranges of the copies `images` keeps (its own, at their engine
    /// addresses).
    pub(crate) fn kept(&self, images: &TaskImages) -> Vec<(u64, u64)> {
        images
            .mm
            .vmas
            .iter()
            .filter_map(|v| self.area(v))
            .map(|a| (a.at, a.at + (a.end - a.start)))
            .collect()
    }
}

/// How far the diff helper got.
#[derive(Debug, Default)]
struct DiffState {
    /// Per task (pid in the images): its diff, or `None` when the caller
    /// must compare itself.
    ready: HashMap<u32, Option<Diff>>,
    running: bool,
    abandoned: bool,
}

/// The diffs of every task ([`Premaps::diff`]), computed by a helper
/// thread in tree order while the tracing thread restores the tasks before.
#[derive(Debug, Default)]
pub(crate) struct Diffs {
    state: Mutex<DiffState>,
    cv: Condvar,
}

impl Diffs {
    fn lock(&self) -> std::sync::MutexGuard<'_, DiffState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the helper as running, before it starts.
    pub(crate) fn start(&self) {
        self.lock().running = true;
    }

    /// Stops the helper after its current task and lets waiters go.
    pub(crate) fn finish(&self) {
        let mut st = self.lock();
        st.running = false;
        st.abandoned = true;
        self.cv.notify_all();
    }

    /// The helper: the diff of every live task of `tree`, in order.
    pub(crate) fn compute_all(&self, premaps: &Premaps, tree: &TreeImages) {
        for images in tree.tasks.iter().filter_map(|t| t.alive()) {
            if self.lock().abandoned {
                break;
            }
            let has_copy = images.mm.vmas.iter().any(|v| premaps.area(v).is_some());
            let diff = if has_copy {
                super::map_pages(images).ok().map(|maps| {
                    let pages: Vec<&[u8]> = maps
                        .iter()
                        .map(|m| m.as_ref().map_or(&[][..], FileMap::as_slice))
                        .collect();
                    premaps.diff(images, &pages)
                })
            } else {
                Some(Diff::new())
            };
            self.lock().ready.insert(images.pid(), diff);
            self.cv.notify_all();
        }
        self.finish();
    }

    /// The diff of task `pid` (in the images), waiting for the helper to
    /// get there; `None` if the helper is not running or could not make
    /// it.
    pub(crate) fn take(&self, pid: u32) -> Option<Diff> {
        let mut st = self.lock();
        loop {
            if let Some(d) = st.ready.remove(&pid) {
                return d;
            }
            if !st.running {
                return None;
            }
            st = self
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Source {
    /// Its runs that meet `start..end`.
    fn runs_in(&self, start: u64, end: u64) -> &[(u64, u64, usize, u64)] {
        let a = self.runs.partition_point(|r| r.0 + r.1 <= start);
        let b = self.runs.partition_point(|r| r.0 < end);
        &self.runs[a..b.max(a)]
    }
}

/// The saved ranges of `images` inside `start..end`.
fn runs_between(images: &TaskImages, start: u64, end: u64) -> Vec<(u64, u64)> {
    let segs = &images.pages.segs;
    let a = segs.partition_point(|s| s.vaddr + s.len <= start);
    segs[a..]
        .iter()
        .take_while(|s| s.vaddr < end)
        .map(|s| (s.vaddr.max(start), (s.vaddr + s.len).min(end)))
        .collect()
}

/// The parts of the sorted, disjoint ranges `a` that no range of `b`
/// (sorted, disjoint) covers.
pub(super) fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while s < e {
            match b.get(k) {
                Some(&(bs, be)) if bs < e => {
                    if bs > s {
                        out.push((s, bs));
                    }
                    s = s.max(be);
                    k += 1;
                }
                _ => {
                    out.push((s, e));
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_keeps_what_is_not_covered() {
        let a = [(0, 10), (20, 30), (40, 50)];
        let b = [(0, 2), (5, 6), (9, 25), (45, 60)];
        assert_eq!(subtract(&a, &b), vec![(2, 5), (6, 9), (25, 30), (40, 45)]);
        assert_eq!(subtract(&a, &[]), a.to_vec());
        assert!(subtract(&[(3, 4)], &[(0, 10)]).is_empty());
    }

    fn vma(status: u32, flags: i32) -> VmaEntry {
        VmaEntry {
            start: 0x1000,
            end: 0x3000,
            status,
            flags: flags as u32,
            ..Default::default()
        }
    }

    #[test]
    fn only_plain_private_anonymous_memory_is_premapped() {
        let anon = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
        let priv_anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        assert!(eligible(&vma(anon, priv_anon)));
        assert!(eligible(&vma(anon | VMA_AREA_HEAP, priv_anon)));
        assert!(!eligible(&vma(anon, priv_anon | libc::MAP_GROWSDOWN)));
        assert!(!eligible(&vma(anon, priv_anon | libc::MAP_LOCKED)));
        assert!(!eligible(&vma(anon | 0x8, priv_anon)));
        assert!(!eligible(&vma(VMA_AREA_REGULAR | 0x40, libc::MAP_PRIVATE)));
    }
}
