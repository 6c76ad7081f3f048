//! CRIU image files: kinds, magic numbers, framing, page files and the image
//! directory (CRIU's `criu/image.c`, `criu/image-desc.c`, `criu/protobuf.c`,
//! `criu/include/magic.h`).
//!
//! A regular image is a stream of little-endian `u32`-length-prefixed
//! protobuf entries behind two magic words:
//!
//! ```text
//!  0               4               8               12
//!  +---------------+---------------+---------------+-----------------+-----
//!  | 19 43 56 54   | type magic    | size (u32 LE) | payload[size]   | ...
//!  | IMG_COMMON    | e.g. PSTREE   |               | protobuf        |
//!  +---------------+---------------+---------------+-----------------+-----
//! ```
//!
//! `inventory.img` carries only its type magic, the service files
//! (`stats-*`, `irmap-cache`) start with `IMG_SERVICE_MAGIC`, raw images
//! (`pages-*.img`, tool dumps) have no framing at all, and some kinds store
//! raw bytes after each entry ([`kind::Extra`]).
//!
//! * [`kind`]: the table of every image kind;
//! * [`magic`]: the magic constants;
//! * [`ImageReader`] / [`ImageWriter`]: entries of one file;
//! * [`pages`]: pagemaps and raw page files;
//! * [`ImagesDir`]: an image directory opened by fd, with typed helpers;
//! * [`decode_any`]: identify a file by its magic and decode it, like `crit`.

mod any;
mod dir;
mod error;
pub mod kind;
pub mod magic;
pub mod pages;
mod reader;
mod schema;
mod writer;

pub use any::{decode_any, decode_any_bytes, AnyEntry, AnyImage, AnyMessage};
pub use dir::ImagesDir;
pub use error::ImageError;
pub use kind::{Entries, Extra, IdFormat, ImageDesc, ImageKind, Layout};
pub use pages::{PageRun, Pagemap, PagesReader, PagesWriter};
pub use reader::{ImageReader, DEFAULT_ENTRY_LIMIT};
pub use writer::ImageWriter;
