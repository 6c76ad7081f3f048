//! Reading entries of an image file (CRIU's `criu/image.c` open/check and
//! `criu/protobuf.c` `pb_read_one`).
//!
//! ```text
//! offset 0        4           8
//!        +--------+-----------+------------------------------------------+
//!        | COMMON | type magic| u32 size | payload[size] | [extra] | ... |
//!        +--------+-----------+------------------------------------------+
//! ```
//!
//! `inventory.img` has only its type magic before the entries; service files
//! replace `COMMON` with `IMG_SERVICE_MAGIC`. Words are little-endian. The
//! entry list ends when reading the size word returns no byte at all; a partial
//! size word or payload is corruption. A size of 0 is a valid, empty message.
//! `extra` is raw data whose length only the preceding entry knows (see
//! [`super::kind::Extra`]); callers read it with [`ImageReader::read_extra`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use prost::{Message, Name};

use super::error::ImageError;
use super::kind::{ImageKind, Layout};
use super::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use super::schema;

/// Default largest entry payload accepted (64 MiB). CRIU's largest entries
/// (`mm_entry` of a process with many mappings) stay far below it.
pub const DEFAULT_ENTRY_LIMIT: u32 = 64 << 20;

/// Reads entries of one image file, checking its magic first.
#[derive(Debug)]
pub struct ImageReader<R = BufReader<File>> {
    inner: R,
    kind: ImageKind,
    path: PathBuf,
    offset: u64,
    entry: u64,
    entry_offset: u64,
    limit: u32,
}

impl ImageReader<BufReader<File>> {
    /// Opens `path` as an image of `kind` and checks its magic.
    pub fn open(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufReader::new(file), kind, path)
    }
}

impl<R: Read> ImageReader<R> {
    /// Wraps `inner`, positioned at the start of an image of `kind`, and
    /// checks its magic. `path` only names the file in errors.
    pub fn new(inner: R, kind: ImageKind, path: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let mut reader = ImageReader {
            inner,
            kind,
            path: path.into(),
            offset: 0,
            entry: 0,
            entry_offset: 0,
            limit: DEFAULT_ENTRY_LIMIT,
        };
        let first = match kind.layout() {
            Layout::Regular => Some(IMG_COMMON_MAGIC),
            Layout::Service => Some(IMG_SERVICE_MAGIC),
            Layout::Inventory => None,
            Layout::Raw => {
                return Err(ImageError::RawImage {
                    path: reader.path,
                    kind,
                })
            }
        };
        if let Some(first) = first {
            reader.expect_magic(first)?;
        }
        reader.expect_magic(kind.magic())?;
        reader.entry_offset = reader.offset;
        Ok(reader)
    }

    /// A reader whose header (`offset` bytes) was already checked by the
    /// caller; `inner` is positioned at the first entry.
    pub(crate) fn resume(inner: R, kind: ImageKind, path: PathBuf, offset: u64) -> Self {
        ImageReader {
            inner,
            kind,
            path,
            offset,
            entry: 0,
            entry_offset: offset,
            limit: DEFAULT_ENTRY_LIMIT,
        }
    }

