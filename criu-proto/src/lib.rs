//! Protobuf types for CRIU-RPC and every CRIU image, plus image file I/O.
//!
//! The schemas under `proto/` are authored in this repository; names, field
//! numbers, labels, defaults and enum values match CRIU 4.2 so that bytes
//! interoperate with CRIU, `crit` and every CRIU-RPC client.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod generated;

pub use generated::{images, rpc};
pub use prost::Message;
