//! memfd files, opened or mapped, as `memfd_file_entry` plus one
//! `memfd_inode_entry` per inode in `memfd.img` (CRIU's `criu/memfd.c`,
//! `dump_one_memfd` and `dump_memfd_inode`, and `dump_one_memfd_shmem` of
//! `criu/shmem.c`).
//!
//! A memfd lives on the kernel's internal shmem mount; its link reads
//! `/memfd:<name> (deleted)`. Each inode is dumped once: name, owner, mode,
//! size, seals, and its contents as a shared object: the non-zero pages go
//! to `pagemap-shmem-<inode>.img` (offsets in the file) and a pages file of
//! their own, exactly like shared anonymous memory. The inode number is the
//! `shmid` that links the two.

use std::fs::{File, Metadata};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::OnceLock;

use criu_proto::images::PagemapHead;
use criu_proto::images::{FdTypes, FileEntry, FownEntry, MemfdFileEntry, MemfdInodeEntry};
use criu_proto::img::pages::{Pagemap, PE_PRESENT};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

/// Prefix of the path a memfd's link shows.
const PREFIX: &str = "/memfd:";
/// Suffix of an unlinked file's link.
const DELETED: &str = " (deleted)";
/// First pages file id of memfd contents (shared anonymous memory uses
/// `0x1_0000` and up, task pages files count from 1).
const FIRST_PAGES_ID: u32 = 0x2_0000;
/// Page size.
const PAGE: usize = 4096;
/// Size of a memfd the dump accepts (contents are read into memory).
const MAX_SIZE: u64 = 1 << 32;

/// A memfd could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum MemfdError {
    /// Its seals or contents could not be read.
    #[error("cannot read memfd {name:?}")]
    Read {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Too big to be read whole.
    #[error("memfd {name:?} of {size} bytes is too big to dump")]
    TooBig {
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
    },
    /// An image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The device of the kernel's internal shmem mount, where memfds (and
/// shared anonymous memory) live: that of a memfd made for the purpose
/// (CRIU's `kdat.shmem_dev`).
pub fn shmem_dev() -> Option<u64> {
    static DEV: OnceLock<Option<u64>> = OnceLock::new();
    *DEV.get_or_init(|| {
        let fd = nix::sys::memfd::memfd_create(
            c"criu-shmem-probe",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .ok()?;
        nix::sys::stat::fstat(fd.as_fd()).ok().map(|st| st.st_dev)
    })
}

/// The memfd name behind a link or mapping path, if `meta` is a memfd.
pub fn memfd_name(path: &str, meta: &Metadata) -> Option<String> {
    let rest = path.strip_prefix(PREFIX)?;
    if meta.mode() & libc::S_IFMT != libc::S_IFREG || Some(meta.dev()) != shmem_dev() {
        return None;
    }
    Some(rest.strip_suffix(DELETED).unwrap_or(rest).to_owned())
}

struct Inode {
    dev: u64,
    ino: u64,
    entry: MemfdInodeEntry,
    file: File,
}

/// Every memfd inode met by a dump.
#[derive(Default)]
pub struct MemfdTable {
    inodes: Vec<Inode>,
}

impl MemfdTable {
    /// The `inode_id` of the memfd `meta` named `name`; the first time,
    /// `open` gives read access to it.
    pub fn inode(
        &mut self,
        name: &str,
        meta: &Metadata,
        open: impl FnOnce() -> std::io::Result<File>,
    ) -> Result<u32, MemfdError> {
        if let Some(i) = self
            .inodes
            .iter()
            .find(|i| i.dev == meta.dev() && i.ino == meta.ino())
        {
            return Ok(i.entry.inode_id as u32);
        }
        let read_err = |source| MemfdError::Read {
            name: name.to_owned(),
            source,
        };
        if meta.size() > MAX_SIZE {
            return Err(MemfdError::TooBig {
                name: name.to_owned(),
                size: meta.size(),
            });
        }
        let file = open().map_err(read_err)?;
        let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS)
            .map_err(|e| read_err(e.into()))?;
        let id = self.inodes.len() as u32 + 1;
        let entry = MemfdInodeEntry {
            name: name.to_owned(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            shmid: meta.ino() as u32,
            seals: seals as u32,
            inode_id: id.into(),
            hugetlb_flag: None,
            mode: Some(meta.mode()),
        };
        self.inodes.push(Inode {
            dev: meta.dev(),
            ino: meta.ino(),
            entry,
            file,
        });
        Ok(id)
    }

    /// Writes `memfd.img` and the contents of every inode.
    pub fn write(&self, dir: &ImagesDir) -> Result<(), MemfdError> {
        if self.inodes.is_empty() {
            return Ok(());
        }
        for (n, inode) in self.inodes.iter().enumerate() {
            let e = &inode.entry;
            let mut data = vec![0u8; e.size as usize];
            inode
                .file
                .read_exact_at(&mut data, 0)
                .map_err(|source| MemfdError::Read {
                    name: e.name.clone(),
                    source,
                })?;
            let pages_id = FIRST_PAGES_ID + n as u32;
            let mut pages = dir.create_pages(pages_id)?;
            let mut entries = Vec::new();
            for (i, page) in data.chunks(PAGE).enumerate() {
                if page.iter().all(|&b| b == 0) {
                    continue;
                }
                let mut full = [0u8; PAGE];
                full[..page.len()].copy_from_slice(page);
                pages.write_pages(&full)?;
                entries.push(Pagemap::entry((i * PAGE) as u64, 1, PE_PRESENT));
            }
            pages.finish()?;
            let map = Pagemap {
                head: PagemapHead { pages_id },
                entries,
            };
            dir.write_pagemap(ImageKind::ShmemPagemap, e.shmid.into(), &map)?;
        }
        dir.write_all(
            ImageKind::MemfdInode,
            0,
            self.inodes.iter().map(|i| &i.entry),
        )?;
        Ok(())
    }
}

/// The `files.img` entry of a memfd description.
pub fn file_entry(id: u32, flags: u32, pos: u64, inode_id: u32) -> FileEntry {
    FileEntry {
        r#type: FdTypes::Memfd as i32,
        id,
        memfd: Some(MemfdFileEntry {
            id,
            flags,
            pos,
            fown: FownEntry::default(),
            inode_id,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn own_memfd_is_recognised_and_described() {
        let fd = nix::sys::memfd::memfd_create(
            c"probe-name",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .unwrap();
        let mut file = File::from(fd);
        file.write_all(b"hello").unwrap();
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let path = std::fs::read_link(&link).unwrap();
        let meta = std::fs::metadata(&link).unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(memfd_name(path, &meta).as_deref(), Some("probe-name"));
        let plain = std::fs::metadata("/proc/self/exe").unwrap();
        assert_eq!(memfd_name("/memfd:x", &plain), None);
        let mut table = MemfdTable::default();
        let id = table
            .inode("probe-name", &meta, || File::open(&link))
            .unwrap();
        assert_eq!(id, 1);
        let again = table.inode("probe-name", &meta, || {
            Err(std::io::ErrorKind::NotFound.into())
        });
        assert_eq!(again.unwrap(), 1);
        let e = &table.inodes[0].entry;
        assert_eq!((e.size, e.seals, e.shmid), (5, 0, meta.ino() as u32));
    }
}
