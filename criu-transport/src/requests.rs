//! The CRIU-RPC request loop.
//!
//! The loop owns every protocol rule that does not depend on what a request
//! does: decoding, keep_open, the pre-dump loop, invalid types, NOTIFY round
//! trips, the response size limit and the worker's exit status
//! (rpc-protocol.md 2.4, 4.1, 4.2, 5.1, 5.2). A [`Handler`] serves valid
//! requests.
//!
//! CRIU counterpart: `cr_service_work()` and `send_criu_rpc_script()` in
//! `criu/cr-service.c`.

use std::os::fd::BorrowedFd;

use criu_proto::rpc::{CriuNotify, CriuOpts, CriuReq, CriuReqType, CriuResp};
use criu_proto::Message;

use crate::response;
use crate::seqpacket::{SeqPacket, SeqPacketError};

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
#[expect(
    clippy::large_enum_variant,
    reason = "one reply per request; boxing would change the fixed interface"
)]
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

/// Exit status of a connection whose last step succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status of a failed DUMP or RESTORE (also when its response could not
/// be delivered).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a connection that ended abnormally: EOF, protocol error,
/// forbidden keep_open, failed pre-dump, undeliverable response.
pub const EXIT_ABNORMAL: u8 = 255;

/// Whether `keep_open` is allowed on a request whose `type` field is
/// `raw_type` (rpc-protocol.md 4.2). Unknown types never allow it.
pub fn keep_open_allowed(raw_type: i32) -> bool {
    matches!(
        CriuReqType::try_from(raw_type),
        Ok(CriuReqType::PageServer
            | CriuReqType::PageServerChld
            | CriuReqType::CpuinfoDump
            | CriuReqType::CpuinfoCheck
            | CriuReqType::FeatureCheck
            | CriuReqType::Version)
    )
}

