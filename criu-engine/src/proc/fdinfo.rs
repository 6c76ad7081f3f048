//! `/proc/<pid>/fdinfo/<fd>` (CRIU's `parse_fdinfo_pid`): position, file
//! status flags, mount id and inode, plus the kind-specific lines.

use super::ProcError;

/// The common fields of an `fdinfo` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// `pos:` file offset.
    pub pos: u64,
    /// `flags:` file status flags (octal in the file), including `O_CLOEXEC`.
    pub flags: u32,
    /// `mnt_id:`.
    pub mnt_id: i32,
    /// `ino:`.
    pub ino: u64,
    /// Whether an `eventfd-count:` line is present (an eventfd).
    pub eventfd: bool,
}

/// Parses one `fdinfo` file.
pub fn parse(text: &str) -> Result<FdInfo, ProcError> {
    let mut out = FdInfo::default();
    let mut seen = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let v = value.trim();
        let bad = || ProcError::parse("fdinfo", format!("{key} {v:?}"));
        match key {
            "pos" => {
                out.pos = v.parse().map_err(|_| bad())?;
                seen.0 = true;
            }
            "flags" => {
                out.flags = u32::from_str_radix(v, 8).map_err(|_| bad())?;
                seen.1 = true;
            }
            "mnt_id" => out.mnt_id = v.parse().map_err(|_| bad())?,
            "ino" => out.ino = v.parse().map_err(|_| bad())?,
            "eventfd-count" => out.eventfd = true,
            _ => {}
        }
    }
    if seen != (true, true) {
        return Err(ProcError::parse("fdinfo", "no pos or flags line"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file() {
        let i = parse("pos:\t1234\nflags:\t02100001\nmnt_id:\t24\nino:\t3\n").unwrap();
        assert_eq!(i.pos, 1234);
        assert_eq!(i.flags, 0o2100001);
        assert_eq!(i.mnt_id, 24);
        assert_eq!(i.ino, 3);
        assert!(!i.eventfd);
    }

    #[test]
    fn eventfd_and_garbage() {
        let i = parse("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:                5\neventfd-id: 7\n")
            .unwrap();
        assert!(i.eventfd);
        assert!(parse("flags:\t02\n").is_err());
        assert!(parse("pos:\tx\nflags:\t0\n").is_err());
    }
}
