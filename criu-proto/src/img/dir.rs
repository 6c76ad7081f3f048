//! An open image directory (CRIU's `criu/image.c` `open_image_dir` and the
//! `openat` calls relative to its fd).
//!
//! Files are opened relative to a directory fd held for the whole dump or
//! restore, so later renames of the directory path do not matter. Missing
//! images read as empty, as CRIU treats them; created images appear only when
//! they get an entry (see [`super::writer`]). Raw `pages-<id>.img` files are
//! created eagerly, like CRIU does.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use prost::{Message, Name};

use super::any::{decode_any_bytes, AnyImage};
use super::error::ImageError;
use super::kind::ImageKind;
use super::pages::{Pagemap, PagesReader, PagesWriter};
use super::reader::ImageReader;
use super::writer::ImageWriter;
use crate::images::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry, PstreeEntry,
    TaskKobjIdsEntry,
};

/// Permission bits of created images (CRIU's `CR_FD_PERM`).
const IMAGE_MODE: u32 = 0o600;

/// Opens `name` relative to `dir` (or as a plain path when `dir` is `None`),
/// for reading or for writing (created and truncated).
pub(crate) fn open_file(dir: Option<&OwnedFd>, name: &Path, write: bool) -> io::Result<File> {
    let flags = if write {
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC
    } else {
        OFlag::O_RDONLY
    } | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(IMAGE_MODE);
    let fd = match dir {
        Some(dir) => openat(dir, name, flags, mode)?,
        None => nix::fcntl::open(name, flags, mode)?,
    };
    Ok(File::from(fd))
}

