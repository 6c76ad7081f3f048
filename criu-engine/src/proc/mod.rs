//! Parsers for the `/proc/<pid>/...` files a dump reads (CRIU's
//! `criu/proc_parse.c`).
//!
//! Each submodule turns the text (or, for `pagemap`, the binary words) of one
//! file into a plain struct and is unit-tested on captured contents; [`read`]
//! is the only place that touches the file system.
//!
//! # References
//!
//! - [proc_pid_stat(5)](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html),
//!   [proc_pid_status(5)](https://man7.org/linux/man-pages/man5/proc_pid_status.5.html),
//!   [proc_pid_maps(5)](https://man7.org/linux/man-pages/man5/proc_pid_maps.5.html),
//!   [proc_pid_smaps(5)](https://man7.org/linux/man-pages/man5/proc_pid_smaps.5.html),
//!   [proc_pid_fdinfo(5)](https://man7.org/linux/man-pages/man5/proc_pid_fdinfo.5.html),
//!   [pagemap](https://docs.kernel.org/admin-guide/mm/pagemap.html)

pub mod fdinfo;
pub mod maps;
pub mod pagemap;
pub mod smaps;
pub mod stat;
pub mod status;
pub mod timers;

use std::path::PathBuf;

/// A `/proc` file could not be read or did not look as expected.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Reading the file failed (the task may have exited).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The contents did not parse.
    #[error("cannot parse {file}: {what}")]
    Parse {
        /// Which kind of file (`stat`, `status`, `smaps`...).
        file: &'static str,
        /// What was wrong.
        what: String,
    },
}

impl ProcError {
    pub(crate) fn parse(file: &'static str, what: impl Into<String>) -> Self {
        ProcError::Parse {
            file,
            what: what.into(),
        }
    }
}

/// Path of `/proc/<pid>/<name>`.
pub fn path(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Reads `/proc/<pid>/<name>` as text.
pub fn read(pid: i32, name: &str) -> Result<String, ProcError> {
    let path = path(pid, name);
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// Reads `/proc/<pid>/<name>` as bytes.
pub fn read_bytes(pid: i32, name: &str) -> Result<Vec<u8>, ProcError> {
    let path = path(pid, name);
    std::fs::read(&path).map_err(|source| ProcError::Read { path, source })
}

/// Parses a hexadecimal number, naming `file` on failure.
pub(crate) fn hex(file: &'static str, s: &str) -> Result<u64, ProcError> {
    u64::from_str_radix(s, 16).map_err(|_| ProcError::parse(file, format!("bad hex number {s:?}")))
}