/// Serves one connection until it ends and returns the worker's exit status
/// (rpc-protocol.md 2.4): [`EXIT_OK`], [`EXIT_FAILED`] or [`EXIT_ABNORMAL`].
///
/// Never sends anything before the first request arrives. Protocol faults
/// (undecodable request, EMPTY/NOTIFY/unknown type, wrong message in the
/// pre-dump loop) get `{type: EMPTY, success: false, cr_errmsg}` and end the
/// connection; a forbidden `keep_open` ends it without a reply.
#[doc(alias = "cr_service_work")]
#[tracing::instrument(skip_all, fields(mode = ?mode))]
pub fn serve(conn: &SeqPacket, mode: Mode, handler: &mut dyn Handler) -> u8 {
    let peer = match conn.peer_cred() {
        Ok(peer) => peer,
        Err(err) => {
            tracing::error!(error = %err, "cannot identify the peer");
            return EXIT_ABNORMAL;
        }
    };
    let socket_inode = match conn.inode() {
        Ok(ino) => ino,
        Err(err) => {
            tracing::error!(error = %err, "cannot stat the connection socket");
            return EXIT_ABNORMAL;
        }
    };
    let mut session = Session {
        conn,
        mode,
        peer,
        socket_inode,
    };
    loop {
        let Some(req) = read_request(conn) else {
            return EXIT_ABNORMAL;
        };
        let ty = CriuReqType::try_from(req.r#type);
        let keep_open = req.keep_open == Some(true);
        tracing::debug!(req_type = ?ty, raw_type = req.r#type, keep_open, "request");
        if keep_open && !keep_open_allowed(req.r#type) {
            tracing::debug!(req_type = ?ty, "keep_open not allowed for this type, dropping");
            return EXIT_ABNORMAL;
        }
        let ty = match ty {
            Ok(CriuReqType::Empty | CriuReqType::Notify) | Err(_) => {
                send_response(
                    conn,
                    response::protocol_error(&format!("invalid request type {}", req.r#type)),
                );
                return EXIT_ABNORMAL;
            }
            Ok(CriuReqType::PreDump) => return pre_dump_loop(&mut session, handler, req),
            Ok(ty) => ty,
        };
        let status = exit_status(ty, dispatch(&mut session, handler, &req));
        if !(keep_open && status == EXIT_OK) {
            return status;
        }
    }
}

/// Serves PRE_DUMP requests until a DUMP, a failure or a wrong message
/// (rpc-protocol.md 5.2).
fn pre_dump_loop(session: &mut Session<'_>, handler: &mut dyn Handler, first: CriuReq) -> u8 {
    let mut req = first;
    loop {
        let outcome = dispatch(session, handler, &req);
        if !(outcome.success && outcome.delivered) {
            return EXIT_ABNORMAL;
        }
        let Some(next) = read_request(session.conn) else {
            return EXIT_ABNORMAL;
        };
        let ty = CriuReqType::try_from(next.r#type);
        tracing::debug!(req_type = ?ty, raw_type = next.r#type, "request in pre-dump loop");
        match ty {
            Ok(CriuReqType::PreDump) => req = next,
            Ok(CriuReqType::Dump) => {
                return exit_status(CriuReqType::Dump, dispatch(session, handler, &next));
            }
            _ => {
                send_response(
                    session.conn,
                    response::protocol_error(&format!(
                        "bad request sequence: request type {} after PRE_DUMP",
                        next.r#type
                    )),
                );
                return EXIT_ABNORMAL;
            }
        }
    }
}

/// What became of one dispatched request.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// The handler reported success.
    success: bool,
    /// The response reached the socket (or none was due).
    delivered: bool,
}

fn dispatch(session: &mut Session<'_>, handler: &mut dyn Handler, req: &CriuReq) -> Outcome {
    match handler.handle(req, session) {
        Reply::Send(resp) => Outcome {
            success: resp.success,
            delivered: send_response(session.conn, resp),
        },
        Reply::Silent { success } => {
            tracing::debug!(success, "no response for this request");
            Outcome {
                success,
                delivered: true,
            }
        }
    }
}

/// Exit status after serving one request of type `ty` (rpc-protocol.md 2.4).
fn exit_status(ty: CriuReqType, outcome: Outcome) -> u8 {
    let ok = outcome.success && outcome.delivered;
    match ty {
        CriuReqType::Dump | CriuReqType::Restore if ok => EXIT_OK,
        CriuReqType::Dump | CriuReqType::Restore => EXIT_FAILED,
        CriuReqType::PreDump | CriuReqType::SinglePreDump if ok => EXIT_OK,
        CriuReqType::PreDump | CriuReqType::SinglePreDump => EXIT_ABNORMAL,
        _ if outcome.delivered => EXIT_OK,
        _ => EXIT_ABNORMAL,
    }
}

/// Reads and decodes the next request. `None` ends the connection; a reply
/// has been sent where the protocol allows one.
fn read_request(conn: &SeqPacket) -> Option<CriuReq> {
    let bytes = match conn.recv() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            tracing::debug!("peer closed the connection");
            return None;
        }
        Err(err @ SeqPacketError::TooLarge { .. }) => {
            tracing::warn!(error = %err, "request too large");
            send_response(conn, response::protocol_error(&err.to_string()));
            return None;
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read a request");
            return None;
        }
    };
    match CriuReq::decode(bytes.as_slice()) {
        Ok(req) => Some(req),
        Err(err) => {
            let msg = if err.to_string().contains("UTF-8") {
                format!("request is not valid UTF-8: {err}")
            } else {
                format!("cannot decode request: {err}")
            };
            tracing::warn!(len = bytes.len(), error = %err, "undecodable request");
            send_response(conn, response::protocol_error(&msg));
            None
        }
    }
}

/// Sends `resp` after fitting it to the size limit; false if undeliverable.
fn send_response(conn: &SeqPacket, mut resp: CriuResp) -> bool {
    if !response::fit(&mut resp) {
        tracing::warn!(
            len = resp.encoded_len(),
            "response exceeds {} bytes",
            response::MAX_RESPONSE
        );
    }
    let ty = CriuReqType::try_from(resp.r#type);
    tracing::debug!(resp_type = ?ty, success = resp.success, "response");
    match conn.send(&resp.encode_to_vec()) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(resp_type = ?ty, error = %err, "cannot deliver the response");
            false
        }
    }
}

/// The loop's [`RequestCtx`]: one connection, its peer and its mode.
#[derive(Debug)]
struct Session<'a> {
    conn: &'a SeqPacket,
    mode: Mode,
    peer: PeerCred,
    socket_inode: u64,
}

impl RequestCtx for Session<'_> {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn peer(&self) -> PeerCred {
        self.peer
    }

    fn socket_inode(&self) -> u64 {
        self.socket_inode
    }

    #[doc(alias = "send_criu_rpc_script")]
    fn notify(&mut self, script: &str, pid: Option<i32>, fd: Option<BorrowedFd<'_>>) -> NotifyAck {
        let mut msg = CriuResp {
            r#type: CriuReqType::Notify as i32,
            success: true,
            notify: Some(CriuNotify {
                script: Some(script.to_owned()),
                pid,
            }),
            ..Default::default()
        };
        response::fit(&mut msg);
        tracing::debug!(script, ?pid, with_fd = fd.is_some(), "notification");
        let bytes = msg.encode_to_vec();
        let sent = match fd {
            Some(fd) => self.conn.send_with_fd(&bytes, fd),
            None => self.conn.send(&bytes),
        };
        if let Err(err) = sent {
            tracing::warn!(script, error = %err, "cannot send the notification");
            return NotifyAck::default();
        }
        let ack = match self.conn.recv() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::warn!(
                    script,
                    "peer closed the connection instead of acknowledging"
                );
                return NotifyAck::default();
            }
            Err(err) => {
                tracing::warn!(script, error = %err, "cannot read the notification ack");
                return NotifyAck::default();
            }
        };
        let ack = match CriuReq::decode(ack.as_slice()) {
            Ok(ack) => ack,
            Err(err) => {
                tracing::warn!(script, error = %err, "undecodable notification ack");
                return NotifyAck::default();
            }
        };
        if ack.r#type != CriuReqType::Notify as i32 {
            tracing::warn!(
                script,
                ack_type = ack.r#type,
                "notification answered by a non-NOTIFY message"
            );
            return NotifyAck::default();
        }
        let success = ack.notify_success == Some(true);
        tracing::debug!(script, success, "notification acknowledged");
        NotifyAck {
            success,
            opts: if success { ack.opts } else { None },
        }
    }
}

#[cfg(test)]
mod tests;
