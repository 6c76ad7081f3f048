//! Named pipes of the restored tree (CRIU's `open_fifo_fd` in
//! `criu/fifo.c`): the FIFO is opened by path with its saved flags while a
//! read-write descriptor of our own keeps both ends present (so neither
//! open blocks), and that descriptor queues the saved bytes, once per FIFO.
//!
//! # References
//!
//! - [fifo(7)](https://man7.org/linux/man-pages/man7/fifo.7.html)

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};

use criu_proto::images::PipeDataEntry;
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;

use super::files::FdStep;
use super::images::{read_error, ImagesError};
use crate::sys::clone3::{dup_above, write_raw};

/// Saved FIFO contents by pipe id: (pipe size, bytes).
pub(crate) type FifoData = HashMap<u32, (u32, Vec<u8>)>;

/// Reads `fifo-data.img` (absent: no data).
pub(crate) fn load(dir: &ImagesDir) -> Result<FifoData, ImagesError> {
    let mut out = FifoData::new();
    let err = |source| read_error(ImageKind::FifoData, 0, source);
    let Some(mut reader) = dir.open_image(ImageKind::FifoData, 0).map_err(err)? else {
        return Ok(out);
    };
    while let Some(entry) = reader.read_entry::<PipeDataEntry>().map_err(err)? {
        let data = reader.read_extra(entry.bytes.into()).map_err(err)?;
        out.insert(entry.pipe_id, (entry.size.unwrap_or(0), data));
    }
    Ok(out)
}

/// In the root task: opens the FIFO at `path` with `flags`, queues `data`
/// (pipe size, bytes) into it, and returns the descriptor at `scratch` or
/// above.
pub(crate) fn open(
    path: &CStr,
    flags: OFlag,
    data: Option<&(u32, Vec<u8>)>,
    scratch: RawFd,
) -> Result<RawFd, (FdStep, Errno)> {
    let both = nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| (FdStep::Fifo, e))?;
    let fifo = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| (FdStep::Fifo, e))?;
    if let Some((size, bytes)) = data {
        let want = (*size as usize).max(bytes.len());
        if want > 65536 {
            let want = i32::try_from(want).map_err(|_| (FdStep::FifoData, Errno::EINVAL))?;
            nix::fcntl::fcntl(&both, FcntlArg::F_SETPIPE_SZ(want))
                .map_err(|e| (FdStep::FifoData, e))?;
        }
        write_raw(both.as_raw_fd(), bytes).map_err(|e| (FdStep::FifoData, e))?;
    }
    dup_above(fifo.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, e))
}
