//! VMAs of a task in CRIU's `vma_entry` form (CRIU's `parse_smaps`,
//! `handle_vma`, `criu/include/image.h` status bits).
//!
//! Each `/proc/<pid>/smaps` block becomes one entry: protection from the
//! permission letters, `MAP_*` flags from the sharing letter and `VmFlags`,
//! `madvise` bits from `VmFlags`, and a status saying what the mapping is
//! (regular, private/shared file, private anonymous, heap, vDSO, vvar,
//! vsyscall, shared anonymous, memfd). `[vvar]` and `[vvar_vclock]` are
//! merged into one entry. Mappings the dump cannot handle yet (SysV shm,
//! which CRIU dumps only with an IPC namespace, device memory, AIO rings,
//! hugetlb, shadow stacks) are refused with the VMA named. Unlinked mapped
//! files are saved as ghost files by the file table.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use criu_proto::images::VmaEntry;

use crate::proc::smaps::SmapsVma;
use crate::proc::ProcError;

/// CRIU's `VMA_*` status bits (an image ABI).
pub mod status {
    /// Restored as a regular mapping.
    pub const REGULAR: u32 = 1 << 0;
    /// Defined, never set by current dumps.
    pub const STACK: u32 = 1 << 1;
    /// `[vsyscall]`.
    pub const VSYSCALL: u32 = 1 << 2;
    /// `[vdso]`.
    pub const VDSO: u32 = 1 << 3;
    /// `[heap]`.
    pub const HEAP: u32 = 1 << 5;
    /// Private file mapping.
    pub const FILE_PRIVATE: u32 = 1 << 6;
    /// Shared file mapping.
    pub const FILE_SHARED: u32 = 1 << 7;
    /// Shared anonymous memory.
    pub const ANON_SHARED: u32 = 1 << 8;
    /// Private anonymous memory.
    pub const ANON_PRIVATE: u32 = 1 << 9;
    /// `[vvar]` / `[vvar_vclock]`.
    pub const VVAR: u32 = 1 << 12;
    /// AIO ring.
    pub const AIORING: u32 = 1 << 13;
    /// Mapping of a memfd.
    pub const MEMFD: u32 = 1 << 14;
}

/// `MAP_DROPPABLE` (Linux 6.11), not in every libc.
const MAP_DROPPABLE: u32 = 0x08;

