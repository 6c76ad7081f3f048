//! Shared anonymous memory of the restored tree (CRIU's `criu/shmem.c`:
//! `collect_shmem`, `restore_shmem_content`, `open_shmem`).
//!
//! The first task restored that maps an object creates it: a fresh
//! `MAP_SHARED | MAP_ANONYMOUS` mapping at the VMA's place, filled from
//! `pagemap-shmem-<shmid>.img`. Every later mapping of the same object, in
//! any task, opens the creator's mapping through
//! `/proc/<creator>/map_files/<start>-<end>` and maps that file: one object,
//! seen by all.

use std::collections::HashMap;

use criu_proto::images::VmaEntry;
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;

use super::images::{read_error, ImagesError, VMA_ANON_SHARED};
use super::mm::{MmError, Remote};
use super::pstree::TreeImages;
use crate::arch::x86_64::{nr, RemoteAddr};
use crate::pstree::RealPid;

/// `MAP_SHARED`, `MAP_FIXED`, `MAP_ANONYMOUS`.
const MAP_SHARED: u64 = 0x01;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;

/// The shared objects of a dump and who holds each once restored.
#[derive(Debug, Default)]
pub(crate) struct SharedMemory {
    /// Saved pages of each object: (offset in the object, bytes).
    contents: HashMap<u64, Vec<(u64, Vec<u8>)>>,
    /// The mapping that created each object: (task, start, end).
    creators: HashMap<u64, (RealPid, u64, u64)>,
    /// The memfds of the dump, held by the worker.
    pub(crate) memfd: super::memfd::Memfds,
    /// File locks to take again (`file_locks`).
    pub(crate) locks: Vec<criu_proto::images::FileLockEntry>,
    /// Private memory the tasks inherit from the engine copy-on-write.
    pub(crate) premaps: std::sync::Arc<super::mm::Premaps>,
    /// What each task must write into its premapped memory, computed ahead.
    pub(crate) diffs: std::sync::Arc<super::mm::Diffs>,
}

/// Whether `vma` maps shared anonymous memory.
pub(crate) fn is_shared_anon(vma: &VmaEntry) -> bool {
    vma.status & VMA_ANON_SHARED != 0
}

/// Reads the contents of every shared object the tree maps.
pub(crate) fn load(dir: &ImagesDir, tree: &TreeImages) -> Result<SharedMemory, ImagesError> {
    let mut out = SharedMemory::default();
    let vmas = tree
        .tasks
        .iter()
        .filter_map(|t| t.alive())
        .flat_map(|t| t.mm.vmas.iter());
    for vma in vmas.filter(|v| is_shared_anon(v)) {
        if out.contents.contains_key(&vma.shmid) {
            continue;
        }
        let err = |source| read_error(ImageKind::ShmemPagemap, vma.shmid, source);
        let mut pages = Vec::new();
        if let Some(map) = dir.shmem_pagemap(vma.shmid).map_err(err)? {
            let reader = dir.open_pages(map.head.pages_id).map_err(err)?;
            for run in map.runs().filter(|r| r.is_present()) {
                pages.push((run.vaddr, reader.read_run(&run).map_err(err)?));
            }
        }
        out.contents.insert(vma.shmid, pages);
    }
    Ok(out)
}

impl SharedMemory {
    /// Maps the shared anonymous `vma` in the task `r` runs in.
    pub(crate) fn map(&mut self, r: &Remote<'_, '_>, vma: &VmaEntry) -> Result<(), MmError> {
        let len = vma.end - vma.start;
        let prot = u64::from(vma.prot);
        let keep = u64::from(vma.flags) & !(MAP_ANONYMOUS | 0x3);
        if let Some(&(creator, start, end)) = self.creators.get(&vma.shmid) {
            let path = format!("/proc/{creator}/map_files/{start:x}-{end:x}");
            let fd = r.open(&path, libc::O_RDWR)?;
            let mapped = r.call(
                "map shared memory",
                vma.start,
                nr::MMAP,
                &[
                    vma.start,
                    len,
                    prot,
                    keep | MAP_SHARED | MAP_FIXED,
                    fd,
                    vma.pgoff,
                ],
            );
            r.call("close shared memory", fd, nr::CLOSE, &[fd])?;
            mapped?;
            return Ok(());
        }
        if vma.pgoff != 0 {
            return Err(MmError::Syscall {
                pid: r.pid,
                step: "create shared memory seen from an offset (not supported yet)",
                addr: vma.start,
                source: Errno::EINVAL,
            });
        }
        let writable = prot | libc::PROT_WRITE as u64;
        r.call(
            "create shared memory",
            vma.start,
            nr::MMAP,
            &[
                vma.start,
                len,
                writable,
                keep | MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
                u64::MAX,
                0,
            ],
        )?;
        let task = r.inj.task();
        for (off, bytes) in self.contents.get(&vma.shmid).into_iter().flatten() {
            if *off + bytes.len() as u64 > len {
                continue;
            }
            task.write_mem(RemoteAddr(vma.start + off), bytes)
                .map_err(|_| MmError::WritePages {
                    pid: r.pid,
                    addr: vma.start + off,
                    source: Errno::EIO,
                })?;
        }
        if writable != prot {
            r.call(
                "protect shared memory",
                vma.start,
                nr::MPROTECT,
                &[vma.start, len, prot],
            )?;
        }
        self.creators.insert(vma.shmid, (r.pid, vma.start, vma.end));
        Ok(())
    }
}
