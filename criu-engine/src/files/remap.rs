//! Files whose path no longer leads to them: unlinked files still open or
//! mapped ("ghost" files, saved whole in `ghost-file-<id>.img`) and files
//! unlinked while another hard link keeps them ("link remaps", reached
//! through a new hard link), both listed in `remap-fpath.img` (CRIU's
//! `check_path_remap`, `dump_ghost_remap`, `dump_ghost_file` and
//! `dump_linked_remap` in `criu/files-reg.c`).
//!
//! The `reg_file_entry` keeps the original path without its
//! ` (deleted)` suffix; the remap entry says how restore reaches the file.
//! Ghost contents up to 12 KiB follow the `ghost_file_entry` whole; bigger
//! files are written as `ghost_chunk_entry` + data pairs that skip holes.
//! A ghost file whose allocated size exceeds `ghost_limit` is refused, as
//! CRIU does.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use criu_proto::images::{
    FdTypes, FileEntry, FownEntry, GhostChunkEntry, GhostFileEntry, RegFileEntry,
    RemapFilePathEntry, RemapType, Timeval,
};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};

/// Files from this size on are saved as chunks.
const CHUNKS_FROM: u64 = 3 * 4096;
/// Suffix of an unlinked file's link.
pub const DELETED: &str = " (deleted)";

