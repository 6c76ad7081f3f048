//! memfds of the restored tree (CRIU's `criu/memfd.c`: `memfd_open_inode`,
//! `memfd_open`, `apply_memfd_seals`, and `restore_memfd_shmem_content` of
//! `criu/shmem.c`).
//!
//! The worker creates each memfd inode of `memfd.img` itself before the tree
//! exists: `memfd_create` with the dumped name, the contents of
//! `pagemap-shmem-<shmid>.img`, the size, owner and mode. Every descriptor
//! of it is a new open of `/proc/self/fd/<n>` in the root task (which
//! inherited the worker's table), with the dumped flags and position; every
//! mapping opens `/proc/<worker>/fd/<n>` from inside the task. Seals go on
//! last, once every writable mapping exists, since `F_SEAL_WRITE` and
//! `F_SEAL_FUTURE_WRITE` would forbid them.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use criu_proto::images::{FileEntry, MemfdInodeEntry, VmaEntry};
use criu_proto::img::{ImageKind, ImagesDir};
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::MFdFlags;

use super::images::{read_error, ImagesError};

/// `F_SEAL_SEAL`.
const F_SEAL_SEAL: u32 = 0x1;
/// `F_SEAL_WRITE`.
const F_SEAL_WRITE: u32 = 0x8;
/// `F_SEAL_FUTURE_WRITE`.
const F_SEAL_FUTURE_WRITE: u32 = 0x10;

/// A memfd could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum MemfdError {
    /// `memfd_create` or filling it failed.
    #[error("cannot recreate memfd {name:?} ({step})")]
    Create {
        /// Its name.
        name: String,
        /// What failed.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its seals could not be set back.
    #[error("cannot seal memfd {name:?} with {seals:#x}")]
    Seal {
        /// Its name.
        name: String,
        /// The seals.
        seals: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

struct Inode {
    fd: OwnedFd,
    entry: MemfdInodeEntry,
}

/// Every memfd of the dump, created in the worker.
#[derive(Default)]
pub(crate) struct Memfds {
    inodes: HashMap<u64, Inode>,
    /// `files.img` memfd entries: id -> (inode id, flags, pos).
    files: HashMap<u32, (u64, u32, u64)>,
}

impl std::fmt::Debug for Memfds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memfds")
            .field("inodes", &self.inodes.len())
            .field("files", &self.files.len())
            .finish()
    }
}

fn create(dir: &ImagesDir, e: &MemfdInodeEntry) -> Result<OwnedFd, ImagesError> {
    let fail = |step, source: std::io::Error| {
        ImagesError::from(MemfdError::Create {
            name: e.name.clone(),
            step,
            source,
        })
    };
    if e.hugetlb_flag.is_some() {
        return Err(ImagesError::Unsupported {
            what: format!("restoring hugetlb memfd {:?}", e.name),
        });
    }
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if e.seals != F_SEAL_SEAL {
        flags |= MFdFlags::MFD_ALLOW_SEALING;
    }
    let fd = nix::sys::memfd::memfd_create(e.name.as_str(), flags)
        .map_err(|err| fail("memfd_create", err.into()))?;
    let file = std::fs::File::from(fd);
    file.set_len(e.size)
        .map_err(|err| fail("set its size", err))?;
    let err = |source| read_error(ImageKind::ShmemPagemap, e.shmid.into(), source);
    if let Some(map) = dir.shmem_pagemap(e.shmid.into()).map_err(err)? {
        let reader = dir.open_pages(map.head.pages_id).map_err(err)?;
        for run in map.runs().filter(|r| r.is_present()) {
            let bytes = reader.read_run(&run).map_err(err)?;
            let keep = e.size.saturating_sub(run.vaddr).min(bytes.len() as u64) as usize;
            file.write_all_at(&bytes[..keep], run.vaddr)
                .map_err(|err| fail("write its contents", err))?;
        }
    }
    let fd = OwnedFd::from(file);
    nix::unistd::fchown(&fd, Some(e.uid.into()), Some(e.gid.into()))
        .map_err(|err| fail("set its owner", err.into()))?;
    if let Some(mode) = e.mode {
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777))
            .map_err(|err| fail("set its mode", err.into()))?;
    }
    Ok(fd)
}

/// Reads `memfd.img` and creates every memfd `files` refers to.
pub(crate) fn load(
    dir: &ImagesDir,
    files: &HashMap<u32, FileEntry>,
) -> Result<Memfds, ImagesError> {
    let mut out = Memfds::default();
    for f in files.values() {
        if let Some(m) = &f.memfd {
            out.files.insert(f.id, (m.inode_id.into(), m.flags, m.pos));
        }
    }
    if out.files.is_empty() {
        return Ok(out);
    }
    let entries: Vec<MemfdInodeEntry> = dir
        .read_all(ImageKind::MemfdInode, 0)
        .map_err(|source| read_error(ImageKind::MemfdInode, 0, source))?;
    for e in entries {
        let fd = create(dir, &e)?;
        out.inodes.insert(e.inode_id, Inode { fd, entry: e });
    }
    if let Some((id, _)) = out
        .files
        .iter()
        .find(|(_, v)| !out.inodes.contains_key(&v.0))
    {
        return Err(ImagesError::MissingFile {
            id: *id,
            kind: "memfd inode",
            user: format!("memfd file {id}"),
        });
    }
    Ok(out)
}

impl Memfds {
    /// For memfd file `id`: the worker's descriptor of its inode, its flags
    /// and position.
    pub(crate) fn source(&self, id: u32) -> Option<(RawFd, u32, u64)> {
        let &(inode, flags, pos) = self.files.get(&id)?;
        let fd = self.inodes.get(&inode)?.fd.as_raw_fd();
        Some((fd, flags, pos))
    }

    /// The path a restored task opens to map memfd file `id`.
    pub(crate) fn map_path(&self, id: u32) -> Option<String> {
        let (fd, _, _) = self.source(id)?;
        Some(format!("/proc/{}/fd/{fd}", std::process::id()))
    }

    /// How a mapping `vma` of a memfd opens it, given the `access` its
    /// `fdflags` ask for: a read-only shared mapping of a memfd sealed
    /// against writes opens it read-only, otherwise the mapping would count
    /// as writable and forbid the seal.
    pub(crate) fn map_access(&self, vma: &VmaEntry, access: i32) -> i32 {
        let sealed = u32::try_from(vma.shmid)
            .ok()
            .and_then(|id| self.files.get(&id))
            .and_then(|f| self.inodes.get(&f.0))
            .is_some_and(|i| i.entry.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) != 0);
        if sealed && vma.prot & libc::PROT_WRITE as u32 == 0 {
            libc::O_RDONLY
        } else {
            access
        }
    }

    /// Puts the dumped seals back on every memfd.
    pub(crate) fn seal(&self) -> Result<(), MemfdError> {
        for inode in self.inodes.values() {
            let seals = inode.entry.seals;
            // Without MFD_ALLOW_SEALING a memfd has exactly F_SEAL_SEAL.
            if seals == 0 || seals == F_SEAL_SEAL {
                continue;
            }
            let flags = SealFlag::from_bits_retain(seals as i32);
            nix::fcntl::fcntl(&inode.fd, FcntlArg::F_ADD_SEALS(flags)).map_err(|source| {
                MemfdError::Seal {
                    name: inode.entry.name.clone(),
                    seals,
                    source,
                }
            })?;
        }
        Ok(())
    }
}
