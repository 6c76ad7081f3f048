//! The address space of the restored task, rebuilt from outside with
//! injected syscalls (CRIU's `prepare_mm`/`premap_priv_vmas`/
//! `restore_priv_vma_content` in `criu/mem.c`, the VMA loop, `vdso_remap`
//! and `PR_SET_MM_MAP` of `criu/pie/restorer.c`, and `criu/vdso.c`).
//!
//! Order: drop the task's rseq registration (its area is about to vanish),
//! unmap everything but the stub and the vDSO/vvar, move the vDSO/vvar to
//! their dumped addresses ([`vdso`]), map every dumped VMA (private ones writable for
//! now), copy the saved pages once with `process_vm_writev` from a mapping of
//! `pages-<id>.img`, set the final protections and advice, then
//! `PR_SET_MM_MAP`.
//!
//! # References
//!
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html),
//!   [mremap(2)](https://man7.org/linux/man-pages/man2/mremap.2.html),
//!   [process_vm_writev(2)](https://man7.org/linux/man-pages/man2/process_vm_writev.2.html),
//!   [PR_SET_MM](https://man7.org/linux/man-pages/man2/PR_SET_MM.2const.html),
//!   [rseq(2)](https://docs.kernel.org/userspace-api/rseq.html)

mod fill;
mod premap;
mod vdso;

pub(crate) use premap::{Diffs, Premaps};

use super::shmem::{is_shared_anon, SharedMemory};
use std::collections::HashMap;

use criu_proto::images::VmaEntry;
use nix::errno::Errno;

use super::images::{
    is_private, TaskImages, VMA_AREA_MEMFD, VMA_AREA_REGULAR, VMA_AREA_VDSO, VMA_AREA_VSYSCALL,
    VMA_AREA_VVAR, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};
use crate::arch::x86_64::nr;
use crate::arch::x86_64::RemoteAddr;
use crate::inject::{InjectError, Injection};
use crate::pstree::RealPid;
use crate::seize::{SeizeError, SeizedTask};
use crate::sys::file_map::FileMap;

/// Room reserved for the injection stub (it must not meet any VMA, current
/// or dumped).
const STUB_ROOM: u64 = 4 << 20;
/// Lowest address tried for the stub and for parking the vDSO.
const LOW_ADDR: u64 = 1 << 32;
/// End of the 47-bit user address space.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// `RSEQ_FLAG_UNREGISTER`.
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// `PR_SET_MM`, `PR_SET_MM_MAP`.
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
/// `MAP_FIXED`, `MAP_ANONYMOUS`, `MAP_SHARED`, `MAP_PRIVATE` and the flags we pass
/// on from images.
const MAP_FIXED: u64 = 0x10;
const MAP_KEEP: u32 = 0x1 | 0x2 | 0x8 | 0x20 | 0x100 | 0x2000 | 0x4000;

