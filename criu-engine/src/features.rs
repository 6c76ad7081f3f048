//! FEATURE_CHECK: which optional capabilities this engine offers right now.
//!
//! CRIU counterpart: `handle_feature_check()` in `criu/cr-service.c`. CRIU only
//! asks the kernel; we also ask ourselves, because a client such as runc must
//! not be told that memory tracking works when the engine cannot pre-dump
//! (rpc-protocol.md 9.3). Each capability is "kernel has it" AND
//! `engine_supports_*()`; the issue that implements one flips its function.

use criu_proto::rpc::CriuFeatures;

use crate::kerndat::KernelFeatures;

/// Whether the engine implements dirty-memory tracking between pre-dumps
/// (userfaultfd asynchronous write-protect, [`crate::mem::dirty`]).
pub const fn engine_supports_mem_track() -> bool {
    true
}

/// Whether the engine implements lazy restore (lazy-pages daemon, page
/// server serving faults).
pub const fn engine_supports_lazy_pages() -> bool {
    true
}

/// Whether the engine implements `pidfd_store_sk` (keeping pidfds of dumped
/// tasks between pre-dump iterations).
pub const fn engine_supports_pidfd_store() -> bool {
    false
}

/// The kernel can track written pages the way the engine does:
/// userfaultfd asynchronous write-protect plus `PAGEMAP_SCAN` (the engine
/// does not use soft-dirty bits).
pub fn kernel_can_track_memory(kf: &KernelFeatures) -> bool {
    kf.userfaultfd && kf.uffd_wp_async && kf.pagemap_scan
}

/// `mem_track`: dirty-memory tracking for pre-dumps.
pub fn mem_track(kf: &KernelFeatures) -> bool {
    kernel_can_track_memory(kf) && engine_supports_mem_track()
}

/// `lazy_pages`: userfaultfd with the non-cooperative events CRIU requires
/// (fork, remap, remove, unmap).
pub fn lazy_pages(kf: &KernelFeatures) -> bool {
    kf.userfaultfd && kf.uffd_lazy_events && engine_supports_lazy_pages()
}

/// `pidfd_store`: `pidfd_open` plus `pidfd_getfd`.
pub fn pidfd_store(kf: &KernelFeatures) -> bool {
    kf.pidfd_open && kf.pidfd_getfd && engine_supports_pidfd_store()
}

/// Answers a FEATURE_CHECK request: every field present, each true only when
/// requested as true and available.
#[doc(alias = "handle_feature_check")]
pub fn answer(requested: &CriuFeatures, kf: &KernelFeatures) -> CriuFeatures {
    CriuFeatures {
        mem_track: Some(requested.mem_track == Some(true) && mem_track(kf)),
        lazy_pages: Some(requested.lazy_pages == Some(true) && lazy_pages(kf)),
        pidfd_store: Some(requested.pidfd_store == Some(true) && pidfd_store(kf)),
    }
}