/// A VMA could not be described.
#[derive(Debug, thiserror::Error)]
pub enum VmaError {
    /// `/proc/<pid>/smaps` could not be read or parsed.
    #[error("cannot read the mappings of task {pid}")]
    Smaps {
        /// The task.
        pid: i32,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// The `map_files` link of a mapping could not be examined.
    #[error("cannot examine mapping {start:#x}-{end:#x} of task {pid} through map_files")]
    MapFiles {
        /// The task.
        pid: i32,
        /// Start of the VMA.
        start: u64,
        /// End of the VMA.
        end: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A kind of mapping the dump does not support yet.
    #[error("task {pid}: mapping {start:#x}-{end:#x} ({what}) is not supported yet")]
    Unsupported {
        /// The task.
        pid: i32,
        /// Start of the VMA.
        start: u64,
        /// End of the VMA.
        end: u64,
        /// What it is.
        what: String,
    },
    /// Two `[vvar]` pieces that do not touch.
    #[error("task {pid}: non-adjacent vvar mappings at {start:#x}")]
    SplitVvar {
        /// The task.
        pid: i32,
        /// Start of the second piece.
        start: u64,
    },
}

/// The file behind a file mapping, as seen through `map_files`.
#[derive(Debug, Clone)]
pub struct MappedFile {
    /// Path shown in `smaps`.
    pub path: String,
    /// `/proc/<pid>/map_files/<start>-<end>`, openable by root.
    pub link: PathBuf,
    /// `stat` of the mapped file.
    pub meta: std::fs::Metadata,
}

/// One VMA: its image entry and, for file mappings, the file (whose
/// `files.img` id goes into `entry.shmid` once allocated).
#[derive(Debug, Clone)]
pub struct Vma {
    /// The entry written to `mm-<pid>.img`.
    pub entry: VmaEntry,
    /// The mapped file, if any.
    pub file: Option<MappedFile>,
    /// Registered with a userfaultfd in write-protect mode (`uw` in
    /// `VmFlags`).
    pub uffd_wp: bool,
}

impl Vma {
    /// Whether the status has all of `bits`.
    pub fn is(&self, bits: u32) -> bool {
        self.entry.status & bits == bits
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.entry.end - self.entry.start
    }

    /// Whether the VMA is empty (never, for a real mapping).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// CRIU's `vma_area_is_private`: a VMA whose pages go to the task's
    /// pagemap.
    pub fn is_private(&self) -> bool {
        self.is(status::REGULAR)
            && (self.is(status::ANON_PRIVATE) || self.is(status::FILE_PRIVATE))
            && self.entry.end <= TASK_SIZE
    }

    /// CRIU's `vma_entry_can_be_lazy`: pages that may be restored on demand.
    pub fn can_be_lazy(&self) -> bool {
        let f = self.entry.flags;
        f & libc::MAP_ANONYMOUS as u32 != 0
            && f & libc::MAP_PRIVATE as u32 != 0
            && f & libc::MAP_LOCKED as u32 == 0
            && f & libc::MAP_HUGETLB as u32 == 0
            && self.entry.status & (status::VDSO | status::VVAR | status::VSYSCALL) == 0
    }
}

/// Top of the x86-64 user address space (4-level paging).
pub const TASK_SIZE: u64 = (1 << 47) - 4096;

/// `madvise` bit of each `VmFlags` token.
const MADV_FLAGS: &[(&[u8; 2], i32)] = &[
    (b"sr", libc::MADV_SEQUENTIAL),
    (b"rr", libc::MADV_RANDOM),
    (b"dc", libc::MADV_DONTFORK),
    (b"dd", libc::MADV_DONTDUMP),
    (b"mg", libc::MADV_MERGEABLE),
    (b"hg", libc::MADV_HUGEPAGE),
    (b"nh", libc::MADV_NOHUGEPAGE),
    (b"wf", libc::MADV_WIPEONFORK),
];

/// Describes every VMA of task `pid`, in address order.
#[doc(alias = "parse_smaps")]
pub fn collect(pid: i32) -> Result<Vec<Vma>, VmaError> {
    let smaps = crate::proc::read(pid, "smaps")
        .and_then(|t| crate::proc::smaps::parse(&t))
        .map_err(|source| VmaError::Smaps { pid, source })?;
    let mut out: Vec<Vma> = Vec::with_capacity(smaps.len());
    for s in &smaps {
        let vma = describe(pid, s)?;
        if let Some(prev) = out.last_mut() {
            if vma.is(status::VVAR) && prev.is(status::VVAR) {
                if prev.entry.end != vma.entry.start {
                    return Err(VmaError::SplitVvar {
                        pid,
                        start: vma.entry.start,
                    });
                }
                prev.entry.end = vma.entry.end;
                continue;
            }
        }
        out.push(vma);
    }
    Ok(out)
}

fn describe(pid: i32, s: &SmapsVma) -> Result<Vma, VmaError> {
    let m = &s.maps;
    let unsupported = |what: &str| VmaError::Unsupported {
        pid,
        start: m.start,
        end: m.end,
        what: what.to_owned(),
    };
    let mut e = VmaEntry {
        start: m.start,
        end: m.end,
        pgoff: m.pgoff,
        shmid: 0,
        prot: m.prot,
        flags: if m.shared {
            libc::MAP_SHARED as u32
        } else {
            libc::MAP_PRIVATE as u32
        },
        status: 0,
        fd: -1,
        madv: None,
        fdflags: None,
    };
    let mut madv = 0u64;
    for (tok, bit) in MADV_FLAGS {
        if s.has_flag(tok) {
            madv |= 1 << bit;
        }
    }
    for (tok, flag) in [
        (b"gd", libc::MAP_GROWSDOWN as u32),
        (b"lo", libc::MAP_LOCKED as u32),
        (b"nr", libc::MAP_NORESERVE as u32),
    ] {
        if s.has_flag(tok) {
            e.flags |= flag;
        }
    }
    if s.has_flag(b"ht") {
        return Err(unsupported("hugetlb memory"));
    }
    if s.has_flag(b"ss") {
        return Err(unsupported("shadow stack"));
    }
    if s.has_flag(b"dp") {
        e.flags = (e.flags & !(libc::MAP_PRIVATE as u32)) | MAP_DROPPABLE;
    }
    e.madv = (madv != 0).then_some(madv);

    let link = crate::proc::path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
    let map_err = |source| VmaError::MapFiles {
        pid,
        start: m.start,
        end: m.end,
        source,
    };
    let link_meta = match std::fs::symlink_metadata(&link) {
        Ok(meta) => Some(meta),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(map_err(err)),
    };
    if let Some(lm) = &link_meta {
        e.fdflags = Some(match lm.mode() & 0o600 {
            0o200 => libc::O_WRONLY as u32,
            0o600 => libc::O_RDWR as u32,
            _ => libc::O_RDONLY as u32,
        });
    }

    let io_pf = s.has_flag(b"io") || s.has_flag(b"pf");
    let mut file = None;
    match m.path.as_str() {
        "[vsyscall]" => e.status |= status::VSYSCALL,
        "[vdso]" => e.status |= status::REGULAR | status::VDSO,
        "[vvar]" | "[vvar_vclock]" => e.status |= status::REGULAR | status::VVAR,
        "[heap]" => e.status |= status::REGULAR | status::HEAP,
        "[uprobes]" => return Err(unsupported("uprobes area")),
        _ => e.status |= status::REGULAR,
    }
    if io_pf && e.status & status::VVAR == 0 {
        return Err(unsupported("VM_IO/VM_PFNMAP device memory"));
    }
    if link_meta.is_some() && m.shared && m.path.starts_with("/dev/zero") {
        // Shared anonymous memory: a shmem object, named by its inode.
        let meta = std::fs::metadata(&link).map_err(map_err)?;
        e.status |= status::ANON_SHARED;
        e.flags |= libc::MAP_ANONYMOUS as u32;
        e.shmid = meta.ino();
    } else if link_meta.is_some() {
        let p = m.path.as_str();
        if p.starts_with("/SYSV") {
            return Err(unsupported(&format!(
                "SysV IPC shared memory {p}, which is dumped only with the task's own IPC \
                 namespace"
            )));
        }
        if p.starts_with("/dev/zero") {
            return Err(unsupported(&format!("shared memory {p}")));
        }
        let meta = std::fs::metadata(&link).map_err(map_err)?;
        if meta.mode() & libc::S_IFMT != libc::S_IFREG {
            return Err(unsupported(&format!("mapping of non-regular file {p}")));
        }
        if p.starts_with("/memfd:") {
            if crate::files::memfd::memfd_name(p, &meta).is_none() {
                return Err(unsupported(&format!("memfd mapping {p} (hugetlb?)")));
            }
            e.status |= status::MEMFD;
        }
        e.status |= if m.shared {
            status::FILE_SHARED
        } else {
            status::FILE_PRIVATE
        };
        file = Some(MappedFile {
            path: m.path.clone(),
            link,
            meta,
        });
    } else if m.path.starts_with("/aio") {
        return Err(unsupported("AIO ring"));
    } else {
        if m.shared {
            return Err(unsupported("shared anonymous memory"));
        }
        e.status |= status::ANON_PRIVATE;
        e.flags |= libc::MAP_ANONYMOUS as u32;
    }
    Ok(Vma {
        entry: e,
        file,
        uffd_wp: s.has_flag(b"uw"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Vec<Vma> {
        collect(std::process::id() as i32).expect("own VMAs")
    }

    #[test]
    fn own_mappings_have_criu_statuses() {
        let vmas = own();
        assert!(vmas.windows(2).all(|w| w[0].entry.end <= w[1].entry.start));
        let vdso = vmas.iter().find(|v| v.is(status::VDSO)).expect("vdso");
        assert_eq!(vdso.entry.status, 0x209);
        assert_eq!(vdso.entry.flags, 0x22);
        let vvars: Vec<_> = vmas.iter().filter(|v| v.is(status::VVAR)).collect();
        assert_eq!(vvars.len(), 1, "vvar pieces merged");
        assert_eq!(vvars[0].entry.status, 0x1201);
        assert_eq!(vvars[0].entry.madv, Some(1 << libc::MADV_DONTDUMP));
        let stack = vmas
            .iter()
            .find(|v| v.entry.flags & libc::MAP_GROWSDOWN as u32 != 0)
            .expect("main stack");
        assert_eq!(stack.entry.status, 0x201);
        assert_eq!(stack.entry.flags, 0x122);
        assert!(stack.entry.fdflags.is_none());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let text = vmas
            .iter()
            .find(|v| {
                v.file
                    .as_ref()
                    .is_some_and(|f| f.path == exe.to_str().unwrap())
            })
            .expect("executable mapped");
        assert_eq!(text.entry.status, 0x41);
        assert_eq!(text.entry.fdflags, Some(0));
        assert_eq!(text.entry.flags, libc::MAP_PRIVATE as u32);
        assert!(text.is_private() && !text.can_be_lazy());
        if let Some(vs) = vmas.iter().find(|v| v.is(status::VSYSCALL)) {
            assert_eq!(vs.entry.status, 0x204);
            assert!(!vs.is_private());
        }
    }

    #[test]
    fn vanished_task_is_an_error() {
        assert!(matches!(collect(i32::MAX), Err(VmaError::Smaps { .. })));
    }
}
