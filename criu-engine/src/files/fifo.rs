//! Named pipes (CRIU's `criu/fifo.c`): a `FIFO` entry naming the pipe by
//! inode and pointing (`regf_id`) at a `REG` entry that keeps the path and
//! the open flags, and the bytes in flight in `fifo-data.img` (one
//! `pipe_data_entry` per FIFO, as for pipes).
//!
//! # References
//!
//! - [fifo(7)](https://man7.org/linux/man-pages/man7/fifo.7.html)

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_proto::images::{FdTypes, FifoEntry, FileEntry};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use super::{DumpedFd, FileTable, FilesError};
use crate::inject::Injection;
use crate::pstree::RealPid;

impl FileTable {
    /// Describes FIFO descriptor `fd` (`link` is its `/proc` link, `name`
    /// the path it was opened by, `meta` the FIFO's inode).
    pub(super) fn dump_fifo(
        &mut self,
        pid: RealPid,
        inj: &Injection<'_>,
        fd: i32,
        link: &Path,
        name: &str,
        meta: &Metadata,
    ) -> Result<DumpedFd, FilesError> {
        let io_err = |source| FilesError::Fd { pid, fd, source };
        let unsupported = |kind: String| FilesError::Unsupported { pid, fd, kind };
        match std::fs::metadata(name) {
            Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => {}
            _ => return Err(unsupported(format!("a fifo no longer reachable as {name}"))),
        }
        let (_, info) = super::read_fdinfo(pid, fd)?;
        super::refuse_owner(pid, inj, fd, || {
            unsupported(format!("a fifo {name} with an F_SETOWN owner"))
        })?;
        let (cloexec, flags) = super::split_flags(info.flags);
        let key = (meta.dev(), meta.ino(), 0);
        let id = match self.shared_id(pid, fd, key) {
            Some(id) => id,
            None => {
                let pipe_id = u32::try_from(meta.ino())
                    .map_err(|_| unsupported(format!("a fifo {name} with a 64-bit inode")))?;
                if !self.fifos.iter().any(|p| p.entry.pipe_id == pipe_id) {
                    let data = super::pipe::peek(link, pipe_id).map_err(|e| io_err(e.into()))?;
                    self.fifos.push(data);
                }
                let id = self.alloc();
                let regf_id = self.alloc();
                let reg = super::reg::entry(regf_id, name, flags, 0, meta, None);
                self.push(reg, meta);
                self.entries.push(FileEntry {
                    r#type: FdTypes::Fifo as i32,
                    id,
                    fifo: Some(FifoEntry {
                        id,
                        pipe_id,
                        regf_id: Some(regf_id),
                    }),
                    ..Default::default()
                });
                id
            }
        };
        Ok((super::fdinfo_entry(id, cloexec, FdTypes::Fifo, fd), key))
    }

    /// Writes `fifo-data.img` when the tree has FIFOs.
    pub fn write_fifo_data(&self, dir: &ImagesDir) -> Result<(), ImageError> {
        if self.fifos.is_empty() {
            return Ok(());
        }
        let mut w = dir.create_image(ImageKind::FifoData, 0)?;
        for p in &self.fifos {
            w.write_entry_with_extra(&p.entry, &p.data)?;
        }
        w.finish().map(drop)
    }
}