/// Errors of rebuilding the address space.
#[derive(Debug, thiserror::Error)]
pub enum MmError {
    /// `/proc/<pid>/maps` cannot be read.
    #[error("cannot read the mappings of task {pid}")]
    Maps {
        /// Task.
        pid: RealPid,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No free place for the injection stub.
    #[error("no room for the injection stub in task {pid}")]
    NoRoom {
        /// Task.
        pid: RealPid,
    },
    /// The injection itself failed.
    #[error("task {pid}: injection failed while trying to {step}")]
    Inject {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// An injected syscall failed.
    #[error("task {pid}: cannot {step} at {addr:#x}")]
    Syscall {
        /// Task.
        pid: RealPid,
        /// Step.
        step: &'static str,
        /// Address or value involved.
        addr: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The vDSO of this kernel cannot stand in for the dumped one.
    #[error("task {pid}: the vDSO cannot be restored ({reason})")]
    Vdso {
        /// Task.
        pid: RealPid,
        /// Why.
        reason: &'static str,
    },
    /// Task memory cannot be read.
    #[error("task {pid}: cannot read its memory")]
    ReadMem {
        /// Task.
        pid: RealPid,
        /// Cause.
        #[source]
        source: SeizeError,
    },
    /// The pages image cannot be mapped.
    #[error("cannot map {image}")]
    MapPages {
        /// Image.
        image: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The lazy VMAs cannot be handed to the lazy-pages daemon.
    #[error(transparent)]
    Lazy(#[from] super::lazy::LazyRestoreError),
    /// Pages cannot be written into the task.
    #[error("task {pid}: cannot write pages at {addr:#x}")]
    WritePages {
        /// Task.
        pid: RealPid,
        /// First address of the failing batch.
        addr: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapsLine {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) name: String,
}

/// Parses `/proc/<pid>/maps` text (`start-end perms offset dev inode name`).
pub(crate) fn parse_maps(text: &str) -> Vec<MapsLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let range = parts.next()?;
            let (s, e) = range.split_once('-')?;
            let name = parts.nth(4).unwrap_or("").trim_start().to_owned();
            Some(MapsLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                name,
            })
        })
        .collect()
}

fn read_maps(pid: RealPid) -> Result<Vec<MapsLine>, MmError> {
    read_maps_of(&pid.to_string()).map_err(|source| MmError::Maps { pid, source })
}

/// `/proc/<who>/maps`, parsed.
fn read_maps_of(who: &str) -> std::io::Result<Vec<MapsLine>> {
    std::fs::read_to_string(format!("/proc/{who}/maps")).map(|t| parse_maps(&t))
}

fn is_vdso_name(name: &str) -> bool {
    matches!(name, "[vdso]" | "[vvar]" | "[vvar_vclock]")
}

/// First gap of `len` bytes above [`LOW_ADDR`] that meets none of `busy`.
pub(crate) fn free_gap(busy: &mut [(u64, u64)], len: u64) -> Option<u64> {
    busy.sort_unstable();
    let mut addr = LOW_ADDR;
    for &(s, e) in busy.iter() {
        if e <= addr {
            continue;
        }
        if s >= addr.checked_add(len)? {
            break;
        }
        addr = addr.max(e);
    }
    (addr.checked_add(len)? <= TASK_SIZE).then_some(addr)
}

/// Where to put the injection stub in task `pid`: free now and in the
/// dumped layout.
pub(crate) fn stub_place(pid: RealPid, images: &TaskImages) -> Result<RemoteAddr, MmError> {
    let mut busy: Vec<(u64, u64)> = read_maps(pid)?
        .iter()
        .map(|m| (m.start, m.end))
        .chain(images.mm.vmas.iter().map(|v| (v.start, v.end)))
        .collect();
    free_gap(&mut busy, STUB_ROOM)
        .map(RemoteAddr)
        .ok_or(MmError::NoRoom { pid })
}

/// One call of [`Remote::batch`]: what it does, the address or value
/// named in its error, the syscall number and its arguments.
pub(crate) type RemoteCall = (&'static str, u64, i64, Vec<u64>);

/// Injected syscalls with this module's error context.
pub(crate) struct Remote<'a, 't> {
    pub(crate) inj: &'a Injection<'t>,
    pub(crate) pid: RealPid,
}

impl Remote<'_, '_> {
    /// Runs `nr` and turns a negative result into [`MmError::Syscall`].
    pub(crate) fn call(
        &self,
        step: &'static str,
        addr: u64,
        nr: i64,
        args: &[u64],
    ) -> Result<u64, MmError> {
        let ret = self
            .inj
            .syscall(nr, args)
            .map_err(|source| MmError::Inject {
                pid: self.pid,
                step,
                source,
            })?;
        if ret < 0 {
            return Err(MmError::Syscall {
                pid: self.pid,
                step,
                addr,
                source: Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)),
            });
        }
        Ok(ret.unsigned_abs())
    }

    /// Runs `calls` (`(step, addr, nr, args)`) as injected batches (one
    /// trap per [`Injection::MAX_BATCH`] calls); the first negative result
    /// becomes [`MmError::Syscall`]. Every call of a batch runs whatever the
    /// results before it. Returns the results.
    pub(crate) fn batch(&self, calls: &[RemoteCall]) -> Result<Vec<u64>, MmError> {
        let mut out = Vec::with_capacity(calls.len());
        for part in calls.chunks(Injection::MAX_BATCH) {
            let raw: Vec<(i64, &[u64])> = part.iter().map(|c| (c.2, &c.3[..])).collect();
            let rets = self
                .inj
                .syscall_batch(&raw)
                .map_err(|source| MmError::Inject {
                    pid: self.pid,
                    step: part[0].0,
                    source,
                })?;
            for (c, ret) in part.iter().zip(rets) {
                if ret < 0 {
                    return Err(MmError::Syscall {
                        pid: self.pid,
                        step: c.0,
                        addr: c.1,
                        source: Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)),
                    });
                }
                out.push(ret.unsigned_abs());
            }
        }
        Ok(out)
    }

    /// Copies `bytes` into the stub's scratch area at `offset`.
    pub(crate) fn scratch(
        &self,
        step: &'static str,
        offset: usize,
        bytes: &[u8],
    ) -> Result<u64, MmError> {
        self.inj
            .write_scratch(offset, bytes)
            .map(|a| a.0)
            .map_err(|source| MmError::Inject {
                pid: self.pid,
                step,
                source,
            })
    }

    /// `openat(AT_FDCWD, path, flags)` in the task; returns the fd.
    pub(crate) fn open(&self, path: &str, flags: i32) -> Result<u64, MmError> {
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        let addr = self.scratch("copy a path", 0, &bytes)?;
        let flags = u64::from(u32::from_ne_bytes((flags | libc::O_CLOEXEC).to_ne_bytes()));
        self.call(
            "open a mapped file",
            addr,
            libc::SYS_openat,
            &[libc::AT_FDCWD as u64, addr, flags, 0],
        )
    }
}

