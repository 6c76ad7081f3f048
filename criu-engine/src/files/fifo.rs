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

use criu_proto::images::{FdTypes, FdinfoEntry, FifoEntry, FileEntry};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use super::{DumpedFd, FileTable, FilesError};
use crate::arch::nr;
use crate::inject::Injection;
use crate::pstree::RealPid;
use crate::sys::task_query::kcmp_file;

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
        let info = crate::proc::read(pid.0, &format!("fdinfo/{fd}"))
            .and_then(|t| crate::proc::fdinfo::parse(&t))
            .map_err(|source| FilesError::FdInfo { pid, fd, source })?;
        let owner = inj
            .syscall(nr::FCNTL, &[fd as u64, libc::F_GETOWN as u64])
            .map_err(|source| FilesError::Owner { pid, fd, source })?;
        if owner != 0 {
            return Err(unsupported(format!("a fifo {name} with an F_SETOWN owner")));
        }
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let key = (meta.dev(), meta.ino(), 0);
        let shared = self.seen.iter().find(|s| {
            (s.2, s.3, s.4) == key && kcmp_file(pid.as_nix(), s.0.as_nix(), fd, s.1) == Ok(0)
        });
        let id = match shared {
            Some(s) => s.5,
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
        Ok((
            FdinfoEntry {
                id,
                flags: if cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
                r#type: FdTypes::Fifo as i32,
                fd: fd as u32,
                xattr_security_selinux: None,
            },
            key,
        ))
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
