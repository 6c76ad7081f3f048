//! `stats-dump` (CRIU's `criu/stats.c`): timings in microseconds and the
//! page counters of the dump.

use std::time::Duration;

use criu_proto::images::{DumpStatsEntry, StatsEntry};

use crate::mem::MemStats;

/// Figures of one dump, also returned to the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Time to stop the task.
    pub freezing_time: Duration,
    /// Time the task stayed frozen (until images were written).
    pub frozen_time: Duration,
    /// Time spent dumping memory.
    pub memdump_time: Duration,
    /// Of that, time spent moving pages into the image.
    pub memwrite_time: Duration,
    /// Memory counters.
    pub mem: MemStats,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl DumpStats {
    /// The `stats-dump` entry.
    pub fn entry(&self) -> StatsEntry {
        StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: us(self.freezing_time),
                frozen_time: us(self.frozen_time),
                memdump_time: us(self.memdump_time),
                memwrite_time: us(self.memwrite_time),
                pages_scanned: self.mem.pages_scanned,
                pages_skipped_parent: self.mem.pages_parent,
                pages_written: self.mem.pages_written,
                irmap_resolve: Some(0),
                // Only a lazy dump leaves pages out; a full dump writes them.
                pages_lazy: 0,
                page_pipes: Some(self.mem.page_pipes),
                page_pipe_bufs: Some(self.mem.pipe_fills),
                shpages_scanned: Some(0),
                shpages_skipped_parent: Some(0),
                shpages_written: Some(0),
            }),
            restore: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_carries_counters_in_microseconds() {
        let s = DumpStats {
            freezing_time: Duration::from_millis(2),
            frozen_time: Duration::from_micros(11984),
            mem: MemStats {
                pages_scanned: 72,
                pages_written: 55,
                page_pipes: 1,
                pipe_fills: 6,
                ..Default::default()
            },
            ..Default::default()
        };
        let d = s.entry().dump.unwrap();
        assert_eq!((d.freezing_time, d.frozen_time), (2000, 11984));
        assert_eq!(
            (d.pages_scanned, d.pages_written, d.pages_lazy),
            (72, 55, 0)
        );
        assert_eq!(d.page_pipe_bufs, Some(6));
    }
}