/// Drops the rseq area glibc registered in the (forked) task: the kernel
/// would write to it after the memory it lives in is gone.
fn unregister_rseq(r: &Remote<'_, '_>) -> Result<(), MmError> {
    let conf = crate::sys::ptrace::rseq_configuration(r.pid.as_nix()).map_err(|source| {
        MmError::Syscall {
            pid: r.pid,
            step: "query rseq",
            addr: 0,
            source,
        }
    })?;
    if conf.rseq_abi_pointer != 0 {
        r.call(
            "unregister rseq",
            conf.rseq_abi_pointer,
            nr::RSEQ,
            &[
                conf.rseq_abi_pointer,
                conf.rseq_abi_size.into(),
                RSEQ_FLAG_UNREGISTER,
                conf.signature.into(),
            ],
        )?;
    }
    Ok(())
}

/// Unmaps every mapping of the task but the stub, the vDSO/vvar and the
/// `keep` ranges (sorted).
fn unmap_current(
    r: &Remote<'_, '_>,
    current: &[MapsLine],
    keep: &[(u64, u64)],
) -> Result<(), MmError> {
    let mut keep = keep.to_vec();
    keep.push((
        r.inj.stub_addr().0,
        r.inj.stub_addr().0 + r.inj.stub_len() as u64,
    ));
    keep.sort_unstable();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for m in current {
        if is_vdso_name(&m.name) || m.name == "[vsyscall]" || m.end > TASK_SIZE {
            continue;
        }
        // Cut what is kept out of whatever holds it.
        for (s, e) in premap::subtract(&[(m.start, m.end)], &keep) {
            match ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => ranges.push((s, e)),
            }
        }
    }
    let calls: Vec<RemoteCall> = ranges
        .into_iter()
        .map(|(s, e)| ("unmap an old mapping", s, nr::MUNMAP, vec![s, e - s]))
        .collect();
    r.batch(&calls).map(drop)
}

pub(super) fn is_special(vma: &VmaEntry) -> bool {
    vma.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) != 0
        || vma.status & VMA_AREA_REGULAR == 0
}

