//! inotify descriptors (CRIU's `criu/fsnotify.c`): the watches of an
//! inotify file with their masks, each with the kernel's file handle of
//! the watched inode and the path it resolves to.
//!
//! The fdinfo `inotify wd:` lines give the watch number, inode, device,
//! mask and file handle. The handle is opened on a mount of that device
//! (`open_by_handle_at`) and the path of the result is recorded; the
//! restore watches that path again under the same watch number. A watch
//! whose inode cannot be reached by a path (deleted, or on no mount of the
//! task) fails the dump. Events queued at dump time are lost, as in CRIU.
//!
//! # References
//!
//! - [inotify(7)](https://man7.org/linux/man-pages/man7/inotify.7.html),
//!   [open_by_handle_at(2)](https://man7.org/linux/man-pages/man2/open_by_handle_at.2.html)

use criu_proto::images::{FownEntry, InotifyFileEntry, InotifyWdEntry};

use super::fhandle;
use crate::proc::ProcError;
use crate::pstree::RealPid;

/// An inotify descriptor could not be described.
#[derive(Debug, thiserror::Error)]
pub enum InotifyError {
    /// The fdinfo of the inotify could not be parsed.
    #[error("cannot read the watches of inotify fd {fd} of task {pid}")]
    FdInfo {
        /// The task.
        pid: RealPid,
        /// The inotify descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// A watched inode has no path.
    #[error(
        "task {pid}: inotify fd {fd} watches inode {ino:#x} of device {dev:#x} (wd {wd}), \
         which no path reaches"
    )]
    NoPath {
        /// The task.
        pid: RealPid,
        /// The inotify descriptor.
        fd: i32,
        /// Watch descriptor.
        wd: u32,
        /// Inode number.
        ino: u64,
        /// Kernel device number.
        dev: u32,
    },
}

/// One `inotify wd:` line: the watch and the raw handle bytes.
fn watch(line: &str) -> Option<(InotifyWdEntry, Vec<u8>)> {
    let mut wd = InotifyWdEntry::default();
    for word in line.split_whitespace() {
        let Some((key, v)) = word.split_once(':') else {
            continue;
        };
        let hex32 = || u32::from_str_radix(v, 16).ok();
        match key {
            "wd" => wd.wd = hex32()?,
            "ino" => wd.i_ino = u64::from_str_radix(v, 16).ok()?,
            "sdev" => wd.s_dev = hex32()?,
            "mask" => wd.mask = hex32()?,
            "ignored_mask" => wd.ignored_mask = hex32()?,
            _ => {}
        }
    }
    let (fh, raw) = fhandle::parse(line)?;
    wd.f_handle = fh;
    Some((wd, raw))
}

/// The watches listed by the fdinfo text of an inotify, with the raw
/// handle bytes of each.
pub(crate) fn watches(fdinfo: &str) -> Result<Vec<(InotifyWdEntry, Vec<u8>)>, ProcError> {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("inotify wd:"))
        .map(|l| watch(l).ok_or_else(|| ProcError::parse("fdinfo", format!("{l:?}"))))
        .collect()
}

/// The entry of inotify `fd` (file `id`, status `flags`) of task `pid`.
pub(crate) fn entry(
    pid: RealPid,
    fd: i32,
    id: u32,
    flags: u32,
    fdinfo: &str,
) -> Result<InotifyFileEntry, InotifyError> {
    let found = watches(fdinfo).map_err(|source| InotifyError::FdInfo { pid, fd, source })?;
    let mut wd = Vec::with_capacity(found.len());
    for (mut w, raw) in found {
        let path = fhandle::resolve(pid, w.s_dev, w.i_ino, w.f_handle.r#type as i32, &raw).ok_or(
            InotifyError::NoPath {
                pid,
                fd,
                wd: w.wd,
                ino: w.i_ino,
                dev: w.s_dev,
            },
        )?;
        w.f_handle.path = Some(path);
        wd.push(w);
    }
    Ok(InotifyFileEntry {
        id,
        flags,
        fown: FownEntry::default(),
        wd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines() {
        let text = "pos:\t0\nflags:\t00\ninotify wd:2 ino:3c4a7 sdev:fe00000 mask:80000200 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\ninotify wd:1 ino:98c026 sdev:fe00000 mask:102 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:26c098007495c1e3\n";
        let w = watches(text).unwrap();
        assert_eq!(w.len(), 2);
        let (a, raw) = &w[0];
        assert_eq!(
            (a.wd, a.i_ino, a.s_dev, a.mask),
            (2, 0x3c4a7, 0xfe0_0000, 0x8000_0200)
        );
        assert_eq!((a.f_handle.bytes, a.f_handle.r#type), (8, 1));
        assert_eq!(a.f_handle.handle.len(), 16);
        assert_eq!(a.f_handle.handle[0], 0x3c4a7);
        assert_eq!(raw.len(), 8);
        assert_eq!(w[1].0.f_handle.handle[0], 0xe3c1_9574_0098_c026);
        assert!(watches("inotify wd:1 ino:zz\n").is_err());
        assert!(watches("inotify wd:1 fhandle-bytes:8 f_handle:abc\n").is_err());
    }
}
