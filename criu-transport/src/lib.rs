//! CRIU-RPC transport: one protobuf message per `SOCK_SEQPACKET` packet, the
//! swrk socketpair and the service listener, `SCM_RIGHTS`, `SO_PEERCRED`, the
//! request loop that owns the protocol rules, and a client.
//!
//! CRIU counterpart: `criu/cr-service.c` (server side) and `lib/c/criu.c`
//! (client side).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod fds;
pub mod requests;
pub mod response;
pub mod seqpacket;
pub mod service;
pub mod swrk;
#[cfg(test)]
mod test_util;

pub use client::{Client, ClientError};
pub use fds::ignore_sigpipe;
pub use requests::{
    serve, Handler, Mode, NotifyAck, PeerCred, Reply, RequestCtx, EXIT_ABNORMAL, EXIT_FAILED,
    EXIT_OK,
};
pub use seqpacket::{SeqPacket, SeqPacketError, MAX_PACKET};
pub use service::{ServiceConfig, ServiceError, SocketAccess};
pub use swrk::{connection_from_arg, ensure_std_fds, inherited_fd_from_arg, SwrkError};

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error(transparent)]
    SeqPacket(#[from] SeqPacketError),
    /// Worker start-up failed.
    #[error(transparent)]
    Swrk(#[from] SwrkError),
    /// The service daemon failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A client operation failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}
