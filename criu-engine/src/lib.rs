//! The checkpoint/restore engine and the glue that serves CRIU-RPC requests.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod arch;
pub mod authz;
pub mod check;
pub mod config;
pub mod cpuinfo;
pub mod creds;
pub mod dump;
pub mod error;
pub mod features;
pub mod files;
pub mod inject;
pub mod kerndat;
pub mod lazy;
pub mod log;
pub mod mem;
pub mod notify;
pub mod opts;
pub mod page_server;
pub mod proc;
pub mod pstree;
pub mod restore;
pub mod seize;
pub mod serve;
pub mod sigact;
mod sys;
pub mod task_core;
pub mod version;
pub mod worker;

pub use error::Error;
