//! The checkpoint/restore engine and the glue that serves CRIU-RPC requests.
#![deny(unsafe_code)]
#![warn(missing_docs)]
pub mod kerndat;
mod sys;
pub mod check;
pub mod features;
pub mod version;
mod arch;
pub mod cpuinfo;
