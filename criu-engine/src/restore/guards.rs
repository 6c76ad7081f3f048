//! Guard regions of a restored address space (CRIU's
//! `restore_madv_guard_regions` in `criu/pie/restorer.c`): each
//! `VMA_AREA_GUARD` run of the images gets `madvise(MADV_GUARD_INSTALL)`
//! once the mappings and their pages are back. See [`crate::mem::guard`].
//!
//! # References
//!
//! - [madvise(2)](https://man7.org/linux/man-pages/man2/madvise.2.html)
//!   (`MADV_GUARD_INSTALL`)

use criu_proto::images::VmaEntry;
use criu_proto::img::pages::PAGE_SIZE;

use super::images::ImagesError;
use super::mm::{MmError, Remote};
use crate::arch::x86_64::nr;
use crate::sys::abi::MADV_GUARD_INSTALL;

/// Checks that every guard run is page aligned and inside one of `vmas`.
pub(crate) fn check(pid: u32, vmas: &[VmaEntry], guards: &[VmaEntry]) -> Result<(), ImagesError> {
    for g in guards {
        let bad = |reason| ImagesError::Vma {
            pid,
            start: g.start,
            end: g.end,
            reason,
        };
        if g.start >= g.end || g.start % PAGE_SIZE != 0 || g.end % PAGE_SIZE != 0 {
            return Err(bad("a guard run that is empty or not page aligned"));
        }
        if !vmas.iter().any(|v| v.start <= g.start && g.end <= v.end) {
            return Err(bad("a guard run outside every mapping"));
        }
    }
    Ok(())
}

/// Installs the guards in the task `r` runs in.
pub(crate) fn install(r: &Remote<'_, '_>, guards: &[VmaEntry]) -> Result<(), MmError> {
    for g in guards {
        r.call(
            "install guard pages",
            g.start,
            nr::MADVISE,
            &[g.start, g.end - g.start, MADV_GUARD_INSTALL as u64],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::guard::entry;

    #[test]
    fn guards_must_lie_inside_a_mapping() {
        let vma = VmaEntry {
            start: 0x10000,
            end: 0x14000,
            ..Default::default()
        };
        assert!(check(1, std::slice::from_ref(&vma), &[entry(0x11000, 0x12000)]).is_ok());
        assert!(check(1, std::slice::from_ref(&vma), &[entry(0x13000, 0x15000)]).is_err());
        assert!(check(1, std::slice::from_ref(&vma), &[entry(0x11000, 0x11800)]).is_err());
    }
}
