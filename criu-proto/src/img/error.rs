//! Errors of image file I/O.

use std::io;
use std::path::PathBuf;

use super::kind::ImageKind;

/// Why reading or writing an image failed. Every variant names the file;
/// entry-level variants also give the entry number (0-based) and the byte
/// offset where that entry starts.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image directory could not be opened.
    #[error("cannot open image directory {path}")]
    OpenDir {
        /// Directory path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An image file could not be opened.
    #[error("cannot open image {path}")]
    Open {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An image file could not be created.
    #[error("cannot create image {path}")]
    Create {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading failed at the system level.
    #[error("cannot read image {path} at offset {offset}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Offset of the failed read.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing failed at the system level.
    #[error("cannot write image {path} at offset {offset}")]
    Write {
        /// File path.
        path: PathBuf,
        /// Offset of the failed write.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The file ends inside its magic words.
    #[error("image {path} is {len} bytes long, too short for its {kind} magic header")]
    TruncatedHeader {
        /// File path.
        path: PathBuf,
        /// Expected kind.
        kind: ImageKind,
        /// Bytes present.
        len: u64,
    },
    /// A magic word differs from the one the kind requires.
    #[error("image {path} has magic {found:#010x} at offset {offset}, expected {expected:#010x} for {kind}")]
    BadMagic {
        /// File path.
        path: PathBuf,
        /// Expected kind.
        kind: ImageKind,
        /// Offset of the word (0 or 4).
        offset: u64,
        /// Word found.
        found: u32,
        /// Word required.
        expected: u32,
    },
    /// The first magic word is not one CRIU uses.
    #[error("image {path} has unknown magic {magic:#010x}")]
    UnknownMagic {
        /// File path.
        path: PathBuf,
        /// The unrecognised type magic.
        magic: u32,
    },
    /// Entry I/O was attempted on a raw image.
    #[error("image {path} of kind {kind} is raw and has no entries")]
    RawImage {
        /// File path.
        path: PathBuf,
        /// Its kind.
        kind: ImageKind,
    },
    /// The file ends inside an entry's 4-byte size word.
    #[error("image {path}: size word of entry {entry} at offset {offset} is cut short ({got} of 4 bytes)")]
    TruncatedSize {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Offset of the size word.
        offset: u64,
        /// Bytes present.
        got: usize,
    },
    /// The file ends inside an entry's payload.
    #[error("image {path}: entry {entry} at offset {offset} declares {size} bytes but only {got} remain")]
    TruncatedPayload {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Offset of the size word.
        offset: u64,
        /// Declared size.
        size: u32,
        /// Bytes present.
        got: u64,
    },
    /// The file ends inside the raw payload that follows an entry.
    #[error("image {path}: extra payload of entry {entry} at offset {offset} needs {expected} bytes but only {got} remain")]
    TruncatedExtra {
        /// File path.
        path: PathBuf,
        /// Number of the entry the payload follows.
        entry: u64,
        /// Offset where the payload starts.
        offset: u64,
        /// Bytes required.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// An entry's size word exceeds the reader's limit.
    #[error("image {path}: entry {entry} at offset {offset} declares {size} bytes, over the {limit}-byte limit")]
    EntryTooLarge {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Offset of the size word.
        offset: u64,
        /// Declared size.
        size: u32,
        /// Limit in force.
        limit: u32,
    },
    /// An entry is not a valid encoding of its message.
    #[error("image {path}: entry {entry} at offset {offset} is not a valid {message}")]
    Decode {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Offset of the size word.
        offset: u64,
        /// Expected message.
        message: String,
        /// Cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The table names a message this crate has no decoder for.
    #[error("image {path}: entry {entry} is a {message}, which cannot be decoded")]
    UnsupportedMessage {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Message named by the kind table.
        message: String,
    },
    /// An entry read from a file lacks a required field.
    #[error(
        "image {path}: entry {entry} at offset {offset} ({message}) lacks required field {field}"
    )]
    MissingField {
        /// File path.
        path: PathBuf,
        /// Entry number.
        entry: u64,
        /// Offset of the size word.
        offset: u64,
        /// Message of the entry.
        message: String,
        /// Dotted path of the missing field.
        field: String,
    },
    /// An entry to be written lacks a required field.
    #[error(
        "image {path}: refusing to write entry {entry} ({message}) without required field {field}"
    )]
    IncompleteEntry {
        /// File path.
        path: PathBuf,
        /// Entry number it would have had.
        entry: u64,
        /// Message of the entry.
        message: String,
        /// Dotted path of the missing field.
        field: String,
    },
    /// An entry was written whose message does not belong to the kind.
    #[error("image {path}: entry {entry} of {kind} must be {expected}, not {message}")]
    WrongMessage {
        /// File path.
        path: PathBuf,
        /// Kind of the image.
        kind: ImageKind,
        /// Entry number.
        entry: u64,
        /// Message required at that position.
        expected: &'static str,
        /// Message given.
        message: String,
    },
    /// An entry that must be there is absent.
    #[error("image {path} has no {message} entry")]
    NoEntry {
        /// File path.
        path: PathBuf,
        /// Message expected.
        message: String,
    },
    /// An extra payload was written before any entry.
    #[error("image {path}: extra payload written before the first entry")]
    ExtraWithoutEntry {
        /// File path.
        path: PathBuf,
    },
    /// Page data not made of whole pages.
    #[error("pages image {path}: {len} bytes is not a whole number of pages")]
    PartialPage {
        /// File path.
        path: PathBuf,
        /// Length given.
        len: u64,
    },
    /// A read past the end of a pages file.
    #[error("pages image {path}: bytes {offset}..{end} lie beyond its {file_len}-byte length")]
    PagesOutOfRange {
        /// File path.
        path: PathBuf,
        /// Start of the requested range.
        offset: u64,
        /// End of the requested range.
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
}
