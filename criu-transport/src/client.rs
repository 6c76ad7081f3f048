//! A blocking CRIU-RPC client, used by our tests and by Rust consumers.
//!
//! It speaks to a worker started as `<binary> swrk <fd>` over a socketpair, or
//! to a service daemon's listening socket, and answers notifications through a
//! callback (rpc-protocol.md 5.1).
//!
//! CRIU counterpart: `lib/c/criu.c` (libcriu).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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
    pub fn spawn_swrk(
        binary: &Path,
        extra_args_before_swrk: &[&str],
    ) -> Result<Client, ClientError> {
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

    /// Receives one packet as raw bytes (descriptors attached to it are
    /// closed). `Ok(None)` is end of file.
    pub fn recv_raw(&self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.conn()?.recv()?)
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
    pub fn call_with_notify<F>(
        &self,
        req: &CriuReq,
        mut on_notify: F,
    ) -> Result<CriuResp, ClientError>
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

impl AsFd for Client {
    /// The connection's socket (for socket options); panics after [`Client::close`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn
            .as_ref()
            .expect("connection closed by Client::close")
            .as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use criu_proto::rpc::{CriuReq, CriuReqType};

    use super::{Client, ClientError};
    use crate::test_util::example_bin;

    fn req(ty: CriuReqType) -> CriuReq {
        CriuReq {
            r#type: ty as i32,
            ..Default::default()
        }
    }

    #[test]
    fn swrk_worker_answers_and_exits_on_its_own() {
        let client = Client::spawn_swrk(&example_bin("version_worker"), &[]).expect("spawn");
        assert!(client.worker_pid().is_some());
        let r = client.call(&req(CriuReqType::Version)).expect("version");
        assert!(r.success);
        assert_eq!(r.version.and_then(|v| v.name).as_deref(), Some("swrk"));
        // The connection is still open: the worker must exit by itself.
        let status = client.wait().expect("wait");
        assert_eq!(status.code(), Some(0));
    }

    #[test]
    fn swrk_worker_exit_statuses() {
        let bin = example_bin("version_worker");
        let client = Client::spawn_swrk(&bin, &[]).expect("spawn");
        let r = client.call(&req(CriuReqType::Empty)).expect("call");
        assert_eq!((r.r#type, r.success), (CriuReqType::Empty as i32, false));
        assert_eq!(client.wait().expect("wait").code(), Some(255));

        let client = Client::spawn_swrk(&bin, &[]).expect("spawn");
        let r = client.call(&req(CriuReqType::Dump)).expect("call");
        assert!(!r.success);
        assert_eq!(client.wait().expect("wait").code(), Some(1));

        let mut client = Client::spawn_swrk(&bin, &[]).expect("spawn");
        client.close();
        assert!(matches!(
            client.call(&req(CriuReqType::Version)),
            Err(ClientError::NotConnected)
        ));
        assert_eq!(client.wait().expect("wait").code(), Some(255));
    }

    #[test]
    fn extra_arguments_come_before_swrk() {
        let bin = example_bin("version_worker");
        // The worker accepts exactly `swrk <fd>`; an extra argument makes it
        // print usage and exit 1 before reading anything.
        let client = Client::spawn_swrk(&bin, &["--bogus"]).expect("spawn");
        assert!(matches!(client.recv(), Ok(None)));
        assert_eq!(client.wait().expect("wait").code(), Some(1));
    }

    #[test]
    fn missing_binary_and_socket_are_errors() {
        assert!(matches!(
            Client::spawn_swrk(Path::new("/nonexistent/criu"), &[]),
            Err(ClientError::Spawn { .. })
        ));
        assert!(matches!(
            Client::connect(Path::new("/nonexistent/criu_service.socket")),
            Err(ClientError::Connect { .. })
        ));
        assert!(
            Client::from_socket(crate::SeqPacket::pair().expect("pair").0)
                .wait()
                .is_err()
        );
    }
}
