//! `auto_dedup` / `--auto-dedup`: once an incremental dump has saved a
//! page again, its older copies in the parent images are dead weight; holes
//! are punched over them (CRIU's `dedup_one_iovec` in `criu/page-xfer.c`,
//! run from `criu/mem.c` when `opts.auto_dedup` is set).
//!
//! For every pagemap of the new images, each present run is looked up in
//! the pagemap of the same task at every level of the `parent` chain; the
//! bytes those levels hold for it are released with
//! `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`, so file sizes
//! and offsets stay. Restoring from the new images never reads them: a
//! restore takes each page from the nearest image that holds it. The
//! parent directories alone no longer restore, as with CRIU.

use std::os::fd::OwnedFd;

use criu_proto::img::{ImageError, ImageKind, ImagesDir, PageRun};
use nix::errno::Errno;
use nix::fcntl::{fallocate, openat, FallocateFlags, OFlag};
use nix::sys::stat::Mode;

use super::incremental::{open_parent, PARENT_LINK};
use crate::mem::dirty::Ranges;

/// Most `parent` links followed.
const MAX_CHAIN: usize = 256;

/// Punching holes in the parent images failed.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// A pagemap of the chain cannot be read.
    #[error("cannot read {image}")]
    Read {
        /// Image, relative to the new images directory.
        image: String,
        /// Cause.
        #[source]
        source: ImageError,
    },
    /// A pages file cannot be opened or punched.
    #[error("cannot punch holes in {image}")]
    Punch {
        /// Image, relative to the new images directory.
        image: String,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// What deduplication released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Pages whose older copies were punched out.
    pub pages: u64,
}

/// Punches, in every ancestor of `dir`, the pages that the pagemaps of
/// `dir` hold again.
pub fn dedup(dir: &ImagesDir) -> Result<DedupStats, DedupError> {
    let mut stats = DedupStats::default();
    for vpid in pagemap_pids(dir) {
        let name = ImageKind::Pagemap.file_name(vpid.into());
        let Some(map) = dir.pagemap(vpid).map_err(|source| DedupError::Read {
            image: name.clone(),
            source,
        })?
        else {
            continue;
        };
        let saved = Ranges::from_unsorted(
            map.runs()
                .filter(PageRun::is_present)
                .map(|r| (r.vaddr, r.vaddr + r.len_bytes()))
                .collect(),
        );
        if saved.as_slice().is_empty() {
            continue;
        }
        let mut level = open_parent(dir).ok();
        let mut prefix = format!("{PARENT_LINK}/");
        for _ in 0..MAX_CHAIN {
            let Some(at) = level else { break };
            stats.pages += punch_level(&at, &prefix, vpid, &saved)?;
            level = open_parent(&at).ok();
            prefix = format!("{prefix}{PARENT_LINK}/");
        }
    }
    Ok(stats)
}

/// The pids of the `pagemap-<pid>.img` files of `dir`.
fn pagemap_pids(dir: &ImagesDir) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir.path()) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("pagemap-")?
                .strip_suffix(".img")?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Punches the bytes of `saved` held by `level`'s images of task `vpid`;
/// returns the pages released.
fn punch_level(
    level: &ImagesDir,
    prefix: &str,
    vpid: u32,
    saved: &Ranges,
) -> Result<u64, DedupError> {
    let name = format!("{prefix}{}", ImageKind::Pagemap.file_name(vpid.into()));
    let Some(map) = level.pagemap(vpid).map_err(|source| DedupError::Read {
        image: name,
        source,
    })?
    else {
        return Ok(0);
    };
    let pages = ImageKind::Pages.file_name(map.head.pages_id.into());
    let image = format!("{prefix}{pages}");
    let mut file: Option<OwnedFd> = None;
    let mut punched = 0;
    for run in map.runs().filter(PageRun::is_present) {
        let Some(offset) = run.pages_offset else {
            continue;
        };
        for (s, e, inside) in saved.split(run.vaddr, run.vaddr + run.len_bytes()) {
            if !inside {
                continue;
            }
            let err = |source| DedupError::Punch {
                image: image.clone(),
                source,
            };
            let fd = match &file {
                Some(fd) => fd,
                None => file.insert(
                    openat(
                        level.fd(),
                        pages.as_str(),
                        OFlag::O_RDWR | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(err)?,
                ),
            };
            let at = i64::try_from(offset + (s - run.vaddr)).map_err(|_| err(Errno::EFBIG))?;
            let len = i64::try_from(e - s).map_err(|_| err(Errno::EFBIG))?;
            fallocate(
                fd,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                at,
                len,
            )
            .map_err(err)?;
            punched += (e - s) / criu_proto::img::pages::PAGE_SIZE;
        }
    }
    Ok(punched)
}
