//! Kernel file handles of watched inodes (CRIU's `parse_fhandle_encoded`
//! in `criu/proc_parse.c` and `alloc_openable` in `criu/fsnotify.c`): the
//! handle an fsnotify fdinfo line shows, and the path it opens to.
//!
//! # References
//!
//! - [open_by_handle_at(2)](https://man7.org/linux/man-pages/man2/open_by_handle_at.2.html)

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use criu_proto::images::FhEntry;

use crate::pstree::RealPid;
use crate::sys::anon_fd::open_by_handle;

/// Words of a stored file handle (`fh_entry_sizes.min_entries`).
const HANDLE_WORDS: usize = 16;

/// The file handle of an fdinfo line (`fhandle-bytes:`, `fhandle-type:`,
/// `f_handle:`): the entry (bytes packed into 16 little-endian words, as
/// CRIU stores them) and the raw bytes.
pub(crate) fn parse(line: &str) -> Option<(FhEntry, Vec<u8>)> {
    let mut fh = FhEntry::default();
    let mut raw = Vec::new();
    for word in line.split_whitespace() {
        let Some((key, v)) = word.split_once(':') else {
            continue;
        };
        let hex32 = || u32::from_str_radix(v, 16).ok();
        match key {
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
    raw.truncate(fh.bytes as usize);
    Some((fh, raw))
}

/// The path (in our mount namespace) of inode `ino` of kernel device
/// `dev` with file handle `(handle_type, raw)`, opened through a mount of
/// that device in task `pid`'s mount table.
pub(crate) fn resolve(
    pid: RealPid,
    dev: u32,
    ino: u64,
    handle_type: i32,
    raw: &[u8],
) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_bytes_pack_little_endian() {
        let (fh, raw) =
            parse("x fhandle-bytes:8 fhandle-type:1 f_handle:26c098007495c1e3").unwrap();
        assert_eq!((fh.bytes, fh.r#type, raw.len()), (8, 1, 8));
        assert_eq!(fh.handle.len(), HANDLE_WORDS);
        assert_eq!(fh.handle[0], 0xe3c1_9574_0098_c026);
        assert!(parse("fhandle-bytes:8 f_handle:abc").is_none());
        assert!(parse("fhandle-bytes:9 f_handle:26c098007495c1e3").is_none());
    }
}
