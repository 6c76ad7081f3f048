//! File locks held through the dumped descriptors: the `lock:` lines of
//! `/proc/<pid>/fdinfo/<fd>` become `file_lock_entry` records of
//! `filelocks.img` (CRIU's `parse_file_lock_buf` in `criu/proc_parse.c` and
//! `dump_file_locks` in `criu/file-lock.c`).
//!
//! The kernel lists, for each descriptor, the locks taken through its open
//! file description (POSIX locks only for the owning process). A lock seen
//! through a description already dumped (a `dup`, an inherited descriptor)
//! is the same lock and is kept once. Without `file_locks`, any held lock
//! fails the dump, as CRIU does; leases are not supported yet.

use criu_proto::images::FileLockEntry;
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

use crate::pstree::RealPid;

/// `FL_POSIX`, `FL_FLOCK`, `FL_OFD` of the image.
pub const FL_POSIX: u32 = 1;
/// BSD `flock`.
pub const FL_FLOCK: u32 = 2;
/// Open file description locks.
pub const FL_OFD: u32 = 4;

/// A file lock could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A lock is held and `file_locks` was not given.
    #[error(
        "task {pid}: fd {fd} holds a file lock ({line}); use the file_locks option to dump it"
    )]
    NotAllowed {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// The fdinfo line.
        line: String,
    },
    /// A lock of a kind the dump does not handle.
    #[error("task {pid}: fd {fd} holds a lock that cannot be dumped yet ({line})")]
    Unsupported {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// The fdinfo line.
        line: String,
    },
    /// An fdinfo `lock:` line could not be parsed.
    #[error("task {pid}: fd {fd}: unreadable lock line {line:?}")]
    Parse {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// The line.
        line: String,
    },
    /// `filelocks.img` could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The locks of a dump.
#[derive(Debug, Default)]
pub struct LockTable {
    allowed: bool,
    entries: Vec<FileLockEntry>,
}

/// One parsed `lock:` line: `(kind, type, start, len)`.
fn parse_line(line: &str) -> Option<Result<(u32, u32, i64, i64), ()>> {
    // "1: POSIX  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"
    let (_, rest) = line.split_once(':')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 7 {
        return Some(Err(()));
    }
    let kind = match f[0] {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        _ => return Some(Err(())),
    };
    if f[1] != "ADVISORY" {
        return Some(Err(()));
    }
    let ltype = match f[2] {
        "READ" => libc::F_RDLCK as u32,
        "WRITE" => libc::F_WRLCK as u32,
        _ => return Some(Err(())),
    };
    let Ok(start) = f[5].parse::<i64>() else {
        return Some(Err(()));
    };
    let len = match f[6] {
        "EOF" => 0,
        end => match end.parse::<i64>() {
            Ok(end) => end + 1 - start,
            Err(_) => return Some(Err(())),
        },
    };
    Some(Ok((kind, ltype, start, len)))
}

impl LockTable {
    /// Sets whether locks may be dumped (`file_locks`).
    pub fn configure(&mut self, allowed: bool) {
        self.allowed = allowed;
    }

    /// Notes the locks of descriptor `fd` of task `pid` (whose pid in the
    /// images is `vpid`), from its fdinfo `text`. `first` says whether its
    /// open file description is met for the first time.
    pub fn note(
        &mut self,
        pid: RealPid,
        vpid: u32,
        fd: i32,
        text: &str,
        first: bool,
    ) -> Result<(), LockError> {
        for line in text.lines().filter_map(|l| l.strip_prefix("lock:")) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !self.allowed {
                return Err(LockError::NotAllowed {
                    pid,
                    fd,
                    line: line.to_owned(),
                });
            }
            let (kind, ltype, start, len) = match parse_line(line) {
                Some(Ok(v)) => v,
                Some(Err(())) if line.contains("LEASE") || line.contains("MSNFS") => {
                    return Err(LockError::Unsupported {
                        pid,
                        fd,
                        line: line.to_owned(),
                    })
                }
                _ => {
                    return Err(LockError::Parse {
                        pid,
                        fd,
                        line: line.to_owned(),
                    })
                }
            };
            if !first && kind != FL_POSIX {
                continue;
            }
            self.entries.push(FileLockEntry {
                flag: kind,
                r#type: ltype,
                pid: vpid as i32,
                fd,
                start,
                len,
            });
        }
        Ok(())
    }

    /// Writes `filelocks.img` (only with `file_locks`, as CRIU).
    pub fn write(&self, dir: &ImagesDir) -> Result<(), LockError> {
        if self.allowed {
            dir.write_all(ImageKind::FileLocks, 0, &self.entries)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_parse_like_criu() {
        assert_eq!(
            parse_line("1: POSIX  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"),
            Some(Ok((FL_POSIX, 1, 0, 0)))
        );
        assert_eq!(
            parse_line("2: OFDLCK ADVISORY  READ  -1 00:2d:5678 10 19"),
            Some(Ok((FL_OFD, 0, 10, 10)))
        );
        assert_eq!(
            parse_line("3: FLOCK  ADVISORY  WRITE 99 00:2d:5678 0 EOF"),
            Some(Ok((FL_FLOCK, 1, 0, 0)))
        );
        assert_eq!(
            parse_line("4: LEASE  ACTIVE    READ 99 00:2d:5678 0 EOF"),
            Some(Err(()))
        );
    }

    #[test]
    fn locks_without_the_option_fail() {
        let mut t = LockTable::default();
        let text = "pos:\t0\nflags:\t02\nlock:\t1: FLOCK  ADVISORY  WRITE 9 00:2d:5 0 EOF\n";
        let err = t.note(RealPid(9), 9, 3, text, true).unwrap_err();
        assert!(
            err.to_string().contains("use the file_locks option"),
            "{err}"
        );
        t.configure(true);
        t.note(RealPid(9), 9, 3, text, true).unwrap();
        t.note(RealPid(9), 9, 4, text, false).unwrap();
        assert_eq!(t.entries.len(), 1);
    }
}
