//! The checkpoint/restore engine and the glue that serves CRIU-RPC requests.
#![deny(unsafe_code)]
#![warn(missing_docs)]
mod arch;
pub mod check;
pub mod cpuinfo;
pub mod features;
pub mod kerndat;
mod sys;
pub mod version;
