//! The CRIU-RPC request loop (interface fixed; implementation pending).
//!
//! The loop owns every protocol rule that does not depend on what a request
//! does: decoding, keep_open, the pre-dump loop, invalid types, NOTIFY round
//! trips and the worker's exit status. A [`Handler`] serves valid requests.

use std::os::fd::BorrowedFd;

use criu_proto::rpc::{CriuOpts, CriuReq, CriuResp};

/// Who serves the connection: a swrk worker (client's child, shares its fds)
/// or a service worker (swrk-only options refused, no default config files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `criu swrk <fd>` started by the client.
    Swrk,
    /// A per-connection worker of the service daemon.
    Service,
}

/// Credentials of the peer of the connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Pid of the process that created/connected the client end.
    pub pid: i32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// The client's answer to a notification.
#[derive(Debug, Clone, Default)]
pub struct NotifyAck {
    /// True only when the client replied NOTIFY with `notify_success = true`.
    pub success: bool,
    /// `opts` carried by the ack (used by `query-ext-files`).
    pub opts: Option<CriuOpts>,
}

/// What a handler gives back for one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Send this response.
    Send(CriuResp),
    /// Send nothing (a successful self-dump without `leave_running`: the
    /// requester is gone); `success` decides the exit status.
    Silent {
        /// Whether the request succeeded.
        success: bool,
    },
}

/// What the handler can do on the connection while serving a request.
pub trait RequestCtx {
    /// Worker mode.
    fn mode(&self) -> Mode;
    /// Credentials of the peer.
    fn peer(&self) -> PeerCred;
    /// Inode of the worker's own end of the connection socket (self-dump).
    fn socket_inode(&self) -> u64;
    /// Sends `{NOTIFY, notify{script, pid}}` (with `fd` attached through
    /// `SCM_RIGHTS` when given) and waits for the client's ack. EOF or an
    /// error counts as a failed notification.
    fn notify(&mut self, script: &str, pid: Option<i32>, fd: Option<BorrowedFd<'_>>) -> NotifyAck;
}

/// Serves valid requests (everything except EMPTY, NOTIFY and unknown types).
pub trait Handler {
    /// Serves one request and returns the reply. The loop forces `type` of
    /// the response it sends only for protocol errors; the handler sets it.
    fn handle(&mut self, req: &CriuReq, ctx: &mut dyn RequestCtx) -> Reply;
}
