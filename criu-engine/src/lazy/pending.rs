//! The pages of one address space still to be filled (CRIU keeps them as the
//! `iovs` list of a `lazy_pages_info` in `criu/uffd.c`).
//!
//! Each range remembers the address its contents had in the images, so a
//! range moved by `mremap` is still filled from the right place.

use std::collections::BTreeMap;

/// A range still missing: `[start, end)` now, contents at `img` in the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing {
    /// Current first address.
    pub(crate) start: u64,
    /// Current end.
    pub(crate) end: u64,
    /// Address of `start` in the images.
    pub(crate) img: u64,
}

/// Disjoint missing ranges keyed by start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    ranges: BTreeMap<u64, (u64, u64)>,
    bytes: u64,
}

impl Pending {
    /// Adds a range (it must not overlap any other).
    pub(crate) fn insert(&mut self, start: u64, end: u64, img: u64) {
        if start < end {
            self.ranges.insert(start, (end, img));
            self.bytes += end - start;
        }
    }

    /// Bytes still missing.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is missing.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The range holding `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<Missing> {
        let (&start, &(end, img)) = self.ranges.range(..=addr).next_back()?;
        (addr < end).then_some(Missing { start, end, img })
    }

    /// The lowest missing range.
    pub(crate) fn first(&self) -> Option<Missing> {
        let (&start, &(end, img)) = self.ranges.iter().next()?;
        Some(Missing { start, end, img })
    }

    /// Removes `[start, end)`; returns the bytes that were missing there.
    pub(crate) fn remove(&mut self, start: u64, end: u64) -> u64 {
        let hit: Vec<(u64, (u64, u64))> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &v)| (s, v))
            .collect();
        let mut removed = 0;
        for (s, (e, img)) in hit {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            if s < start {
                self.insert(s, start, img);
            }
            if e > end {
                self.insert(end, e, img + (end - s));
            }
            removed += e.min(end) - s.max(start);
        }
        removed
    }

    /// `mremap` moved `[from, from + len)` to `to`.
    pub(crate) fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved: Vec<Missing> = self
            .ranges
            .range(..from + len)
            .filter(|(_, &(e, _))| e > from)
            .map(|(&s, &(e, img))| {
                let (cs, ce) = (s.max(from), e.min(from + len));
                Missing {
                    start: cs,
                    end: ce,
                    img: img + (cs - s),
                }
            })
            .collect();
        self.remove(from, from + len);
        // The destination had no registered pages of ours left.
        self.remove(to, to + len);
        for m in moved {
            self.insert(to + (m.start - from), to + (m.end - from), m.img);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_splits_and_counts() {
        let mut p = Pending::default();
        p.insert(0x1000, 0x5000, 0x1000);
        p.insert(0x8000, 0x9000, 0x8000);
        assert_eq!(p.bytes(), 0x5000);
        assert_eq!(p.remove(0x2000, 0x3000), 0x1000);
        assert_eq!(
            p.find(0x3000),
            Some(Missing {
                start: 0x3000,
                end: 0x5000,
                img: 0x3000
            })
        );
        assert_eq!(p.find(0x2000), None);
        assert_eq!(p.remove(0x4000, 0x8800), 0x1800);
        assert_eq!(p.bytes(), 0x2800);
        assert_eq!(p.first().unwrap().end, 0x2000);
    }

    #[test]
    fn remap_keeps_image_addresses() {
        let mut p = Pending::default();
        p.insert(0x1000, 0x4000, 0x1000);
        p.remap(0x2000, 0x10000, 0x2000);
        assert_eq!(p.bytes(), 0x3000);
        assert_eq!(
            p.find(0x11000),
            Some(Missing {
                start: 0x10000,
                end: 0x12000,
                img: 0x2000
            })
        );
        assert_eq!(p.find(0x2000), None);
        assert!(p.find(0x1000).is_some());
    }
}
