//! Moving this kernel's vDSO and vvar to the addresses the dump recorded
//! (CRIU's `vdso_remap` in `criu/pie/restorer.c` and the symbol check of
//! `criu/vdso.c`): the restored code calls into the vDSO where it was.
//!
//! # References
//!
//! - [vdso(7)](https://man7.org/linux/man-pages/man7/vdso.7.html),
//!   [mremap(2)](https://man7.org/linux/man-pages/man2/mremap.2.html)

use super::{free_gap, is_vdso_name, MapsLine, MmError, Remote, STUB_ROOM};
use crate::arch::x86_64::nr;
use crate::arch::x86_64::RemoteAddr;
use crate::restore::images::{TaskImages, VMA_AREA_VDSO, VMA_AREA_VVAR};
use crate::seize::SeizedTask;

/// `MREMAP_MAYMOVE | MREMAP_FIXED`.
const MREMAP_FIXED_MOVE: u64 = 0x1 | 0x2;

/// The function symbols of a vDSO image with their offsets, sorted (what
/// CRIU compares to decide whether this kernel's vDSO can replace the dumped
/// one; notes and strings differ between builds of the same code).
fn vdso_symbols(elf: &[u8]) -> Option<Vec<(Vec<u8>, u64)>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let usize_at = |o: usize| usize::try_from(u64_at(o)?).ok();
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let shoff = usize_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let dynsym = (0..shnum).find_map(|i| {
        let sh = section(i)?;
        (u32_at(sh + 4)? == 11).then_some(sh)
    })?;
    let (off, size) = (usize_at(dynsym + 24)?, usize_at(dynsym + 32)?);
    let strtab = section(usize::try_from(u32_at(dynsym + 40)?).ok()?)?;
    let stroff = usize_at(strtab + 24)?;
    let mut syms = Vec::new();
    for sym in (off..off.checked_add(size)?).step_by(24) {
        let info = *elf.get(sym + 4)?;
        if info & 0xf != 2 {
            continue;
        }
        let name_at = stroff.checked_add(usize::try_from(u32_at(sym)?).ok()?)?;
        let name = elf.get(name_at..)?;
        let name = name.get(..name.iter().position(|&b| b == 0)?)?.to_vec();
        syms.push((name, u64_at(sym + 8)?));
    }
    syms.sort_unstable();
    Some(syms)
}

/// The dumped bytes of `[start, end)` if the pagemap holds all of them.
fn dumped_bytes<'p>(
    images: &TaskImages,
    pages: &[&'p [u8]],
    start: u64,
    end: u64,
) -> Option<&'p [u8]> {
    let seg = images
        .pages
        .segs
        .iter()
        .find(|s| s.vaddr <= start && s.vaddr + s.len >= end)?;
    let off = usize::try_from(seg.offset + (start - seg.vaddr)).ok()?;
    pages[seg.file].get(off..off + usize::try_from(end - start).ok()?)
}

