//! Pagemaps and raw page files (CRIU's `criu/pagemap.c` page reader and
//! `criu/page-xfer.c` local writer).
//!
//! ```text
//! pagemap-<pid>.img                         pages-<pages_id>.img (raw)
//! +--------+--------------+                 +--------+--------+-----
//! | COMMON | PAGEMAP      |                 | page 0 | page 1 | ...
//! +--------+--------------+                 +--------+--------+-----
//! | pagemap_head { pages_id }  ------------> file name
//! | pagemap_entry { vaddr, nr_pages, flags = PRESENT } -> next nr_pages pages
//! | pagemap_entry { ..., flags = PARENT }     -> nothing here (parent dir)
//! | ...
//! ```
//!
//! Pages of `PE_PRESENT` entries are stored back to back in pagemap order,
//! 4096 bytes each; other entries take no room. Images older than CRIU 4.2
//! keep the count in field 2 (`compat_nr_pages`) and may use `in_parent`
//! instead of flags; [`PageRun`] normalises both forms.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::ImageError;
use super::reader::ImageReader;
use super::writer::ImageWriter;
use crate::images::{PagemapEntry, PagemapHead};

/// Page size of every architecture we dump.
pub const PAGE_SIZE: u64 = 4096;
/// The range's contents are in the parent image directory.
pub const PE_PARENT: u32 = 0x1;
/// The range may be restored lazily.
pub const PE_LAZY: u32 = 0x2;
/// The range's contents are in this directory's pages file.
pub const PE_PRESENT: u32 = 0x4;

/// A pagemap file: its head and its entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pagemap {
    /// Names the pages file.
    pub head: PagemapHead,
    /// Runs of pages, ascending by address.
    pub entries: Vec<PagemapEntry>,
}

/// One pagemap entry with CRIU 4.2's defaults applied and its place in the
/// pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// First address (or offset in the shared object for shmem pagemaps).
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u64,
    /// `PE_*` bits.
    pub flags: u32,
    /// Byte offset in the pages file, for present runs.
    pub pages_offset: Option<u64>,
}

impl PageRun {
    /// Normalises `entry`: `in_parent` means `PE_PARENT`, absent flags mean
    /// `PE_PRESENT`, an absent `nr_pages` falls back to `compat_nr_pages`.
    pub fn from_entry(entry: &PagemapEntry, pages_offset: Option<u64>) -> PageRun {
        let flags = if entry.in_parent == Some(true) {
            entry.flags.unwrap_or(0) | PE_PARENT
        } else {
            entry.flags.unwrap_or(PE_PRESENT)
        };
        PageRun {
            vaddr: entry.vaddr,
            nr_pages: entry.nr_pages.unwrap_or(entry.compat_nr_pages.into()),
            flags,
            pages_offset: (flags & PE_PRESENT != 0).then_some(pages_offset).flatten(),
        }
    }

    /// Length of the run in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.nr_pages.saturating_mul(PAGE_SIZE)
    }

    /// Whether the contents are in this directory's pages file.
    pub fn is_present(&self) -> bool {
        self.flags & PE_PRESENT != 0
    }
}

impl Pagemap {
    /// Reads a whole pagemap: the head (which must be there), then entries.
    pub fn read<R: Read>(reader: &mut ImageReader<R>) -> Result<Pagemap, ImageError> {
        let head = reader.read_single::<PagemapHead>()?;
        let entries = reader.read_all::<PagemapEntry>()?;
        Ok(Pagemap { head, entries })
    }

    /// Writes the head and every entry.
    pub fn write(&self, writer: &mut ImageWriter) -> Result<(), ImageError> {
        writer.write_entry(&self.head)?;
        for entry in &self.entries {
            writer.write_entry(entry)?;
        }
        Ok(())
    }

    /// The runs, normalised, with the pages file offset of present ones.
    pub fn runs(&self) -> impl Iterator<Item = PageRun> + '_ {
        let mut offset = 0u64;
        self.entries.iter().map(move |entry| {
            let run = PageRun::from_entry(entry, Some(offset));
            if run.is_present() {
                offset = offset.saturating_add(run.len_bytes());
            }
            run
        })
    }

    /// Bytes the pages file must hold: all present runs.
    pub fn present_bytes(&self) -> u64 {
        self.runs()
            .filter(PageRun::is_present)
            .fold(0u64, |sum, run| sum.saturating_add(run.len_bytes()))
    }

    /// A CRIU 4.2 style entry: `compat_nr_pages = 0`, `flags` and `nr_pages`
    /// set.
    pub fn entry(vaddr: u64, nr_pages: u64, flags: u32) -> PagemapEntry {
        PagemapEntry {
            vaddr,
            compat_nr_pages: 0,
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(nr_pages),
        }
    }
}

/// Random-access reader of a raw `pages-<id>.img`.
#[derive(Debug)]
pub struct PagesReader {
    file: File,
    path: PathBuf,
    len: u64,
}

impl PagesReader {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<PagesReader, ImageError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(file, path.to_owned())
    }

    /// Wraps an open pages file; `path` names it in errors.
    pub fn new(file: File, path: PathBuf) -> Result<PagesReader, ImageError> {
        let len = file
            .metadata()
            .map_err(|source| ImageError::Read {
                path: path.clone(),
                offset: 0,
                source,
            })?
            .len();
        Ok(PagesReader { file, path, len })
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from byte `offset`; the whole range must be in the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.len {
            return Err(ImageError::PagesOutOfRange {
                path: self.path.clone(),
                offset,
                end,
                file_len: self.len,
            });
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| ImageError::Read {
                path: self.path.clone(),
                offset,
                source,
            })
    }

    /// Reads the contents of a present run.
    pub fn read_run(&self, run: &PageRun) -> Result<Vec<u8>, ImageError> {
        let offset = run.pages_offset.unwrap_or(self.len);
        let end = offset.saturating_add(run.len_bytes());
        let len = usize::try_from(run.len_bytes())
            .ok()
            .filter(|_| end <= self.len)
            .ok_or_else(|| ImageError::PagesOutOfRange {
                path: self.path.clone(),
                offset,
                end,
                file_len: self.len,
            })?;
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }
}

/// Appends whole pages to a raw `pages-<id>.img`.
#[derive(Debug)]
pub struct PagesWriter {
    file: BufWriter<File>,
    path: PathBuf,
    len: u64,
}

impl PagesWriter {
    /// Creates (truncating) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<PagesWriter, ImageError> {
        let path = path.as_ref();
        let file =
            super::dir::open_file(None, path, true).map_err(|source| ImageError::Create {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::new(file, path.to_owned()))
    }

    /// Wraps a freshly created pages file; `path` names it in errors.
    pub fn new(file: File, path: PathBuf) -> PagesWriter {
        PagesWriter {
            file: BufWriter::new(file),
            path,
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`, a whole number of pages.
    pub fn write_pages(&mut self, data: &[u8]) -> Result<(), ImageError> {
        if data.len() as u64 % PAGE_SIZE != 0 {
            return Err(ImageError::PartialPage {
                path: self.path.clone(),
                len: data.len() as u64,
            });
        }
        self.file
            .write_all(data)
            .map_err(|source| ImageError::Write {
                path: self.path.clone(),
                offset: self.len,
                source,
            })?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Flushes and returns the file length.
    pub fn finish(mut self) -> Result<u64, ImageError> {
        self.file.flush().map_err(|source| ImageError::Write {
            path: self.path.clone(),
            offset: self.len,
            source,
        })?;
        Ok(self.len)
    }
}