    /// Sets the largest entry payload accepted (default [`DEFAULT_ENTRY_LIMIT`]).
    pub fn with_entry_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Kind of the image.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Path used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of entries read so far.
    pub fn entries_read(&self) -> u64 {
        self.entry
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next entry's payload without decoding it; `None` at end of
    /// file.
    pub fn read_raw_entry(&mut self) -> Result<Option<Vec<u8>>, ImageError> {
        let start = self.offset;
        let mut word = [0u8; 4];
        let got = self.fill(&mut word)?;
        if got == 0 {
            return Ok(None);
        }
        if got < word.len() {
            return Err(ImageError::TruncatedSize {
                path: self.path.clone(),
                entry: self.entry,
                offset: start,
                got,
            });
        }
        let size = u32::from_le_bytes(word);
        if size > self.limit {
            return Err(ImageError::EntryTooLarge {
                path: self.path.clone(),
                entry: self.entry,
                offset: start,
                size,
                limit: self.limit,
            });
        }
        let payload = self.take(u64::from(size))?;
        if payload.len() as u64 != u64::from(size) {
            return Err(ImageError::TruncatedPayload {
                path: self.path.clone(),
                entry: self.entry,
                offset: start,
                size,
                got: payload.len() as u64,
            });
        }
        self.entry_offset = start;
        self.entry += 1;
        Ok(Some(payload))
    }

    /// Reads and decodes the next entry as `M`, rejecting it if a required
    /// field is missing; `None` at end of file.
    pub fn read_entry<M: Message + Name + Default>(&mut self) -> Result<Option<M>, ImageError> {
        let Some(payload) = self.read_raw_entry()? else {
            return Ok(None);
        };
        decode_entry(
            &payload,
            &M::full_name(),
            &self.path,
            self.entry - 1,
            self.entry_offset,
        )
        .map(Some)
    }

    /// Reads the first entry of a single-entry image (`inventory`, `core`,
    /// `ids`, `mm`, `fs`, ...). Like CRIU, anything after it is ignored.
    pub fn read_single<M: Message + Name + Default>(&mut self) -> Result<M, ImageError> {
        self.read_entry()?.ok_or_else(|| ImageError::NoEntry {
            path: self.path.clone(),
            message: M::full_name(),
        })
    }

    /// Reads every remaining entry as `M`.
    pub fn read_all<M: Message + Name + Default>(&mut self) -> Result<Vec<M>, ImageError> {
        let mut all = Vec::new();
        while let Some(entry) = self.read_entry()? {
            all.push(entry);
        }
        Ok(all)
    }

    /// Reads `len` bytes of raw payload following the last entry.
    pub fn read_extra(&mut self, len: u64) -> Result<Vec<u8>, ImageError> {
        let start = self.offset;
        let data = self.take(len)?;
        if data.len() as u64 != len {
            return Err(ImageError::TruncatedExtra {
                path: self.path.clone(),
                entry: self.entry.saturating_sub(1),
                offset: start,
                expected: len,
                got: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// Reads everything up to end of file (the contents of a small ghost file).
    pub fn read_rest(&mut self) -> Result<Vec<u8>, ImageError> {
        let start = self.offset;
        let mut data = Vec::new();
        let n = self
            .inner
            .read_to_end(&mut data)
            .map_err(|source| self.read_error(start, source))?;
        self.offset += n as u64;
        Ok(data)
    }

    fn expect_magic(&mut self, expected: u32) -> Result<(), ImageError> {
        let at = self.offset;
        let mut word = [0u8; 4];
        let got = self.fill(&mut word)?;
        if got < word.len() {
            return Err(ImageError::TruncatedHeader {
                path: self.path.clone(),
                kind: self.kind,
                len: self.offset,
            });
        }
        let found = u32::from_le_bytes(word);
        if found != expected {
            return Err(ImageError::BadMagic {
                path: self.path.clone(),
                kind: self.kind,
                offset: at,
                found,
                expected,
            });
        }
        Ok(())
    }

    /// Reads until `buf` is full or end of file; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(self.read_error(self.offset + got as u64, source)),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads up to `len` bytes, growing the buffer as data arrives so that a
    /// corrupt length cannot make us allocate it up front.
    fn take(&mut self, len: u64) -> Result<Vec<u8>, ImageError> {
        const FIRST_CHUNK: u64 = 64 << 10;
        let start = self.offset;
        let mut data = Vec::with_capacity(usize::try_from(len.min(FIRST_CHUNK)).unwrap_or(0));
        let n = (&mut self.inner)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|source| self.read_error(start, source))?;
        self.offset += n as u64;
        Ok(data)
    }

    fn read_error(&self, offset: u64, source: io::Error) -> ImageError {
        ImageError::Read {
            path: self.path.clone(),
            offset,
            source,
        }
    }
}

/// Decodes one entry payload as `M` (named `message` in errors) and checks
/// its required fields.
pub(crate) fn decode_entry<M: Message + Default>(
    payload: &[u8],
    message: &str,
    path: &Path,
    entry: u64,
    offset: u64,
) -> Result<M, ImageError> {
    let decoded = M::decode(payload).map_err(|source| ImageError::Decode {
        path: path.to_owned(),
        entry,
        offset,
        message: message.to_owned(),
        source,
    })?;
    if let Some(field) = schema::missing_required(message, payload) {
        return Err(ImageError::MissingField {
            path: path.to_owned(),
            entry,
            offset,
            message: message.to_owned(),
            field,
        });
    }
    Ok(decoded)
}
