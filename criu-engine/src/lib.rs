//! The checkpoint/restore engine and the glue that serves CRIU-RPC requests.
#![deny(unsafe_code)]
#![warn(missing_docs)]
pub mod kerndat;
mod sys;
