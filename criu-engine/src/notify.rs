//! Notifications an action sends to its client while it runs (CRIU's RPC
//! NOTIFY messages and action scripts, `criu/action-scripts.c`).

/// Sends one named notification and says whether the client acknowledged it.
pub trait Notify {
    /// `script` is CRIU's name (`pre-dump`, `post-dump`, `pre-restore`,
    /// `post-restore`, ...); `pid` is set only for `setup-namespaces` and
    /// `post-restore` (the real pid of the restored root).
    fn notify(&mut self, script: &'static str, pid: Option<i32>) -> bool;

    /// Sends a notification carrying descriptor `fd` (`orphan-pts-master`),
    /// which only a client reached over RPC with notifications enabled can
    /// take; says whether it did.
    fn notify_fd(&mut self, script: &'static str, fd: std::os::fd::BorrowedFd<'_>) -> bool {
        let _ = (script, fd);
        false
    }
}

/// For callers without a client (the command line): every notification succeeds.
pub struct NoNotify;

impl Notify for NoNotify {
    fn notify(&mut self, _script: &'static str, _pid: Option<i32>) -> bool {
        true
    }
}
