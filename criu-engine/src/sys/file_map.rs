//! A read-only, private mapping of a whole file (restore maps `pages-<id>.img`
//! and hands slices of it to `process_vm_writev`, so each page is copied
//! once, by the kernel, from the page cache into the target).
//!
//! # References
//!
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A file mapped `PROT_READ`, `MAP_PRIVATE`; unmapped on drop.
#[derive(Debug)]
pub(crate) struct FileMap {
    addr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by the `FileMap`; reading
// it and `madvise(MADV_DONTNEED)` on it (see `release`) are safe from any
// thread, and the munmap of `Drop` needs `&mut self`, so no other thread
// can be using it then.
unsafe impl Send for FileMap {}
// SAFETY: as above: shared access only reads the mapping or drops
// page-table entries of it, which the kernel serialises.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps the first `len` bytes of `file`; `len == 0` maps nothing.
    pub(crate) fn map(file: impl AsFd, len: usize) -> nix::Result<Self> {
        let Some(size) = NonZeroUsize::new(len) else {
            return Ok(FileMap {
                addr: NonNull::dangling(),
                len: 0,
            });
        };
        // SAFETY: a fresh read-only private mapping at an address the kernel
        // chooses cannot alias any Rust object.
        let addr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }?;
        Ok(FileMap { addr, len })
    }

    /// The mapped bytes. Reading past the end of a file that shrank after
    /// mapping raises `SIGBUS`; restore maps image files nobody writes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `addr..addr+len` is a live PROT_READ mapping owned by
        // `self` and never written through while `self` lives.
        unsafe { std::slice::from_raw_parts(self.addr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl FileMap {
    /// Drops the pages of `offset..offset + len` (whole pages inside it)
    /// from this process's page tables, so that reading through the mapping
    /// does not make the process's RSS grow with the file; the contents stay
    /// in the page cache and read the same if touched again.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        const PAGE: usize = 4096;
        let start = offset.div_ceil(PAGE) * PAGE;
        let end = (offset + len).min(self.len) / PAGE * PAGE;
        if self.len == 0 || start >= end {
            return;
        }
        // SAFETY: the range lies inside the live mapping owned by `self`;
        // the mapping is read-only and never written, so MADV_DONTNEED only
        // drops page-table entries: slices of it keep reading the same
        // bytes (refaulted from the file).
        let ret = unsafe {
            libc::madvise(
                self.addr.as_ptr().cast::<u8>().add(start).cast(),
                end - start,
                libc::MADV_DONTNEED,
            )
        };
        if ret != 0 {
            tracing::debug!(err = %std::io::Error::last_os_error(), "cannot release mapped pages");
        }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the mapping was created by `map` with this length and no
        // slice of it outlives `self`.
        if let Err(errno) = unsafe { munmap(self.addr, self.len) } {
            tracing::error!(%errno, len = self.len, "cannot unmap a file mapping");
        }
    }
}