/// A vanished path could not be remapped.
#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    /// The ghost file is bigger than `ghost_limit`.
    #[error("cannot dump ghost file {path} of {size} bytes: bigger than ghost_limit {limit}; increase the limit")]
    TooBig {
        /// The file's path (as it was).
        path: String,
        /// Its allocated size.
        size: u64,
        /// `ghost_limit`.
        limit: u64,
    },
    /// An unlinked file of a kind that cannot be saved.
    #[error("unlinked {what} {path} cannot be dumped yet")]
    Kind {
        /// What it is.
        what: &'static str,
        /// Its path (as it was).
        path: String,
    },
    /// A file unlinked while other hard links remain, without `link_remap`.
    #[error("cannot create a link remap for {path}; use the link_remap option")]
    NeedLinkRemap {
        /// Its path (as it was).
        path: String,
    },
    /// The new hard link could not be made.
    #[error("cannot link {path} back as {link}")]
    Link {
        /// Its path (as it was).
        path: String,
        /// The link tried.
        link: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The contents could not be read.
    #[error("cannot read ghost file {path}")]
    Read {
        /// Its path (as it was).
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

struct Ghost {
    dev: u64,
    ino: u64,
    id: u32,
    path: String,
    entry: GhostFileEntry,
    file: File,
}

/// The ghost files and remaps of a dump.
pub struct RemapTable {
    ghosts: Vec<Ghost>,
    remaps: Vec<RemapFilePathEntry>,
    /// Link remaps made, for cleaning up if the dump fails.
    links: Vec<String>,
    ghost_limit: u64,
    link_remap: bool,
}

impl Default for RemapTable {
    fn default() -> Self {
        RemapTable {
            ghosts: Vec::new(),
            remaps: Vec::new(),
            links: Vec::new(),
            ghost_limit: 1 << 20,
            link_remap: false,
        }
    }
}

/// The path of an unlinked file's link without its ` (deleted)` suffix.
pub fn strip_deleted(name: &str) -> &str {
    name.strip_suffix(DELETED).unwrap_or(name)
}

fn timeval(sec: i64, nsec: i64) -> Timeval {
    Timeval {
        tv_sec: sec as u64,
        tv_usec: (nsec / 1000) as u64,
    }
}

impl RemapTable {
    /// Sets `ghost_limit` (bytes) and whether link remaps may be made.
    pub fn configure(&mut self, ghost_limit: u64, link_remap: bool) {
        self.ghost_limit = ghost_limit;
        self.link_remap = link_remap;
    }

    /// Records that file `id` (`name`, its link text, and `meta`) is only
    /// reachable through the descriptor or mapping `link`. Returns the path
    /// to keep in its `reg_file_entry` and, for a link remap, the new
    /// `files.img` entry of the link (whose id `alloc` gives).
    pub fn remap(
        &mut self,
        id: u32,
        name: &str,
        meta: &Metadata,
        link: &Path,
        alloc: &mut dyn FnMut() -> u32,
    ) -> Result<(String, Option<FileEntry>), RemapError> {
        let path = strip_deleted(name).to_owned();
        if meta.nlink() > 0 {
            let entry = self.link_back(&path, meta, link, alloc())?;
            self.remaps.push(RemapFilePathEntry {
                orig_id: id,
                remap_id: entry.id,
                remap_type: Some(RemapType::Linked as i32),
            });
            return Ok((path, Some(entry)));
        }
        let what = match meta.mode() & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFDIR => Some("directory"),
            libc::S_IFLNK => Some("symlink"),
            libc::S_IFIFO => Some("fifo"),
            _ => Some("special file"),
        };
        if let Some(what) = what {
            return Err(RemapError::Kind { what, path });
        }
        let size = meta.blocks() * 512;
        if size > self.ghost_limit {
            return Err(RemapError::TooBig {
                path,
                size,
                limit: self.ghost_limit,
            });
        }
        let remap_id = match self
            .ghosts
            .iter()
            .find(|g| g.dev == meta.dev() && g.ino == meta.ino())
        {
            Some(g) => g.id,
            None => {
                let file = File::open(link).map_err(|source| RemapError::Read {
                    path: path.clone(),
                    source,
                })?;
                let id = self.ghosts.len() as u32 + 1;
                let chunks = meta.size() >= CHUNKS_FROM;
                let entry = GhostFileEntry {
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode(),
                    dev: Some(meta.dev() as u32),
                    ino: Some(meta.ino()),
                    rdev: None,
                    atim: Some(timeval(meta.atime(), meta.atime_nsec())),
                    mtim: Some(timeval(meta.mtime(), meta.mtime_nsec())),
                    chunks: chunks.then_some(true),
                    size: chunks.then_some(meta.size()),
                    symlnk_target: None,
                };
                self.ghosts.push(Ghost {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    id,
                    path: path.clone(),
                    entry,
                    file,
                });
                id
            }
        };
        self.remaps.push(RemapFilePathEntry {
            orig_id: id,
            remap_id,
            remap_type: Some(RemapType::Ghost as i32),
        });
        Ok((path, None))
    }

    /// Makes `link_remap.<id>` next to where `path` was, a new hard link of
    /// the file open through `link`.
    fn link_back(
        &mut self,
        path: &str,
        meta: &Metadata,
        link: &Path,
        id: u32,
    ) -> Result<FileEntry, RemapError> {
        if !self.link_remap {
            return Err(RemapError::NeedLinkRemap {
                path: path.to_owned(),
            });
        }
        let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
        let new = dir.join(format!("link_remap.{id}"));
        let new_name = new.to_string_lossy().into_owned();
        // The magic link follows to the file itself, even unlinked.
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            link,
            nix::fcntl::AT_FDCWD,
            &new,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(|e| RemapError::Link {
            path: path.to_owned(),
            link: new_name.clone(),
            source: e.into(),
        })?;
        self.links.push(new_name.clone());
        Ok(FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(RegFileEntry {
                id,
                flags: 0,
                pos: 0,
                fown: FownEntry::default(),
                name: new_name,
                mode: Some(meta.mode()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Removes the link remaps made (the dump failed, or its tasks run on).
    pub fn rollback(&mut self) {
        for l in self.links.drain(..) {
            let _ = std::fs::remove_file(l);
        }
    }

    /// Writes every ghost image and `remap-fpath.img`.
    pub fn write(&mut self, dir: &ImagesDir) -> Result<(), RemapError> {
        for g in &self.ghosts {
            write_ghost(dir, g)?;
        }
        if !self.remaps.is_empty() {
            dir.write_all(ImageKind::RemapFpath, 0, &self.remaps)?;
        }
        Ok(())
    }
}

fn write_ghost(dir: &ImagesDir, g: &Ghost) -> Result<(), RemapError> {
    let read_err = |source| RemapError::Read {
        path: g.path.clone(),
        source,
    };
    let mut w = dir.create_image(ImageKind::GhostFile, g.id.into())?;
    w.write_entry(&g.entry)?;
    let size = g.file.metadata().map_err(read_err)?.len();
    let read = |off: u64, len: u64| -> Result<Vec<u8>, RemapError> {
        let mut buf = vec![0u8; len as usize];
        g.file.read_exact_at(&mut buf, off).map_err(read_err)?;
        Ok(buf)
    };
    if g.entry.chunks != Some(true) {
        w.write_extra(&read(0, size)?)?;
        w.finish()?;
        return Ok(());
    }
    let fd = &g.file;
    let mut hole: i64 = 0;
    let size = size as i64;
    while hole < size {
        let data = match nix::unistd::lseek(fd, hole, nix::unistd::Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(read_err(e.into())),
        };
        hole = nix::unistd::lseek(fd, data, nix::unistd::Whence::SeekHole)
            .map_err(|e| read_err(e.into()))?;
        let chunk = GhostChunkEntry {
            len: (hole - data) as u64,
            off: data as u64,
        };
        w.write_entry(&chunk)?;
        w.write_extra(&read(chunk.off, chunk.len)?)?;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_stripped_once() {
        assert_eq!(strip_deleted("/tmp/a (deleted)"), "/tmp/a");
        assert_eq!(strip_deleted("/tmp/a"), "/tmp/a");
    }
}
