//! Writing entries of an image file (CRIU's `criu/image.c` lazy image
//! creation and `criu/protobuf.c` `pb_write_one`).
//!
//! ```text
//! +--------+-----------+----------+---------------+---------+-----
//! | COMMON | type magic| u32 size | payload[size] | [extra] | ...
//! +--------+-----------+----------+---------------+---------+-----
//! ```
//!
//! The file is created at the first entry, so an image that never receives
//! one does not exist, as with CRIU: no directory ever holds a file made of
//! magic words only. Each entry's size word and payload go out in one buffered
//! write. prost always emits `required` fields of typed messages; entries
//! given already encoded ([`ImageWriter::write_raw_entry`]) are checked against
//! the schema, and one lacking a required field is refused because CRIU
//! cannot read it back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::fd::OwnedFd;

use prost::{Message, Name};

use super::dir::open_file;
use super::error::ImageError;
use super::kind::{ImageKind, Layout};
use super::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use super::schema;

/// Writes one image file, creating it at the first entry.
#[derive(Debug)]
pub struct ImageWriter {
    kind: ImageKind,
    dir: Option<Arc<OwnedFd>>,
    name: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    entries: u64,
    offset: u64,
}

impl ImageWriter {
    /// Prepares `path` as an image of `kind`; nothing is created until the
    /// first entry is written.
    pub fn create(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.as_ref();
        Self::prepare(None, path.to_owned(), path.to_owned(), kind)
    }

    /// Like [`ImageWriter::create`] for `name` inside the directory `dir`;
    /// `path` names the file in errors.
    pub(crate) fn create_at(
        dir: Arc<OwnedFd>,
        name: PathBuf,
        path: PathBuf,
        kind: ImageKind,
    ) -> Result<Self, ImageError> {
        Self::prepare(Some(dir), name, path, kind)
    }

    fn prepare(
        dir: Option<Arc<OwnedFd>>,
        name: PathBuf,
        path: PathBuf,
        kind: ImageKind,
    ) -> Result<Self, ImageError> {
        if kind.layout() == Layout::Raw {
            return Err(ImageError::RawImage { path, kind });
        }
        Ok(ImageWriter {
            kind,
            dir,
            name,
            path,
            file: None,
            entries: 0,
            offset: 0,
        })
    }

    /// Kind of the image.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Path used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Encodes and appends `msg`. It must be the message this kind expects at
    /// this position and carry every required field.
    pub fn write_entry<M: Message + Name>(&mut self, msg: &M) -> Result<(), ImageError> {
        let name = M::full_name();
        if let Some(expected) = self.kind.entry_message(self.entries) {
            if expected != name {
                return Err(ImageError::WrongMessage {
                    path: self.path.clone(),
                    kind: self.kind,
                    entry: self.entries,
                    expected,
                    message: name,
                });
            }
        }
        let payload = msg.encode_to_vec();
        self.check_required(&name, &payload)?;
        self.append_entry(&payload)
    }

    /// Appends `msg` followed by its raw `extra` payload (pipe data, queued
    /// socket data, ...).
    pub fn write_entry_with_extra<M: Message + Name>(
        &mut self,
        msg: &M,
        extra: &[u8],
    ) -> Result<(), ImageError> {
        self.write_entry(msg)?;
        self.write_extra(extra)
    }

    /// Appends an already encoded entry. When the kind has a known message at
    /// this position, its required fields are checked.
    pub fn write_raw_entry(&mut self, payload: &[u8]) -> Result<(), ImageError> {
        if let Some(name) = self.kind.entry_message(self.entries) {
            self.check_required(name, payload)?;
        }
        self.append_entry(payload)
    }

    /// Appends raw bytes after the last entry.
    pub fn write_extra(&mut self, extra: &[u8]) -> Result<(), ImageError> {
        if self.entries == 0 {
            return Err(ImageError::ExtraWithoutEntry {
                path: self.path.clone(),
            });
        }
        self.write_bytes(extra)
    }

    /// Flushes the file (if one was created) and returns the entry count.
    pub fn finish(mut self) -> Result<u64, ImageError> {
        if let Some(mut file) = self.file.take() {
            file.flush().map_err(|source| ImageError::Write {
                path: self.path.clone(),
                offset: self.offset,
                source,
            })?;
        }
        Ok(self.entries)
    }

    fn check_required(&self, message: &str, payload: &[u8]) -> Result<(), ImageError> {
        match schema::missing_required(message, payload) {
            Some(field) => Err(ImageError::IncompleteEntry {
                path: self.path.clone(),
                entry: self.entries,
                message: message.to_owned(),
                field,
            }),
            None => Ok(()),
        }
    }

    fn append_entry(&mut self, payload: &[u8]) -> Result<(), ImageError> {
        let size = u32::try_from(payload.len()).map_err(|_| ImageError::EntryTooLarge {
            path: self.path.clone(),
            entry: self.entries,
            offset: self.offset,
            size: u32::MAX,
            limit: u32::MAX,
        })?;
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(payload);
        self.write_bytes(&buf)?;
        self.entries += 1;
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        if self.file.is_none() {
            self.open()?;
        }
        let offset = self.offset;
        let file = self.file.as_mut().expect("opened just above");
        file.write_all(bytes).map_err(|source| ImageError::Write {
            path: self.path.clone(),
            offset,
            source,
        })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Creates the file and writes its magic words.
    fn open(&mut self) -> Result<(), ImageError> {
        let file = open_file(self.dir.as_deref(), &self.name, true).map_err(|source| {
            ImageError::Create {
                path: self.path.clone(),
                source,
            }
        })?;
        let mut header = Vec::with_capacity(8);
        match self.kind.layout() {
            Layout::Regular => header.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes()),
            Layout::Service => header.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes()),
            Layout::Inventory | Layout::Raw => {}
        }
        header.extend_from_slice(&self.kind.magic().to_le_bytes());
        self.file = Some(BufWriter::new(file));
        self.write_bytes(&header)
    }
}
