//! File locks of the restored tasks (CRIU's `prepare_file_locks` and
//! `restore_file_lock` in `criu/file-lock.c`).
//!
//! Read from `filelocks.img` only with `file_locks`. Each lock is taken
//! again by its task, with injected syscalls, once its descriptors are in
//! place: `flock` for BSD locks, `F_SETLK` for POSIX locks (owned by the
//! process) and `F_OFD_SETLK` for open file description locks. The lock is
//! requested without waiting: a conflicting lock taken since the dump fails
//! the restore instead of hanging it.

use criu_proto::images::FileLockEntry;
use criu_proto::img::{ImageKind, ImagesDir};

use super::images::{read_error, ImagesError};
use super::mm::{MmError, Remote};
use crate::files::lock::{FL_FLOCK, FL_OFD, FL_POSIX};

/// `F_OFD_SETLK`.
const F_OFD_SETLK: u64 = 37;

/// The locks of `dir` if `enabled` (`file_locks`), else none.
pub(crate) fn load(dir: &ImagesDir, enabled: bool) -> Result<Vec<FileLockEntry>, ImagesError> {
    if !enabled {
        return Ok(Vec::new());
    }
    dir.read_all(ImageKind::FileLocks, 0)
        .map_err(|source| read_error(ImageKind::FileLocks, 0, source))
}

/// A `struct flock` as x86-64 lays it out.
fn flock_bytes(l: &FileLockEntry) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..2].copy_from_slice(&(l.r#type as i16).to_ne_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
    b[8..16].copy_from_slice(&l.start.to_ne_bytes());
    b[16..24].copy_from_slice(&l.len.to_ne_bytes());
    b
}

/// Takes again, in the task `r` runs in, every lock of `locks` whose pid
/// is `pid` (its pid in the images).
pub(crate) fn restore(
    r: &Remote<'_, '_>,
    pid: u32,
    locks: &[FileLockEntry],
) -> Result<(), MmError> {
    for l in locks.iter().filter(|l| l.pid as u32 == pid) {
        let fd = l.fd as u64;
        let bad = || MmError::Syscall {
            pid: r.pid,
            step: "take a file lock of an unknown kind",
            addr: fd,
            source: nix::errno::Errno::EINVAL,
        };
        if l.flag & FL_FLOCK != 0 {
            let op = match l.r#type as i32 {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                _ => return Err(bad()),
            } | libc::LOCK_NB;
            r.call("take a flock lock", fd, libc::SYS_flock, &[fd, op as u64])?;
        } else if l.flag & (FL_POSIX | FL_OFD) != 0 {
            let addr = r.scratch("copy a struct flock", 0, &flock_bytes(l))?;
            let cmd = if l.flag & FL_OFD != 0 {
                F_OFD_SETLK
            } else {
                libc::F_SETLK as u64
            };
            r.call(
                "take a POSIX or OFD lock",
                fd,
                libc::SYS_fcntl,
                &[fd, cmd, addr],
            )?;
        } else {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_layout_matches_libc() {
        let l = FileLockEntry {
            flag: FL_POSIX,
            r#type: libc::F_WRLCK as u32,
            pid: 1,
            fd: 3,
            start: 10,
            len: 20,
        };
        assert_eq!(std::mem::size_of::<libc::flock>(), 32);
        let b = flock_bytes(&l);
        assert_eq!(i16::from_ne_bytes([b[0], b[1]]), libc::F_WRLCK as i16);
        assert_eq!(i64::from_ne_bytes(b[8..16].try_into().unwrap()), 10);
        assert_eq!(i64::from_ne_bytes(b[16..24].try_into().unwrap()), 20);
    }
}
