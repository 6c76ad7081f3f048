//! One line of `/proc/<pid>/maps` (the header line of each `smaps` block).
//!
//! ```text
//! 7eff8e5bd000-7eff8e5bf000 rw-p 00000000 fe:00 5550371    /path/to/file
//! start        end          perms offset  dev   inode      path
//! ```

use super::{hex, ProcError};

/// A parsed mapping line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    /// First address.
    pub start: u64,
    /// First address after the mapping.
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
    /// File offset in bytes.
    pub pgoff: u64,
    /// Device major of the mapped file.
    pub dev_major: u32,
    /// Device minor of the mapped file.
    pub dev_minor: u32,
    /// Inode of the mapped file (0 for anonymous memory).
    pub ino: u64,
    /// Path or pseudo-name (`[heap]`, `[vdso]`...), empty for anonymous memory.
    pub path: String,
}

impl MapsLine {
    /// Whether `line` starts like a mapping line (`hex-hex `), as opposed
    /// to one of the `Key: value` lines of `smaps`.
    pub fn is_range(line: &str) -> bool {
        let Some((range, _)) = line.split_once(' ') else {
            return false;
        };
        match range.split_once('-') {
            Some((a, b)) => {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_hexdigit())
            }
            None => false,
        }
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<MapsLine, ProcError> {
        let bad = || ProcError::parse("maps", format!("bad line {line:?}"));
        let mut rest = line;
        let mut field = || -> Result<&str, ProcError> {
            let r = rest.trim_start_matches(' ');
            let end = r.find(' ').unwrap_or(r.len());
            let (f, tail) = r.split_at(end);
            rest = tail;
            if f.is_empty() {
                Err(bad())
            } else {
                Ok(f)
            }
        };
        let range = field()?;
        let perms = field()?.as_bytes().to_vec();
        let pgoff = field()?;
        let dev = field()?;
        let ino = field()?;
        let path = rest
            .trim_start_matches(' ')
            .trim_end_matches('\n')
            .to_owned();
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
        if perms.len() != 4 {
            return Err(bad());
        }
        let mut prot = 0;
        if perms[0] == b'r' {
            prot |= libc::PROT_READ as u32;
        }
        if perms[1] == b'w' {
            prot |= libc::PROT_WRITE as u32;
        }
        if perms[2] == b'x' {
            prot |= libc::PROT_EXEC as u32;
        }
        let shared = match perms[3] {
            b's' => true,
            b'p' => false,
            _ => return Err(bad()),
        };
        Ok(MapsLine {
            start: hex("maps", start)?,
            end: hex("maps", end)?,
            prot,
            shared,
            pgoff: hex("maps", pgoff)?,
            dev_major: hex("maps", major)? as u32,
            dev_minor: hex("maps", minor)? as u32,
            ino: ino.parse().map_err(|_| bad())?,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_line() {
        let l = MapsLine::parse(
            "7eff8e3dd000-7eff8e533000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(l.start, 0x7eff8e3dd000);
        assert_eq!(l.end, 0x7eff8e533000);
        assert_eq!(l.prot, (libc::PROT_READ | libc::PROT_EXEC) as u32);
        assert!(!l.shared);
        assert_eq!(l.pgoff, 0x26000);
        assert_eq!((l.dev_major, l.dev_minor, l.ino), (0xfe, 0, 326279));
        assert_eq!(l.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    }

    #[test]
    fn anonymous_and_special() {
        let l = MapsLine::parse("7eff8e5c0000-7eff8e5c2000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(l.path, "");
        assert_eq!(l.ino, 0);
        let v = MapsLine::parse(
            "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
        )
        .unwrap();
        assert_eq!(v.prot, libc::PROT_EXEC as u32);
        assert_eq!(v.path, "[vsyscall]");
        let s = MapsLine::parse("7f00-7f01 rw-s 00000000 00:01 1069 /memfd:x (deleted)").unwrap();
        assert!(s.shared);
        assert_eq!(s.path, "/memfd:x (deleted)");
    }

    #[test]
    fn range_detection_and_errors() {
        assert!(MapsLine::is_range(
            "7eff8e5c0000-7eff8e5c2000 rw-p 0 00:00 0"
        ));
        assert!(!MapsLine::is_range("VmFlags: rd wr mr mw me ac sd"));
        assert!(!MapsLine::is_range("Rss:                   4 kB"));
        assert!(MapsLine::parse("7f00-7f01 rw-x 0 00:00 0").is_err());
        assert!(MapsLine::parse("garbage").is_err());
    }
}
