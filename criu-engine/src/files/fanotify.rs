//! fanotify descriptors (CRIU's `criu/fsnotify.c` and the `fanotify`
//! lines of `parse_fdinfo_pid` in `criu/proc_parse.c`): the group's init
//! and event flags and its marks.
//!
//! An inode mark is kept with its file handle and the path the handle
//! opens to, as for inotify ([`super::fhandle`]); a mount mark with its
//! mount id and the mount point (without its leading `/`, as CRIU writes
//! it outside a mount namespace). Filesystem marks (`fanotify sdev:`
//! lines), which CRIU 4.2 does not know, fail the dump. Events queued at
//! dump time are lost, as in CRIU.
//!
//! # References
//!
//! - [fanotify(7)](https://man7.org/linux/man-pages/man7/fanotify.7.html)

use criu_proto::images::{
    FanotifyFileEntry, FanotifyInodeMarkEntry, FanotifyMarkEntry, FanotifyMountMarkEntry,
    FownEntry, MarkType,
};

use super::fhandle;
use crate::proc::ProcError;
use crate::pstree::RealPid;

/// A fanotify descriptor could not be described.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// The fdinfo of the fanotify could not be parsed.
    #[error("cannot read the marks of fanotify fd {fd} of task {pid}")]
    FdInfo {
        /// The task.
        pid: RealPid,
        /// The fanotify descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// A marked inode has no path.
    #[error(
        "task {pid}: fanotify fd {fd} marks inode {ino:#x} of device {dev:#x}, which no path reaches"
    )]
    NoPath {
        /// The task.
        pid: RealPid,
        /// The fanotify descriptor.
        fd: i32,
        /// Inode number.
        ino: u64,
        /// Kernel device number.
        dev: u32,
    },
    /// A marked mount is not in the task's mount table.
    #[error("task {pid}: fanotify fd {fd} marks mount {mnt_id}, which the task does not see")]
    NoMount {
        /// The task.
        pid: RealPid,
        /// The fanotify descriptor.
        fd: i32,
        /// Mount id.
        mnt_id: u32,
    },
    /// A filesystem mark.
    #[error(
        "task {pid}: fd {fd} is a fanotify with a filesystem mark, which cannot be dumped yet"
    )]
    FilesystemMark {
        /// The task.
        pid: RealPid,
        /// The fanotify descriptor.
        fd: i32,
    },
}

/// What the fdinfo of a fanotify says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    /// `fanotify flags:` and `event-flags:`.
    pub(crate) flags: (u32, u32),
    /// The marks, with the raw handle bytes of inode marks.
    pub(crate) marks: Vec<(FanotifyMarkEntry, Vec<u8>)>,
    /// Whether a filesystem mark is present.
    pub(crate) filesystem_mark: bool,
}

fn fields(line: &str) -> impl Iterator<Item = (&str, &str)> {
    line.split_whitespace().filter_map(|w| w.split_once(':'))
}

fn mark_line(line: &str, inode: bool) -> Option<(FanotifyMarkEntry, Vec<u8>)> {
    let mut m = FanotifyMarkEntry::default();
    let mut ino = 0;
    let mut mnt_id = 0;
    for (key, v) in fields(line) {
        let hex32 = || u32::from_str_radix(v, 16).ok();
        match key {
            "ino" => ino = u64::from_str_radix(v, 16).ok()?,
            "mnt_id" => mnt_id = hex32()?,
            "sdev" => m.s_dev = hex32()?,
            "mflags" => m.mflags = hex32()?,
            "mask" => m.mask = hex32()?,
            "ignored_mask" => m.ignored_mask = hex32()?,
            _ => {}
        }
    }
    let mut raw = Vec::new();
    if inode {
        let (f_handle, bytes) = fhandle::parse(line)?;
        raw = bytes;
        m.r#type = MarkType::Inode as i32;
        m.ie = Some(FanotifyInodeMarkEntry {
            i_ino: ino,
            f_handle,
        });
    } else {
        m.r#type = MarkType::Mount as i32;
        m.me = Some(FanotifyMountMarkEntry { mnt_id, path: None });
    }
    Some((m, raw))
}

