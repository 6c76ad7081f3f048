//! `waitpid` for traced tasks, with or without a deadline.
//!
//! # References
//!
//! - [waitpid(2)](https://man7.org/linux/man-pages/man2/waitpid.2.html)

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Waits for the next state change of `pid`, retrying on `EINTR`.
pub(crate) fn wait(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Waits for the next state change of `pid` until `deadline`; `None` when
/// the deadline passed first. Polls with `WNOHANG` and short, growing sleeps
/// (a traced task's stop is not reported through a pidfd, and a signal-based
/// wake-up would need process-wide handler state). The sleeps stop growing
/// at 1 ms: a stop comes within a few scheduler slices, and longer naps
/// would add their own latency to every seize.
pub(crate) fn wait_until(pid: Pid, deadline: Instant) -> nix::Result<Option<WaitStatus>> {
    let mut nap = Duration::from_micros(50);
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Ok(Some(status)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}
