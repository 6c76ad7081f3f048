//! Shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`), dumped once per
//! shared object however many tasks map it (CRIU's `dump_one_shmem` in
//! `criu/shmem.c`).
//!
//! Such a mapping is a file of the kernel's shmem filesystem; its inode
//! number is the `shmid` of the VMA. Its contents are read through
//! `/proc/<pid>/map_files/<start>-<end>` (the object itself, at the VMA's
//! offset) into `pagemap-shmem-<shmid>.img`, whose entries give offsets in
//! the object, and a pages file of its own.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use criu_proto::images::{PagemapHead, VmaEntry};
use criu_proto::img::pages::{Pagemap, PE_PRESENT};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

/// First pages file id of shared objects (task pages files count from 1).
const FIRST_PAGES_ID: u32 = 0x1_0000;
/// Page size.
const PAGE: u64 = 4096;

/// A shared object could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum ShmemError {
    /// Its contents could not be read.
    #[error("task {pid}: cannot read shared memory at {start:#x}")]
    Read {
        /// Task.
        pid: i32,
        /// Start of the VMA.
        start: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another task maps more of an object than the first one dumped.
    #[error("task {pid}: shared memory {shmid} mapped beyond the part already dumped")]
    Range {
        /// Task.
        pid: i32,
        /// Object.
        shmid: u64,
    },
    /// An image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The shared objects of a dump.
#[derive(Debug, Default)]
pub struct ShmemDump {
    /// Dumped objects: byte range of the object written.
    done: HashMap<u64, (u64, u64)>,
}

impl ShmemDump {
    /// Dumps the object of the shared anonymous `vma` of `pid`, unless an
    /// earlier task's mapping of it already did.
    pub fn dump(&mut self, pid: i32, vma: &VmaEntry, dir: &ImagesDir) -> Result<(), ShmemError> {
        let (from, to) = (vma.pgoff, vma.pgoff + (vma.end - vma.start));
        if let Some(&(f, t)) = self.done.get(&vma.shmid) {
            if from < f || to > t {
                return Err(ShmemError::Range {
                    pid,
                    shmid: vma.shmid,
                });
            }
            return Ok(());
        }
        let read_err = |source| ShmemError::Read {
            pid,
            start: vma.start,
            source,
        };
        let link = crate::proc::path(pid, &format!("map_files/{:x}-{:x}", vma.start, vma.end));
        let file = std::fs::File::open(&link).map_err(read_err)?;
        let mut data = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut data, from).map_err(read_err)?;
        let pages_id = FIRST_PAGES_ID + self.done.len() as u32;
        let mut pages = dir.create_pages(pages_id)?;
        let mut entries = Vec::new();
        // Only pages holding something: the rest reads as zeros anyway.
        for (i, page) in data.chunks(PAGE as usize).enumerate() {
            if page.iter().all(|&b| b == 0) {
                continue;
            }
            pages.write_pages(page)?;
            entries.push(Pagemap::entry(from + i as u64 * PAGE, 1, PE_PRESENT));
        }
        pages.finish()?;
        let map = Pagemap {
            head: PagemapHead { pages_id },
            entries,
        };
        dir.write_pagemap(ImageKind::ShmemPagemap, vma.shmid, &map)?;
        self.done.insert(vma.shmid, (from, to));
        Ok(())
    }
}
