//! `/proc/<pid>/smaps`: the mapping lines plus each mapping's `VmFlags`
//! (CRIU's `parse_smaps`, `__parse_vmflags`).

use super::maps::MapsLine;
use super::ProcError;

/// One mapping of `smaps` with the flags the dump needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsVma {
    /// The header line.
    pub maps: MapsLine,
    /// The two-letter tokens of its `VmFlags:` line.
    pub vm_flags: Vec<[u8; 2]>,
}

impl SmapsVma {
    /// Whether `VmFlags` holds `flag` (such as `b"gd"`).
    pub fn has_flag(&self, flag: &[u8; 2]) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }
}

/// Parses a whole `smaps` file.
pub fn parse(text: &str) -> Result<Vec<SmapsVma>, ProcError> {
    let mut out: Vec<SmapsVma> = Vec::new();
    for line in text.lines() {
        if MapsLine::is_range(line) {
            out.push(SmapsVma {
                maps: MapsLine::parse(line)?,
                vm_flags: Vec::new(),
            });
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            let vma = out
                .last_mut()
                .ok_or_else(|| ProcError::parse("smaps", "VmFlags before any mapping"))?;
            vma.vm_flags = flags
                .split_ascii_whitespace()
                .filter_map(|t| <[u8; 2]>::try_from(t.as_bytes()).ok())
                .collect();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
5651ae061000-5651ae082000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                   8 kB
VmFlags: rd wr mr mw me ac sd 
7eff8e5c4000-7eff8e5c8000 r--p 00000000 00:00 0                          [vvar]
Size:                 16 kB
VmFlags: rd mr pf io de dd sd 
7ffe06775000-7ffe06796000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
VmFlags: rd wr mr mw me gd ac 
";

    #[test]
    fn parses_blocks_and_flags() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].maps.path, "[heap]");
        assert!(v[0].has_flag(b"ac"));
        assert!(!v[0].has_flag(b"gd"));
        assert!(v[1].has_flag(b"io") && v[1].has_flag(b"pf") && v[1].has_flag(b"dd"));
        assert!(v[2].has_flag(b"gd"));
    }

    #[test]
    fn flags_without_mapping_is_an_error() {
        assert!(parse("VmFlags: rd\n").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
