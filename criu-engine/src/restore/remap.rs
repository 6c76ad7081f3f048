//! Files the dump reached by no path (CRIU's `collect_one_remap`,
//! `open_remap_ghost`, `create_ghost`, `collect_remap_linked` and
//! `try_clean_remaps` in `criu/files-reg.c`).
//!
//! For every `remap-fpath.img` entry the file entry is pointed at a path
//! that exists for the time of the restore: a ghost file is recreated next
//! to where it lived as `<path>.cr.<id>.ghost` with its saved contents,
//! owner, mode and times; a link remap is the `link_remap.<id>` hard link
//! the dump made. Both names are removed once every task has opened and
//! mapped its files, so the files are unlinked again, as when dumped.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use criu_proto::images::{
    FileEntry, GhostChunkEntry, GhostFileEntry, RemapFilePathEntry, RemapType,
};
use criu_proto::img::{ImageKind, ImagesDir};

use super::images::{host_path, read_error, ImagesError};

/// A vanished path could not be brought back.
#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    /// The ghost file could not be recreated.
    #[error("cannot recreate ghost file {}", path.display())]
    Ghost {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A remap names a file entry that is not a regular file.
    #[error("remap-fpath.img: file {id} is not a regular file entry")]
    NotReg {
        /// The id.
        id: u32,
    },
    /// A kind of remap not supported yet.
    #[error("remap-fpath.img: remap type {kind} of file {id} is not supported yet")]
    Kind {
        /// The file.
        id: u32,
        /// The type.
        kind: i32,
    },
    /// A ghost file that is not a regular file.
    #[error("ghost file {id:#x} of mode {mode:#o} is not supported yet")]
    GhostKind {
        /// Ghost id.
        id: u32,
        /// Its mode.
        mode: u32,
    },
}

/// The paths made for the restore; removed by [`Remaps::clean`] or on drop.
#[derive(Debug, Default)]
pub(crate) struct Remaps {
    made: Vec<PathBuf>,
}

impl Remaps {
    /// Unlinks every ghost file and link remap.
    pub(crate) fn clean(&mut self) {
        for p in self.made.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a remap file");
            }
        }
    }
}

impl Drop for Remaps {
    fn drop(&mut self) {
        self.clean();
    }
}

fn reg_name(files: &HashMap<u32, FileEntry>, id: u32) -> Result<String, RemapError> {
    files
        .get(&id)
        .and_then(|f| f.reg.as_ref())
        .map(|r| r.name.clone())
        .ok_or(RemapError::NotReg { id })
}

/// Applies `remap-fpath.img` of `dir` to `files`: creates the ghost files
/// (under `root`, the root task's root) and renames the entries.
pub(crate) fn apply(
    dir: &ImagesDir,
    files: &mut HashMap<u32, FileEntry>,
    root: &str,
) -> Result<Remaps, ImagesError> {
    let entries: Vec<RemapFilePathEntry> = dir
        .read_all(ImageKind::RemapFpath, 0)
        .map_err(|source| read_error(ImageKind::RemapFpath, 0, source))?;
    let mut out = Remaps::default();
    let mut ghosts: HashMap<u32, String> = HashMap::new();
    for e in entries {
        let orig = reg_name(files, e.orig_id)?;
        let kind = e.remap_type.unwrap_or(RemapType::Linked as i32);
        let name = match RemapType::try_from(kind) {
            Ok(RemapType::Ghost) => match ghosts.get(&e.remap_id) {
                Some(n) => n.clone(),
                None => {
                    let name = format!("{orig}.cr.{:x}.ghost", e.remap_id);
                    let path = host_path(root, &name);
                    create_ghost(dir, e.remap_id, &path)?;
                    out.made.push(path);
                    ghosts.insert(e.remap_id, name.clone());
                    name
                }
            },
            Ok(RemapType::Linked) => {
                let name = reg_name(files, e.remap_id)?;
                let path = host_path(root, &name);
                if !out.made.contains(&path) {
                    out.made.push(path);
                }
                name
            }
            _ => {
                return Err(RemapError::Kind {
                    id: e.orig_id,
                    kind,
                }
                .into())
            }
        };
        if let Some(reg) = files.get_mut(&e.orig_id).and_then(|f| f.reg.as_mut()) {
            reg.name = name;
        }
    }
    Ok(out)
}

fn create_ghost(dir: &ImagesDir, id: u32, path: &PathBuf) -> Result<(), ImagesError> {
    let img_err = |source| read_error(ImageKind::GhostFile, id.into(), source);
    let mut reader = dir
        .open_image(ImageKind::GhostFile, id.into())
        .map_err(img_err)?
        .ok_or_else(|| ImagesError::Missing {
            image: ImageKind::GhostFile.file_name(id.into()),
        })?;
    let gfe: GhostFileEntry =
        reader
            .read_entry()
            .map_err(img_err)?
            .ok_or_else(|| ImagesError::Missing {
                image: ImageKind::GhostFile.file_name(id.into()),
            })?;
    if gfe.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RemapError::GhostKind { id, mode: gfe.mode }.into());
    }
    let fail = |source| RemapError::Ghost {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(gfe.mode & 0o7777)
        .open(path)
        .map_err(fail)?;
    let filled = (|| -> Result<(), ImagesError> {
        if gfe.chunks == Some(true) {
            file.set_len(gfe.size.unwrap_or(0)).map_err(fail)?;
            while let Some(chunk) = reader.read_entry::<GhostChunkEntry>().map_err(img_err)? {
                let data = reader.read_extra(chunk.len).map_err(img_err)?;
                file.write_all_at(&data, chunk.off).map_err(fail)?;
            }
        } else {
            let data = reader.read_rest().map_err(img_err)?;
            file.write_all(&data).map_err(fail)?;
        }
        set_metadata(&file, &gfe).map_err(fail)?;
        Ok(())
    })();
    if filled.is_err() {
        let _ = std::fs::remove_file(path);
    }
    filled
}

fn set_metadata(file: &File, gfe: &GhostFileEntry) -> std::io::Result<()> {
    nix::unistd::fchown(file, Some(gfe.uid.into()), Some(gfe.gid.into()))?;
    nix::sys::stat::fchmod(
        file,
        nix::sys::stat::Mode::from_bits_truncate(gfe.mode & 0o7777),
    )?;
    if let (Some(a), Some(m)) = (&gfe.atim, &gfe.mtim) {
        let ts = |t: &criu_proto::images::Timeval| {
            nix::sys::time::TimeSpec::new(t.tv_sec as i64, (t.tv_usec * 1000) as i64)
        };
        nix::sys::stat::futimens(file, &ts(a), &ts(m))?;
    }
    Ok(())
}
