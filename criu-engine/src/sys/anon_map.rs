//! A private anonymous mapping of the engine at a chosen address (restore
//! fills the memory that several tasks share before forking them, as CRIU's
//! `premap_priv_vmas` in `criu/mem.c` does, so that they inherit it
//! copy-on-write).
//!
//! # References
//!
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// A readable and writable private anonymous mapping; unmapped on drop.
#[derive(Debug)]
pub(crate) struct AnonMap {
    addr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is owned by the `AnonMap` and only written through
// `&mut self`; shared references give no access to it.
unsafe impl Send for AnonMap {}
// SAFETY: as above: nothing reaches the mapping through `&AnonMap`.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// Maps `len` bytes at exactly `addr` (`MAP_FIXED_NOREPLACE`), with
    /// `extra` flags (e.g. `MAP_NORESERVE`); fails with `EEXIST` if anything
    /// is mapped there.
    pub(crate) fn map_at(addr: u64, len: usize, extra: MapFlags) -> nix::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        let at = NonZeroUsize::new(usize::try_from(addr).map_err(|_| Errno::EINVAL)?);
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // the new one cannot alias any Rust object.
        let got = unsafe {
            mmap_anonymous(
                at,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE | extra,
            )
        }?;
        let map = AnonMap { addr: got, len };
        // Kernels before 4.17 ignore the flag and may map elsewhere.
        if got.as_ptr() as u64 != addr {
            return Err(Errno::EEXIST);
        }
        Ok(map)
    }

    /// Copies `bytes` to `offset` of the mapping; bytes past its end are
    /// dropped.
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let n = bytes.len().min(self.len.saturating_sub(offset));
        if n == 0 {
            return;
        }
        // SAFETY: `offset..offset + n` lies inside the live writable mapping
        // owned by `self`, which no Rust reference points into, and `bytes`
        // cannot overlap it (no slice of the mapping is ever handed out).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.addr.as_ptr().cast::<u8>().add(offset),
                n,
            );
        }
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map_at` with this length and
        // nothing refers into it.
        if let Err(errno) = unsafe { munmap(self.addr, self.len) } {
            tracing::error!(%errno, len = self.len, "cannot unmap an anonymous mapping");
        }
    }
}
