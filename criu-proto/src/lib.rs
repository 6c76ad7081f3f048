//! Protobuf types for CRIU-RPC and every CRIU image, plus image file I/O.
//!
//! The schemas under `proto/` are authored in this repository; names, field
//! numbers, labels, defaults and enum values match CRIU 4.2 so that bytes
//! interoperate with CRIU, `crit` and every CRIU-RPC client.
//!
//! * [`rpc`] and [`images`]: the prost-generated messages;
//! * [`img`]: image files (kinds, magics, reading, writing, page files, the
//!   image directory);
//! * [`FILE_DESCRIPTOR_SET`]: the compiled schemas, for reflection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod generated;
pub mod img;

pub use error::Error;
pub use generated::{images, rpc, FILE_DESCRIPTOR_SET};
pub use prost::{Message, Name};
