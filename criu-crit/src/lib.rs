//! `crit`, the CRIU image tool, in Rust: decode images to JSON, encode JSON
//! back to images, show entry counts and explore an image directory, with
//! output identical to CRIU 4.2's `crit` (`crit/` and `lib/pycriu/images/`
//! in CRIU's tree).
//!
//! * [`image`]: whole files to and from JSON ([`decode_image`],
//!   [`encode_image`], [`info`]);
//! * [`to_json`] / [`from_json`]: one message to and from JSON by
//!   reflection over [`criu_proto::FILE_DESCRIPTOR_SET`];
//! * [`explore`]: `crit x DIR ps|fds|mems|rss`;
//! * [`cli`]: the command line;
//! * [`json`]: the JSON tree and its Python-compatible printer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base64;
pub mod cli;
pub mod explore;
pub mod from_json;
pub mod image;
pub mod json;
pub mod number;
pub mod quopri;
pub mod schema;
pub mod tables;
pub mod to_json;

pub use image::{decode_image, encode_image, info, DecodeOptions, ImageError};
pub use json::Json;