/// Moves this kernel's vDSO and vvar to the dumped addresses, after checking
/// that the vDSO code is the one the task used.
pub(super) fn move_vdso(
    r: &Remote<'_, '_>,
    task: &SeizedTask,
    images: &TaskImages,
    pages: &[&[u8]],
    current: &[MapsLine],
) -> Result<(), MmError> {
    let pid = r.pid;
    let err = |reason| MmError::Vdso { pid, reason };
    let find = |bit: u32| images.mm.vmas.iter().find(|v| v.status & bit != 0);
    let (dumped_vdso, dumped_vvar) = (find(VMA_AREA_VDSO), find(VMA_AREA_VVAR));
    let cur: Vec<&MapsLine> = current.iter().filter(|m| is_vdso_name(&m.name)).collect();
    let cur_vdso = cur.iter().find(|m| m.name == "[vdso]");
    let Some(dv) = dumped_vdso else {
        // The task had no vDSO: drop ours.
        for m in &cur {
            r.call(
                "unmap the vdso",
                m.start,
                nr::MUNMAP,
                &[m.start, m.end - m.start],
            )?;
        }
        return Ok(());
    };
    let cv = cur_vdso.ok_or(err("this kernel maps no vDSO"))?;
    if cv.end - cv.start != dv.end - dv.start {
        return Err(err("its size differs"));
    }
    if let Some(dumped) = dumped_bytes(images, pages, dv.start, dv.end) {
        let mut now = vec![0u8; usize::try_from(cv.end - cv.start).unwrap_or(0)];
        task.read_mem(RemoteAddr(cv.start), &mut now)
            .map_err(|source| MmError::ReadMem { pid, source })?;
        let now_syms = vdso_symbols(&now).ok_or(err("this kernel's vDSO is unreadable"))?;
        if vdso_symbols(dumped).as_ref() != Some(&now_syms) {
            return Err(err("its symbols differ from this kernel's"));
        }
    }
    // The vvar pages sit just below the vDSO in both layouts.
    let cur_vvar: Vec<&&MapsLine> = cur.iter().filter(|m| m.name != "[vdso]").collect();
    let cur_vvar_len: u64 = cur_vvar.iter().map(|m| m.end - m.start).sum();
    let dumped_vvar_len = dumped_vvar.map_or(0, |v| v.end - v.start);
    if cur_vvar_len != dumped_vvar_len {
        return Err(err("the vvar size differs"));
    }
    if dumped_vvar.is_some_and(|v| v.end != dv.start) || cur_vvar.iter().any(|m| m.end > cv.start) {
        return Err(err("vvar is not right below the vDSO"));
    }
    let delta = dv.start.wrapping_sub(cv.start);
    if delta == 0 {
        return Ok(());
    }
    // Destinations may overlap the current places: park everything first
    // when they do.
    let lo = cur.iter().map(|m| m.start).min().unwrap_or(cv.start);
    let hi = cv.end;
    let dst_lo = lo.wrapping_add(delta);
    let mut shift = delta;
    if dst_lo < hi && dst_lo.wrapping_add(hi - lo) > lo {
        let mut busy: Vec<(u64, u64)> = current
            .iter()
            .map(|m| (m.start, m.end))
            .chain(images.mm.vmas.iter().map(|v| (v.start, v.end)))
            .chain([(r.inj.stub_addr().0, r.inj.stub_addr().0 + STUB_ROOM)])
            .collect();
        let park = free_gap(&mut busy, hi - lo).ok_or(MmError::NoRoom { pid })?;
        let park_delta = park.wrapping_sub(lo);
        for m in &cur {
            remap(
                r,
                m.start,
                m.end - m.start,
                m.start.wrapping_add(park_delta),
            )?;
        }
        shift = delta.wrapping_sub(park_delta);
        for m in &cur {
            let from = m.start.wrapping_add(park_delta);
            remap(r, from, m.end - m.start, from.wrapping_add(shift))?;
        }
        return Ok(());
    }
    for m in &cur {
        remap(r, m.start, m.end - m.start, m.start.wrapping_add(shift))?;
    }
    Ok(())
}

fn remap(r: &Remote<'_, '_>, from: u64, len: u64, to: u64) -> Result<(), MmError> {
    r.call(
        "move the vdso",
        to,
        nr::MREMAP,
        &[from, len, len, MREMAP_FIXED_MOVE, to],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::mm::parse_maps;

    #[test]
    fn vdso_symbols_of_this_kernel() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let vdso = parse_maps(&maps)
            .into_iter()
            .find(|m| m.name == "[vdso]")
            .unwrap();
        let mut buf = vec![0u8; usize::try_from(vdso.end - vdso.start).unwrap()];
        let mem = std::fs::File::open("/proc/self/mem").unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut buf, vdso.start).unwrap();
        let syms = vdso_symbols(&buf).unwrap();
        assert!(
            syms.iter().any(|(n, _)| n == b"__vdso_clock_gettime"),
            "{syms:?}"
        );
        assert_eq!(vdso_symbols(b"nope"), None);
    }
}