/// An image directory opened by fd.
#[derive(Debug, Clone)]
pub struct ImagesDir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl ImagesDir {
    /// Opens the directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| ImageError::OpenDir {
            path: path.to_owned(),
            source: errno.into(),
        })?;
        Ok(Self::from_fd(fd, path))
    }

    /// Uses an already open directory fd (for example one passed over
    /// CRIU-RPC as `images_dir_fd`); `path` only names it in errors.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Self {
        ImagesDir {
            fd: Arc::new(fd),
            path: path.into(),
        }
    }

    /// Path used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory fd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Full path of an image, for messages.
    pub fn image_path(&self, kind: ImageKind, id: u64) -> PathBuf {
        self.path.join(kind.file_name(id))
    }

    /// Opens image `kind`/`id` for reading; `None` if the file does not exist.
    pub fn open_image(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<Option<ImageReader<std::io::BufReader<File>>>, ImageError> {
        let Some(file) = self.open_existing(&kind.file_name(id))? else {
            return Ok(None);
        };
        ImageReader::new(
            std::io::BufReader::new(file),
            kind,
            self.image_path(kind, id),
        )
        .map(Some)
    }

    /// Prepares image `kind`/`id` for writing; the file appears with the
    /// first entry.
    pub fn create_image(&self, kind: ImageKind, id: u64) -> Result<ImageWriter, ImageError> {
        ImageWriter::create_at(
            Arc::clone(&self.fd),
            kind.file_name(id).into(),
            self.image_path(kind, id),
            kind,
        )
    }

    /// Reads every entry of an image as `M`; a missing file gives no entries.
    pub fn read_all<M: Message + Name + Default>(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<Vec<M>, ImageError> {
        match self.open_image(kind, id)? {
            Some(mut reader) => reader.read_all(),
            None => Ok(Vec::new()),
        }
    }

    /// Reads the entry of a single-entry image; `None` if the file does not
    /// exist, an error if it exists without an entry.
    pub fn read_single<M: Message + Name + Default>(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<Option<M>, ImageError> {
        self.open_image(kind, id)?
            .map(|mut reader| reader.read_single())
            .transpose()
    }

    /// Writes `entries` as image `kind`/`id`; nothing is created when empty.
    pub fn write_all<'a, M: Message + Name + 'a>(
        &self,
        kind: ImageKind,
        id: u64,
        entries: impl IntoIterator<Item = &'a M>,
    ) -> Result<u64, ImageError> {
        let mut writer = self.create_image(kind, id)?;
        for entry in entries {
            writer.write_entry(entry)?;
        }
        writer.finish()
    }

    /// Writes the one entry of a single-entry image.
    pub fn write_single<M: Message + Name>(
        &self,
        kind: ImageKind,
        id: u64,
        entry: &M,
    ) -> Result<(), ImageError> {
        self.write_all(kind, id, [entry]).map(drop)
    }

    /// `inventory.img`, which must exist.
    pub fn inventory(&self) -> Result<InventoryEntry, ImageError> {
        self.required_single(ImageKind::Inventory, 0)
    }

    /// `pstree.img` entries.
    pub fn pstree(&self) -> Result<Vec<PstreeEntry>, ImageError> {
        self.read_all(ImageKind::Pstree, 0)
    }

    /// `core-<tid>.img`, which must exist.
    pub fn core(&self, tid: u32) -> Result<CoreEntry, ImageError> {
        self.required_single(ImageKind::Core, tid.into())
    }

    /// `ids-<pid>.img`, if present.
    pub fn ids(&self, pid: u32) -> Result<Option<TaskKobjIdsEntry>, ImageError> {
        self.read_single(ImageKind::Ids, pid.into())
    }

    /// `mm-<pid>.img`, if present.
    pub fn mm(&self, pid: u32) -> Result<Option<MmEntry>, ImageError> {
        self.read_single(ImageKind::Mm, pid.into())
    }

    /// `fs-<pid>.img`, if present.
    pub fn fs(&self, pid: u32) -> Result<Option<FsEntry>, ImageError> {
        self.read_single(ImageKind::Fs, pid.into())
    }

    /// `fdinfo-<files_id>.img` entries.
    pub fn fdinfo(&self, files_id: u32) -> Result<Vec<FdinfoEntry>, ImageError> {
        self.read_all(ImageKind::Fdinfo, files_id.into())
    }

    /// `files.img` entries.
    pub fn files(&self) -> Result<Vec<FileEntry>, ImageError> {
        self.read_all(ImageKind::Files, 0)
    }

    /// `pagemap-<pid>.img`, if present.
    pub fn pagemap(&self, pid: u32) -> Result<Option<Pagemap>, ImageError> {
        self.read_pagemap(ImageKind::Pagemap, pid.into())
    }

    /// `pagemap-shmem-<shmid>.img`, if present.
    pub fn shmem_pagemap(&self, shmid: u64) -> Result<Option<Pagemap>, ImageError> {
        self.read_pagemap(ImageKind::ShmemPagemap, shmid)
    }

    /// Writes a pagemap (`kind` is [`ImageKind::Pagemap`] or
    /// [`ImageKind::ShmemPagemap`]); the head is always written.
    pub fn write_pagemap(&self, kind: ImageKind, id: u64, map: &Pagemap) -> Result<(), ImageError> {
        let mut writer = self.create_image(kind, id)?;
        map.write(&mut writer)?;
        writer.finish().map(drop)
    }

    /// Opens `pages-<id>.img` for random-access reads.
    pub fn open_pages(&self, id: u32) -> Result<PagesReader, ImageError> {
        let path = self.image_path(ImageKind::Pages, id.into());
        let file = open_file(
            Some(&self.fd),
            Path::new(&ImageKind::Pages.file_name(id.into())),
            false,
        )
        .map_err(|source| ImageError::Open {
            path: path.clone(),
            source,
        })?;
        PagesReader::new(file, path)
    }

    /// Creates (now, even if it stays empty) `pages-<id>.img`.
    pub fn create_pages(&self, id: u32) -> Result<PagesWriter, ImageError> {
        let path = self.image_path(ImageKind::Pages, id.into());
        let file = open_file(
            Some(&self.fd),
            Path::new(&ImageKind::Pages.file_name(id.into())),
            true,
        )
        .map_err(|source| ImageError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(PagesWriter::new(file, path))
    }

    /// Identifies the file `name` by its magic and decodes all of it (see
    /// [`super::decode_any`]).
    pub fn decode_any(&self, name: &str) -> Result<AnyImage, ImageError> {
        let path = self.path.join(name);
        let Some(mut file) = self.open_existing(name)? else {
            return Err(ImageError::Open {
                path,
                source: io::ErrorKind::NotFound.into(),
            });
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(|source| ImageError::Read {
            path: path.clone(),
            offset: 0,
            source,
        })?;
        decode_any_bytes(&bytes, &path)
    }

    fn read_pagemap(&self, kind: ImageKind, id: u64) -> Result<Option<Pagemap>, ImageError> {
        self.open_image(kind, id)?
            .map(|mut reader| Pagemap::read(&mut reader))
            .transpose()
    }

    fn required_single<M: Message + Name + Default>(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<M, ImageError> {
        self.read_single(kind, id)?.ok_or_else(|| ImageError::Open {
            path: self.image_path(kind, id),
            source: io::ErrorKind::NotFound.into(),
        })
    }

    fn open_existing(&self, name: &str) -> Result<Option<File>, ImageError> {
        match open_file(Some(&self.fd), Path::new(name), false) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ImageError::Open {
                path: self.path.join(name),
                source,
            }),
        }
    }
}