/// Maps every dumped VMA at its address. Private ones are writable until
/// their pages are in.
fn map_vmas(
    r: &Remote<'_, '_>,
    images: &TaskImages,
    shmem: &mut SharedMemory,
) -> Result<(), MmError> {
    let mut files: HashMap<(u64, i32), u64> = HashMap::new();
    let mut result = (|| {
        let mut maps: Vec<RemoteCall> = Vec::new();
        for vma in images.mm.vmas.iter().filter(|v| !is_special(v)) {
            if is_shared_anon(vma) || shmem.premaps.area(vma).is_some() {
                continue;
            }
            let mut prot = u64::from(vma.prot);
            if is_private(vma) {
                prot |= libc::PROT_WRITE as u64;
            }
            let flags = u64::from(vma.flags & MAP_KEEP) | MAP_FIXED;
            let (fd, off) = if vma.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
                let mut access = if vma.status & VMA_FILE_SHARED != 0 {
                    i32::try_from(vma.fdflags.unwrap_or(0)).unwrap_or(0) & libc::O_ACCMODE
                } else {
                    libc::O_RDONLY
                };
                if vma.status & VMA_AREA_MEMFD != 0 {
                    access = shmem.memfd.map_access(vma, access);
                }
                let key = (vma.shmid, access);
                let fd = match files.get(&key) {
                    Some(&fd) => fd,
                    None => {
                        let id = u32::try_from(vma.shmid).unwrap_or(u32::MAX);
                        let memfd = (vma.status & VMA_AREA_MEMFD != 0)
                            .then(|| shmem.memfd.map_path(id))
                            .flatten();
                        let name = images.reg(id).map(|r| r.name.as_str()).unwrap_or("");
                        let fd = r.open(memfd.as_deref().unwrap_or(name), access)?;
                        files.insert(key, fd);
                        fd
                    }
                };
                (fd, vma.pgoff)
            } else {
                (u64::MAX, 0)
            };
            maps.push((
                "map a vma",
                vma.start,
                nr::MMAP,
                vec![vma.start, vma.end - vma.start, prot, flags, fd, off],
            ));
        }
        // Then the copies made before the fork: moved in place.
        maps.extend(shmem.premaps.move_calls(images));
        for (c, got) in maps.iter().zip(r.batch(&maps)?) {
            if c.2 != nr::MADVISE && got != c.1 {
                return Err(MmError::Syscall {
                    pid: r.pid,
                    step: "map a vma at its address",
                    addr: c.1,
                    source: Errno::EADDRNOTAVAIL,
                });
            }
        }
        Ok(())
    })();
    let closes: Vec<RemoteCall> = files
        .into_values()
        .map(|fd| ("close a mapped file", fd, nr::CLOSE, vec![fd]))
        .collect();
    r.batch(&closes)?;
    if result.is_ok() {
        result = images
            .mm
            .vmas
            .iter()
            .filter(|v| is_shared_anon(v))
            .try_for_each(|vma| shmem.map(r, vma));
    }
    result
}

/// Final protections and `madvise` advice of every VMA.
fn finish_vmas(r: &Remote<'_, '_>, images: &TaskImages) -> Result<(), MmError> {
    let mut calls: Vec<RemoteCall> = Vec::new();
    for vma in images.mm.vmas.iter().filter(|v| !is_special(v)) {
        let len = vma.end - vma.start;
        if is_private(vma) && vma.prot & libc::PROT_WRITE as u32 == 0 {
            calls.push((
                "protect a vma",
                vma.start,
                nr::MPROTECT,
                vec![vma.start, len, u64::from(vma.prot)],
            ));
        }
        let madv = vma.madv.unwrap_or(0);
        for bit in 0..64u64 {
            if madv & (1 << bit) != 0 {
                calls.push((
                    "advise a vma",
                    vma.start,
                    nr::MADVISE,
                    vec![vma.start, len, bit],
                ));
            }
        }
    }
    r.batch(&calls).map(drop)
}

