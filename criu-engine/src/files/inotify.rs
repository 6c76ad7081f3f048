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
//! fanotify is not supported yet: such a descriptor fails the dump.
//!
//! # References
//!
//! - [inotify(7)](https://man7.org/linux/man-pages/man7/inotify.7.html),
//!   [open_by_handle_at(2)](https://man7.org/linux/man-pages/man2/open_by_handle_at.2.html)

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use criu_proto::images::{FhEntry, FownEntry, InotifyFileEntry, InotifyWdEntry};

use crate::proc::ProcError;
use crate::pstree::RealPid;
use crate::sys::anon_fd::open_by_handle;

/// Words of a stored file handle (`fh_entry_sizes.min_entries`).
const HANDLE_WORDS: usize = 16;

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
    let mut fh = FhEntry::default();
    let mut raw = Vec::new();
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
            "fhandle-bytes" => fh.bytes = hex32()?,
            "fhandle-type" => fh.r#type = hex32()?,
            "f_handle" => {
                if v.len() % 2 != 0 {
                    return None;
                }
                raw = (0..v.len() / 2)
                    .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
            }
            _ => {}
        }
    }
    if raw.len() > HANDLE_WORDS * 8 || raw.len() < fh.bytes as usize {
        return None;
    }
    let mut words = [0u64; HANDLE_WORDS];
    for (i, b) in raw.iter().enumerate() {
        words[i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    fh.handle = words.to_vec();
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

/// The path (in our mount namespace) of inode `ino` of kernel device
/// `dev` with file handle `(handle_type, raw)`, opened through a mount of
/// that device in task `pid`'s mount table.
fn resolve(pid: RealPid, dev: u32, ino: u64, handle_type: i32, raw: &[u8]) -> Option<String> {
    let want = format!("{}:{}", dev >> 20, dev & 0xf_ffff);
    let mountinfo = crate::proc::read(pid.0, "mountinfo").ok()?;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(2) != Some(&want.as_str()) {
            continue;
        }
        let Some(point) = fields.get(4) else { continue };
        let root = crate::proc::path(pid.0, "root");
        let Ok(mount) = std::fs::File::open(root.join(point.trim_start_matches('/'))) else {
            continue;
        };
        let Ok(fd) = open_by_handle(mount.as_fd(), handle_type, raw) else {
            continue;
        };
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let Ok(path) = std::fs::read_link(&link) else {
            continue;
        };
        let path = path.to_string_lossy().into_owned();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.ino() == ino && path.starts_with('/') => return Some(path),
            _ => continue,
        }
    }
    None
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
        w.id = id;
        let bytes = raw.get(..w.f_handle.bytes as usize).unwrap_or(&raw);
        let path = resolve(pid, w.s_dev, w.i_ino, w.f_handle.r#type as i32, bytes).ok_or(
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
        assert_eq!(a.f_handle.handle.len(), HANDLE_WORDS);
        assert_eq!(a.f_handle.handle[0], 0x3c4a7);
        assert_eq!(raw.len(), 8);
        assert_eq!(w[1].0.f_handle.handle[0], 0xe3c1_9574_0098_c026);
        assert!(watches("inotify wd:1 ino:zz\n").is_err());
        assert!(watches("inotify wd:1 fhandle-bytes:8 f_handle:abc\n").is_err());
    }
}
