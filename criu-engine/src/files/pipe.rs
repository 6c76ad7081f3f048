//! Pipe descriptors and the data queued in pipes (CRIU's `criu/pipes.c`:
//! `dump_one_pipe`, `dump_one_pipe_data`).
//!
//! Each end is a `files.img` entry of type `PIPE` naming the pipe by inode
//! (`pipe_id`). The bytes in flight are copied once per pipe without
//! consuming them: the pipe is opened again for reading through
//! `/proc/<pid>/fd/<fd>` (which opens the pipe inode itself, whatever end
//! the descriptor is), `tee`d into a pipe of ours and read from there.
//!
//! # References
//!
//! - [tee(2)](https://man7.org/linux/man-pages/man2/tee.2.html)
//! - [pipe(7)](https://man7.org/linux/man-pages/man7/pipe.7.html)

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_proto::images::{FdTypes, FileEntry, FownEntry, PipeDataEntry, PipeEntry};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;

use super::{DumpedFd, FileTable, FilesError};
use crate::inject::Injection;
use crate::pstree::RealPid;

impl FileTable {
    /// Describes pipe end `fd` (linking to pipe `pipe_id`) of task `pid`,
    /// saving the pipe's queued data once.
    pub(super) fn dump_pipe(
        &mut self,
        pid: RealPid,
        inj: &Injection<'_>,
        fd: i32,
        link: &Path,
        pipe_id: u32,
    ) -> Result<DumpedFd, FilesError> {
        let io_err = |source| FilesError::Fd { pid, fd, source };
        let meta = std::fs::metadata(link).map_err(io_err)?;
        let (_, info) = super::read_fdinfo(pid, fd)?;
        super::refuse_owner(pid, inj, fd, || FilesError::Unsupported {
            pid,
            fd,
            kind: "a pipe with an F_SETOWN owner".to_owned(),
        })?;
        let (cloexec, flags) = super::split_flags(info.flags);
        let key = (meta.dev(), meta.ino(), 0);
        let id = match self.shared_id(pid, fd, key) {
            Some(id) => id,
            None => {
                if !self.pipes.iter().any(|p| p.entry.pipe_id == pipe_id) {
                    let data = peek(link, pipe_id).map_err(|e| io_err(e.into()))?;
                    self.pipes.push(data);
                }
                let id = self.alloc();
                self.entries.push(FileEntry {
                    r#type: FdTypes::Pipe as i32,
                    id,
                    pipe: Some(PipeEntry {
                        id,
                        pipe_id,
                        flags,
                        fown: FownEntry::default(),
                    }),
                    ..Default::default()
                });
                id
            }
        };
        Ok((super::fdinfo_entry(id, cloexec, FdTypes::Pipe, fd), key))
    }
}

/// The data queued in one pipe at dump time.
#[derive(Debug, Clone)]
pub struct PipeData {
    /// `pipes-data.img` entry (`bytes` = `data.len()`).
    pub entry: PipeDataEntry,
    /// The bytes, in order.
    pub data: Vec<u8>,
}

/// The pipe inode number in a `pipe:[N]` link.
pub(crate) fn pipe_ino(link: &str) -> Option<u32> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

/// Copies the bytes queued in the pipe `fd_link` (`/proc/<pid>/fd/<n>`)
/// refers to, leaving them in place.
pub(crate) fn peek(fd_link: &Path, pipe_id: u32) -> Result<PipeData, Errno> {
    let src = nix::fcntl::open(fd_link, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
    let size = nix::fcntl::fcntl(&src, FcntlArg::F_GETPIPE_SZ)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    if size > 65536 {
        nix::fcntl::fcntl(&w, FcntlArg::F_SETPIPE_SZ(size))?;
    }
    let copied = match nix::fcntl::tee(
        src.as_fd(),
        w.as_fd(),
        usize::try_from(size).unwrap_or(0),
        SpliceFFlags::SPLICE_F_NONBLOCK,
    ) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => return Err(e),
    };
    let mut data = vec![0u8; copied];
    std::fs::File::from(r)
        .read_exact(&mut data)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(PipeData {
        entry: PipeDataEntry {
            pipe_id,
            bytes: copied as u32,
            size: Some(size as u32),
        },
        data,
    })
}
