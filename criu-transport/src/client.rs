//! A blocking CRIU-RPC client, used by our tests and by Rust consumers.
//!
//! It speaks to a worker started as `<binary> swrk <fd>` over a socketpair, or
//! to a service daemon's listening socket, and answers notifications through a
//! callback (rpc-protocol.md 5.1).
//!
//! CRIU counterpart: `lib/c/criu.c` (libcriu).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use criu_proto::rpc::{CriuNotify, CriuReq, CriuReqType, CriuResp};
use criu_proto::Message;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::fds;
use crate::seqpacket::{SeqPacket, SeqPacketError};

/// Errors of [`Client`] operations.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The worker could not be started.
    #[error("cannot start {}", binary.display())]
    Spawn {
        /// The program.
        binary: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating the socket failed.
    #[error("cannot create a seqpacket socket")]
    Socket(#[source] Errno),
    /// Connecting to the service socket failed.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The service socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Sending or receiving a packet failed.
    #[error("transport failure")]
    Transport(#[from] SeqPacketError),
    /// A response did not decode.
    #[error("cannot decode a response of {len} bytes")]
    Decode {
        /// Packet length.
        len: usize,
        /// Cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The server closed the connection before answering.
    #[error("connection closed by the server")]
    Closed,
    /// The connection was already closed by [`Client::close`].
    #[error("connection already closed by the client")]
    NotConnected,
}

/// A connection to a CRIU-RPC server.
#[derive(Debug)]
pub struct Client {
    conn: Option<SeqPacket>,
    child: Option<Child>,
}

impl Client {
    /// Starts `binary [extra_args_before_swrk...] swrk <fd>` with the server
    /// end of a new socketpair as `<fd>`, and keeps the client end.
    pub fn spawn_swrk(binary: &Path, extra_args_before_swrk: &[&str]) -> Result<Client, ClientError> {
        let (ours, theirs) = SeqPacket::pair()?;
        let mut cmd = Command::new(binary);
        cmd.args(extra_args_before_swrk.iter().map(OsStr::new));
        let fd = fds::pass_across_exec(&mut cmd, theirs.into_fd());
        cmd.arg("swrk").arg(fd.to_string());
        let child = cmd.spawn().map_err(|source| ClientError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
        // Dropping `cmd` closes our copy of the server end, so EOF is seen
        // when the worker exits.
        drop(cmd);
        Ok(Client {
            conn: Some(ours),
            child: Some(child),
        })
    }

    /// Connects to a service daemon's socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(ClientError::Socket)?;
        let connect_err = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let addr = UnixAddr::new(path).map_err(connect_err)?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(connect_err)?;
        Ok(Client::from_socket(SeqPacket::from_fd(fd)?))
    }

    /// Wraps an already connected socket (for example one end of
    /// [`SeqPacket::pair`] whose other end an in-process server serves).
    pub fn from_socket(conn: SeqPacket) -> Client {
        Client {
            conn: Some(conn),
            child: None,
        }
    }

    fn conn(&self) -> Result<&SeqPacket, ClientError> {
        self.conn.as_ref().ok_or(ClientError::NotConnected)
    }

    /// Sends raw bytes as one packet (for testing servers with bad input).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.conn()?.send(bytes)?)
    }

    /// Sends one request.
    pub fn send(&self, req: &CriuReq) -> Result<(), ClientError> {
        self.send_raw(&req.encode_to_vec())
    }

    /// Receives one message with the descriptor attached to it, if any.
    /// `Ok(None)` is end of file.
    pub fn recv(&self) -> Result<Option<(CriuResp, Option<OwnedFd>)>, ClientError> {
        let Some((bytes, fd)) = self.conn()?.recv_with_fd()? else {
            return Ok(None);
        };
        let resp = CriuResp::decode(bytes.as_slice()).map_err(|source| ClientError::Decode {
            len: bytes.len(),
            source,
        })?;
        Ok(Some((resp, fd)))
    }

    /// Sends `req` and returns the final response, acknowledging every
    /// notification as successful.
    pub fn call(&self, req: &CriuReq) -> Result<CriuResp, ClientError> {
        self.call_with_notify(req, |_, _| true)
    }

    /// Sends `req` and returns the final response. Each notification is
    /// passed to `on_notify` together with its descriptor; the result is sent
    /// back as `notify_success`.
    pub fn call_with_notify<F>(&self, req: &CriuReq, mut on_notify: F) -> Result<CriuResp, ClientError>
    where
        F: FnMut(&CriuNotify, Option<OwnedFd>) -> bool,
    {
        self.send(req)?;
        loop {
            let (resp, fd) = self.recv()?.ok_or(ClientError::Closed)?;
            if resp.r#type != CriuReqType::Notify as i32 {
                return Ok(resp);
            }
            let notify = resp.notify.unwrap_or_default();
            let ok = on_notify(&notify, fd);
            self.send(&CriuReq {
                r#type: CriuReqType::Notify as i32,
                notify_success: Some(ok),
                ..Default::default()
            })?;
        }
    }

    /// Closes the connection; a worker waiting for a request then sees EOF.
    pub fn close(&mut self) {
        self.conn = None;
    }

    /// Pid of the worker started by [`Client::spawn_swrk`].
    pub fn worker_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the worker started by [`Client::spawn_swrk`] to exit. The
    /// connection stays open while waiting (a worker must exit on its own
    /// after its last response); call [`Client::close`] first to make it see
    /// EOF.
    /// Fails with `NotFound` when the client did not start a worker.
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no worker process"))?;
        child.wait()
    }
}
