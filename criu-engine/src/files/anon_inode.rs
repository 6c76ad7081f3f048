//! Descriptors of anonymous-inode files: eventfd, epoll, signalfd, timerfd,
//! inotify and fanotify (CRIU's `criu/files.c` `dump_one_file` dispatch on
//! `anon_inode:` links, and the kind modules [`super::eventfd`],
//! [`super::eventpoll`], [`super::signalfd`], [`super::timerfd`],
//! [`super::inotify`], [`super::fanotify`]).
//!
//! The part common to every kind lives here: the status flags from fdinfo,
//! the refusal of `F_SETOWN` owners, and one `files.img` entry per open
//! file description (descriptors sharing one are found with
//! `kcmp(KCMP_FILE)`, since every such file has the same anonymous inode).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_proto::images::{FdTypes, FileEntry};

use super::{DumpedFd, FileTable, FilesError};
use crate::inject::Injection;
use crate::pstree::RealPid;

/// The kind of an `anon_inode:` link this module dumps, or `None`.
pub(crate) fn kind(link: &str) -> Option<FdTypes> {
    Some(match link.strip_prefix("anon_inode:")? {
        "[eventfd]" => FdTypes::Eventfd,
        "[eventpoll]" => FdTypes::Eventpoll,
        "[signalfd]" => FdTypes::Signalfd,
        "[timerfd]" => FdTypes::Timerfd,
        "inotify" => FdTypes::Inotify,
        "[fanotify]" => FdTypes::Fanotify,
        _ => return None,
    })
}

impl FileTable {
    /// Describes anonymous-inode descriptor `fd` (at `link`) of kind
    /// `kind`.
    pub(super) fn dump_anon(
        &mut self,
        pid: RealPid,
        inj: &Injection<'_>,
        fd: i32,
        link: &Path,
        kind: FdTypes,
    ) -> Result<DumpedFd, FilesError> {
        let io_err = |source| FilesError::Fd { pid, fd, source };
        let meta = std::fs::metadata(link).map_err(io_err)?;
        let (text, info) = super::read_fdinfo(pid, fd)?;
        super::refuse_owner(pid, inj, fd, || FilesError::Unsupported {
            pid,
            fd,
            kind: format!("an {} with an F_SETOWN owner", kind.as_str_name()),
        })?;
        let (cloexec, flags) = super::split_flags(info.flags);
        let key = (meta.dev(), meta.ino(), 0);
        let id = match self.shared_id(pid, fd, key) {
            Some(id) => id,
            None => {
                let id = self.alloc();
                let entry = anon_entry((pid, fd), id, flags, kind, &text)?;
                self.entries.push(entry);
                id
            }
        };
        Ok((super::fdinfo_entry(id, cloexec, kind, fd), key))
    }
}

/// The `files.img` entry of descriptor `fd` of task `pid`, a new file
/// `id` of kind `kind` with status `flags` and fdinfo `text`.
fn anon_entry(
    (pid, fd): (RealPid, i32),
    id: u32,
    flags: u32,
    kind: FdTypes,
    text: &str,
) -> Result<FileEntry, FilesError> {
    let parse_err = |source| FilesError::FdInfo { pid, fd, source };
    let mut e = FileEntry {
        r#type: kind as i32,
        id,
        ..Default::default()
    };
    match kind {
        FdTypes::Eventfd => {
            e.efd = Some(super::eventfd::entry(id, flags, text).map_err(parse_err)?);
        }
        FdTypes::Signalfd => {
            e.sgfd = Some(super::signalfd::entry(id, flags, text).map_err(parse_err)?);
        }
        FdTypes::Timerfd => {
            let t = super::timerfd::entry(id, flags, text).map_err(parse_err)?;
            if !super::timerfd::CLOCKS.contains(&(t.clockid as i32)) {
                return Err(FilesError::Unsupported {
                    pid,
                    fd,
                    kind: format!("a timerfd on clock {}", t.clockid),
                });
            }
            e.tfd = Some(t);
        }
        FdTypes::Eventpoll => {
            let fds = task_fds(pid).map_err(|source| FilesError::List { pid, source })?;
            e.epfd = Some(super::eventpoll::entry(pid, fd, id, flags, text, &fds)?);
        }
        FdTypes::Inotify => {
            e.ify = Some(super::inotify::entry(pid, fd, id, flags, text)?);
        }
        FdTypes::Fanotify => {
            e.ffy = Some(super::fanotify::entry(pid, fd, id, flags, text)?);
        }
        other => {
            return Err(FilesError::Unsupported {
                pid,
                fd,
                kind: format!("an {}", other.as_str_name()),
            })
        }
    }
    Ok(e)
}

/// Every descriptor number of task `pid`.
fn task_fds(pid: RealPid) -> std::io::Result<Vec<i32>> {
    let dir = crate::proc::path(pid.0, "fd");
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_link() {
        assert_eq!(kind("anon_inode:[eventfd]"), Some(FdTypes::Eventfd));
        assert_eq!(kind("anon_inode:[eventpoll]"), Some(FdTypes::Eventpoll));
        assert_eq!(kind("anon_inode:[signalfd]"), Some(FdTypes::Signalfd));
        assert_eq!(kind("anon_inode:[timerfd]"), Some(FdTypes::Timerfd));
        assert_eq!(kind("anon_inode:inotify"), Some(FdTypes::Inotify));
        assert_eq!(kind("anon_inode:[fanotify]"), Some(FdTypes::Fanotify));
        assert_eq!(kind("anon_inode:[pidfd]"), None);
        assert_eq!(kind("pipe:[5]"), None);
    }
}
