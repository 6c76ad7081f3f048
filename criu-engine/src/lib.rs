//! The checkpoint/restore engine and the glue that serves CRIU-RPC requests.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod arch;
pub mod check;
pub mod config;
pub mod cpuinfo;
pub mod error;
pub mod features;
pub mod inject;
pub mod kerndat;
pub mod log;
pub mod notify;
pub mod opts;
pub mod pstree;
pub mod restore;
pub mod seize;
pub mod serve;
mod sys;
pub mod version;
pub mod worker;

pub use error::Error;
