//! Regular files, directories and character devices as `reg_file_entry`
//! (CRIU's `criu/files-reg.c`, `dump_one_reg_file`).
//!
//! The entry keeps the path, the file status flags and position of a
//! descriptor (0 for the executable, mappings, cwd and root), `st_mode`,
//! and, for regular files not opened `O_WRONLY | O_APPEND`, the size and
//! the ELF GNU build-id that restore checks the file against.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};

use criu_proto::images::{FownEntry, RegFileEntry};

/// Bytes at the start of a file searched for the build-id note (CRIU maps
/// at most 1 MiB).
const BUILD_ID_SPAN: u64 = 1 << 20;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;

/// What CRIU's `should_check_size` says: no size (nor build-id) for files
/// opened write-only for appending, whose size changes all the time.
pub fn should_check_size(flags: u32) -> bool {
    !(flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 && flags & libc::O_APPEND as u32 != 0)
}

/// Builds the entry of file `id`. `open` gives read access to the file for
/// the build-id (`None`: none recorded).
pub fn entry(
    id: u32,
    name: &str,
    flags: u32,
    pos: u64,
    meta: &Metadata,
    open: Option<File>,
) -> RegFileEntry {
    let mut e = RegFileEntry {
        id,
        flags,
        pos,
        fown: FownEntry::default(),
        name: name.to_owned(),
        mode: Some(meta.mode()),
        ..Default::default()
    };
    if meta.mode() & libc::S_IFMT == libc::S_IFREG && should_check_size(flags) {
        e.size = Some(meta.size());
        if let Some(file) = open {
            let len = meta.size().min(BUILD_ID_SPAN);
            let mut head = vec![0u8; len as usize];
            if file.read_exact_at(&mut head, 0).is_ok() {
                if let Some(id) = build_id(&head) {
                    e.build_id = words(&id);
                }
            }
        }
    }
    e
}

/// Packs build-id bytes into little-endian words, zero padded.
fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

fn rd<const N: usize>(b: &[u8], off: u64) -> Option<[u8; N]> {
    let off = usize::try_from(off).ok()?;
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], off: u64) -> Option<u16> {
    rd::<2>(b, off).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    rd::<4>(b, off).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}

/// The GNU build-id of a little-endian ELF file whose first bytes are
/// `head` (CRIU's `get_build_id`): the descriptor of the first
/// `NT_GNU_BUILD_ID` note of a `PT_NOTE` segment.
#[doc(alias = "get_build_id")]
pub fn build_id(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() < 5 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(head, 0x20)?,
            u16_at(head, 0x36)?,
            u16_at(head, 0x38)?,
        )
    } else {
        (
            u64::from(u32_at(head, 0x1c)?),
            u16_at(head, 0x2a)?,
            u16_at(head, 0x2c)?,
        )
    };
    for i in 0..u64::from(phnum) {
        let ph = phoff + i * u64::from(phentsize);
        if u32_at(head, ph)? != PT_NOTE {
            continue;
        }
        let (off, size) = if is64 {
            (u64_at(head, ph + 8)?, u64_at(head, ph + 32)?)
        } else {
            (
                u64::from(u32_at(head, ph + 4)?),
                u64::from(u32_at(head, ph + 16)?),
            )
        };
        let end = off.saturating_add(size).min(head.len() as u64);
        let mut note = off;
        while note + 12 <= end {
            let namesz = u64::from(u32_at(head, note)?);
            let descsz = u64::from(u32_at(head, note + 4)?);
            let ntype = u32_at(head, note + 8)?;
            let desc = note + 12 + namesz.next_multiple_of(4);
            if ntype == NT_GNU_BUILD_ID {
                if descsz == 0 || descsz > 512 {
                    return None;
                }
                let start = usize::try_from(desc).ok()?;
                return head.get(start..start + descsz as usize).map(<[u8]>::to_vec);
            }
            note = desc + descsz.next_multiple_of(4);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_has_a_build_id_like_readelf() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let id = build_id(&exe[..exe.len().min(1 << 20)]);
        // Rust test binaries are linked with a GNU build-id by default.
        let id = id.expect("build-id note");
        assert!(id.len() == 20 || id.len() == 8 || id.len() == 16);
        let libc = std::fs::read("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert_eq!(build_id(&libc[..1 << 20]).map(|v| v.len()), Some(20));
    }

    #[test]
    fn non_elf_and_truncated() {
        assert_eq!(build_id(b"#!/bin/sh\n"), None);
        assert_eq!(build_id(b"\x7fELF\x02"), None);
    }

    #[test]
    fn words_are_little_endian_and_padded() {
        assert_eq!(words(&[1, 2, 3, 4, 5]), vec![0x0403_0201, 5]);
    }

    #[test]
    fn size_rules() {
        assert!(!should_check_size((libc::O_WRONLY | libc::O_APPEND) as u32));
        assert!(should_check_size(libc::O_RDONLY as u32));
        assert!(should_check_size((libc::O_RDWR | libc::O_APPEND) as u32));
        let meta = std::fs::metadata("/dev/null").unwrap();
        let e = entry(3, "/dev/null", 0o100002, 0, &meta, None);
        assert_eq!(e.mode, Some(0o20666));
        assert_eq!(e.size, None);
    }
}