/// `PR_SET_MM_MAP`: code/data/brk/stack/args/env bounds, auxv and the
/// executable link.
fn set_mm_map(r: &Remote<'_, '_>, images: &TaskImages) -> Result<(), MmError> {
    let mm = &images.mm;
    let exe = images
        .reg(mm.exe_file_id)
        .map(|r| r.name.as_str())
        .unwrap_or("");
    let exe_fd = r.open(exe, libc::O_RDONLY)?;
    let auxv: Vec<u8> = mm
        .mm_saved_auxv
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    const MAP_SIZE: usize = 104;
    let auxv_addr = r.scratch("copy auxv", MAP_SIZE, &auxv)?;
    let mut map: Vec<u8> = [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        if auxv.is_empty() { 0 } else { auxv_addr },
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect();
    map.extend_from_slice(&u32::try_from(auxv.len()).unwrap_or(0).to_le_bytes());
    map.extend_from_slice(&u32::try_from(exe_fd).unwrap_or(u32::MAX).to_le_bytes());
    let map_addr = r.scratch("copy the mm map", 0, &map)?;
    let result = r.call(
        "set the mm map",
        map_addr,
        nr::PRCTL,
        &[PR_SET_MM, PR_SET_MM_MAP, map_addr, MAP_SIZE as u64, 0],
    );
    r.call("close the executable", exe_fd, nr::CLOSE, &[exe_fd])?;
    result.map(drop)
}

/// Rebuilds the whole address space of the seized, freshly created task.
/// With `lazy`, its lazy VMAs are registered with a userfaultfd handed to
/// the lazy-pages daemon as soon as they are mapped, and left empty.
pub(crate) fn restore_mm(
    r: &Remote<'_, '_>,
    task: &SeizedTask,
    images: &TaskImages,
    shmem: &mut SharedMemory,
    lazy: Option<&mut super::lazy::LazyLink>,
) -> Result<(), MmError> {
    let maps = map_pages(images)?;
    let pages: Vec<&[u8]> = maps
        .iter()
        .map(|m| m.as_ref().map_or(&[][..], FileMap::as_slice))
        .collect();
    let pages = &pages[..];
    unregister_rseq(r)?;
    let current = read_maps(r.pid)?;
    let mut keep = shmem.premaps.kept(images);
    keep.sort_unstable();
    unmap_current(r, &current, &keep)?;
    vdso::move_vdso(r, task, images, pages, &current)?;
    map_vmas(r, images, shmem)?;
    let is_lazy = lazy.is_some();
    if let Some(link) = lazy {
        if let Some(uffd) = super::lazy::register(r, images)? {
            let pid = i32::try_from(images.pid()).unwrap_or(i32::MAX);
            link.send_task(pid, &uffd)?;
        }
    }
    let diff = shmem.diffs.take(images.pid());
    fill::fill_pages(
        r.pid,
        images,
        &maps,
        pages,
        is_lazy,
        &shmem.premaps,
        diff.as_ref(),
    )?;
    finish_vmas(r, images)?;
    set_mm_map(r, images)
}

fn map_pages(images: &TaskImages) -> Result<Vec<Option<FileMap>>, MmError> {
    images
        .pages
        .files
        .iter()
        .map(|f| {
            if f.need == 0 {
                return Ok(None);
            }
            let err = |source| MmError::MapPages {
                image: f.name.clone(),
                source,
            };
            let len = usize::try_from(f.need).map_err(|_| err(Errno::EFBIG))?;
            FileMap::map(&f.file, len).map(Some).map_err(err)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let text = "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n\
                    7ffd1000-7ffd3000 r-xp 00001000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7ff0-8000 r--p 00000000 00:00 0 \n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].name, "[heap]");
        assert_eq!((maps[1].start, maps[1].end), (0x7ffd1000, 0x7ffd3000));
        assert_eq!(maps[1].name, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(maps[2].name, "");
    }

    #[test]
    fn gaps_avoid_every_busy_range() {
        let mut busy = vec![
            (LOW_ADDR, LOW_ADDR + 0x1000),
            (LOW_ADDR + 0x3000, LOW_ADDR + 0x9000),
        ];
        assert_eq!(free_gap(&mut busy, 0x2000), Some(LOW_ADDR + 0x1000));
        assert_eq!(free_gap(&mut busy, 0x3000), Some(LOW_ADDR + 0x9000));
        let mut full = vec![(0, TASK_SIZE)];
        assert_eq!(free_gap(&mut full, 0x1000), None);
    }
}