/// Parses the fdinfo text of a fanotify.
pub(crate) fn parse(fdinfo: &str) -> Result<Parsed, ProcError> {
    let mut out = Parsed::default();
    let mut flags_seen = false;
    for line in fdinfo.lines() {
        let bad = || ProcError::parse("fdinfo", format!("{line:?}"));
        let Some(rest) = line.strip_prefix("fanotify ") else {
            continue;
        };
        if rest.starts_with("flags:") {
            for (key, v) in fields(rest) {
                let v = u32::from_str_radix(v, 16).map_err(|_| bad())?;
                match key {
                    "flags" => out.flags.0 = v,
                    "event-flags" => out.flags.1 = v,
                    _ => {}
                }
            }
            flags_seen = true;
        } else if rest.starts_with("ino:") {
            out.marks.push(mark_line(rest, true).ok_or_else(bad)?);
        } else if rest.starts_with("mnt_id:") {
            out.marks.push(mark_line(rest, false).ok_or_else(bad)?);
        } else if rest.starts_with("sdev:") {
            out.filesystem_mark = true;
        }
    }
    if !flags_seen {
        return Err(ProcError::parse("fdinfo", "no fanotify flags line"));
    }
    Ok(out)
}

/// Mount point and kernel device of mount `mnt_id` in task `pid`'s table.
fn mount_point(pid: RealPid, mnt_id: u32) -> Option<(String, u32)> {
    let text = crate::proc::read(pid.0, "mountinfo").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.first()?.parse::<u32>().ok()? != mnt_id {
            return None;
        }
        let (major, minor) = f.get(2)?.split_once(':')?;
        let dev = (major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?;
        Some((f.get(4)?.to_string(), dev))
    })
}

/// The entry of fanotify `fd` (file `id`, status `flags`) of task `pid`.
pub(crate) fn entry(
    pid: RealPid,
    fd: i32,
    id: u32,
    flags: u32,
    fdinfo: &str,
) -> Result<FanotifyFileEntry, FanotifyError> {
    let parsed = parse(fdinfo).map_err(|source| FanotifyError::FdInfo { pid, fd, source })?;
    if parsed.filesystem_mark {
        return Err(FanotifyError::FilesystemMark { pid, fd });
    }
    let mut marks = Vec::with_capacity(parsed.marks.len());
    for (mut m, raw) in parsed.marks {
        if let Some(ie) = m.ie.as_mut() {
            let path = fhandle::resolve(pid, m.s_dev, ie.i_ino, ie.f_handle.r#type as i32, &raw)
                .ok_or(FanotifyError::NoPath {
                    pid,
                    fd,
                    ino: ie.i_ino,
                    dev: m.s_dev,
                })?;
            ie.f_handle.path = Some(path);
        }
        if let Some(me) = m.me.as_mut() {
            let (point, dev) = mount_point(pid, me.mnt_id).ok_or(FanotifyError::NoMount {
                pid,
                fd,
                mnt_id: me.mnt_id,
            })?;
            me.path = Some(point.trim_start_matches('/').to_owned());
            m.s_dev = dev;
        }
        marks.push(m);
    }
    Ok(FanotifyFileEntry {
        id,
        flags,
        fown: FownEntry::default(),
        faflags: parsed.flags.0,
        evflags: parsed.flags.1,
        mark: marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_marks() {
        let text = "pos:\t0\nflags:\t04002\nfanotify flags:2 event-flags:8800\nfanotify ino:3c4a7 sdev:fe00000 mflags:0 mask:0 ignored_mask:8 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\nfanotify mnt_id:1b mflags:40 mask:20 ignored_mask:0\n";
        let p = parse(text).unwrap();
        assert_eq!(p.flags, (2, 0x8800));
        assert!(!p.filesystem_mark);
        assert_eq!(p.marks.len(), 2);
        let (ino, raw) = &p.marks[0];
        assert_eq!(ino.r#type, MarkType::Inode as i32);
        assert_eq!((ino.s_dev, ino.mask, ino.ignored_mask), (0xfe0_0000, 0, 8));
        assert_eq!(ino.ie.as_ref().unwrap().i_ino, 0x3c4a7);
        assert_eq!(raw.len(), 8);
        let (mnt, _) = &p.marks[1];
        assert_eq!(mnt.r#type, MarkType::Mount as i32);
        assert_eq!((mnt.mflags, mnt.mask), (0x40, 0x20));
        assert_eq!(mnt.me.as_ref().unwrap().mnt_id, 0x1b);
        let sb = parse("fanotify flags:0 event-flags:0\nfanotify sdev:fe00000 mflags:0 mask:2 ignored_mask:0\n").unwrap();
        assert!(sb.filesystem_mark);
        assert!(parse("pos:\t0\n").is_err());
        assert!(parse("fanotify flags:zz event-flags:0\n").is_err());
    }
}
