//! The client's end of the CRIU-RPC connection of a self-dump (every other
//! unix socket is [`super::unix_dump`]'s), which CRIU saves as a closed socket
//! flagged `USK_SERVICE` and restores as a fresh socketpair whose far end
//! has already queued `{DUMP, success, dump{restored: true}}` and is closed,
//! so the restored process reads that answer, then end of file
//! (rpc-protocol.md 6.2-6.3; CRIU's `criu/sk-unix.c`).
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
//! - [sock_diag(7)](https://man7.org/linux/man-pages/man7/sock_diag.7.html)

use std::os::fd::{AsFd, OwnedFd};

use criu_proto::images::{FdTypes, FileEntry, FownEntry, SkOptsEntry, UnixSkEntry};
use criu_proto::rpc::{CriuDumpResp, CriuReqType, CriuResp};
use criu_proto::Message;
use nix::sys::socket::{getsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};

use super::{DumpedFd, FileTable, FilesError};
use crate::pstree::RealPid;

/// `uflags` bit of the client's RPC socket (CRIU's `USK_SERVICE`).
pub const USK_SERVICE: u32 = 1 << 1;

/// `TCP_CLOSE`: the state CRIU records for the service socket.
const TCP_CLOSE: u32 = 7;

/// Why a unix socket could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum UnixSkError {
    /// The socket's options could not be read.
    #[error("cannot read the options of the socket on fd {fd} of task {pid}")]
    Options {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// The socketpair that replaces the service socket could not be built.
    #[error("cannot rebuild the CRIU-RPC socket")]
    Rebuild(#[source] nix::Error),
}

/// The unix socket with inode `ino` if it is connected to the worker's end
/// of the RPC connection (`rpc_ino`): then it is the client's RPC socket.
/// Returns its socket type.
pub fn service_socket_type(ino: u64, rpc_ino: u64) -> Option<u32> {
    let ino = u32::try_from(ino).ok()?;
    let sk = crate::sys::sock_diag::unix_socket(ino).ok()?;
    (u64::from(sk.peer) == rpc_ino).then_some(u32::from(sk.sock_type))
}

/// The `files.img` entry of the client's RPC socket, saved as CRIU does: a
/// closed socket without peer, flagged [`USK_SERVICE`]. `sock` is the
/// socket itself (taken from the task) for its buffer sizes.
pub fn service_entry(
    id: u32,
    ino: u64,
    sock_type: u32,
    sock: impl AsFd,
    pid: RealPid,
    fd: i32,
) -> Result<FileEntry, UnixSkError> {
    let opt_err = |source| UnixSkError::Options { pid, fd, source };
    let sndbuf = getsockopt(&sock, sockopt::SndBuf).map_err(opt_err)?;
    let rcvbuf = getsockopt(&sock, sockopt::RcvBuf).map_err(opt_err)?;
    let usk = UnixSkEntry {
        id,
        ino: u32::try_from(ino).unwrap_or(u32::MAX),
        r#type: sock_type,
        state: TCP_CLOSE,
        flags: libc::O_RDWR as u32,
        uflags: USK_SERVICE,
        backlog: 0,
        peer: 0,
        fown: FownEntry::default(),
        opts: SkOptsEntry {
            so_sndbuf: u32::try_from(sndbuf).unwrap_or(u32::MAX),
            so_rcvbuf: u32::try_from(rcvbuf).unwrap_or(u32::MAX),
            ..Default::default()
        },
        name: Vec::new(),
        ..Default::default()
    };
    Ok(FileEntry {
        r#type: FdTypes::Unixsk as i32,
        id,
        usk: Some(usk),
        ..Default::default()
    })
}

/// Whether a `files.img` entry is the client's RPC socket of a self-dump.
pub fn is_service_socket(file: &FileEntry) -> bool {
    file.usk
        .as_ref()
        .is_some_and(|u| u.uflags & USK_SERVICE != 0)
}

/// The packet the restored process finds on its RPC socket.
pub fn restored_response() -> Vec<u8> {
    CriuResp {
        r#type: CriuReqType::Dump as i32,
        success: true,
        dump: Some(CriuDumpResp {
            restored: Some(true),
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Builds the socket that replaces the client's RPC socket: one end of a new
/// socketpair of `sock_type` whose other end sent `response` and is closed.
pub fn rebuild_service_socket(sock_type: u32, response: &[u8]) -> Result<OwnedFd, UnixSkError> {
    let ty = match i32::try_from(sock_type).unwrap_or(-1) {
        libc::SOCK_STREAM => SockType::Stream,
        libc::SOCK_DGRAM => SockType::Datagram,
        _ => SockType::SeqPacket,
    };
    let (near, far) = socketpair(AddressFamily::Unix, ty, None, SockFlag::empty())
        .map_err(UnixSkError::Rebuild)?;
    let sent = nix::unistd::write(&far, response).map_err(UnixSkError::Rebuild)?;
    if sent != response.len() {
        return Err(UnixSkError::Rebuild(nix::Error::EMSGSIZE));
    }
    Ok(near)
}

impl FileTable {
    /// The client's RPC socket of a self-dump, if `fd` (linking to `name`)
    /// is it: a new `files.img` entry and its fdinfo.
    pub(super) fn service_socket(
        &mut self,
        pid: RealPid,
        fd: i32,
        name: &str,
    ) -> Result<Option<DumpedFd>, FilesError> {
        let Some(rpc) = self.rpc_socket else {
            return Ok(None);
        };
        let Some(ino) = name
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Ok(None);
        };
        let Some(sock_type) = service_socket_type(ino, rpc) else {
            return Ok(None);
        };
        let sock = crate::inject::steal_fd(pid, fd).map_err(|source| FilesError::Steal {
            pid,
            fd,
            source,
        })?;
        let id = self.alloc();
        let entry = service_entry(id, ino, sock_type, &sock, pid, fd)?;
        self.entries.push(entry);
        tracing::info!(
            pid = pid.0,
            fd,
            "saving the client's CRIU-RPC socket (self-dump)"
        );
        Ok(Some((
            super::fdinfo_entry(id, false, FdTypes::Unixsk, fd),
            (0, ino, 0),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilt_socket_yields_the_restored_answer_then_eof() {
        let sock = rebuild_service_socket(libc::SOCK_SEQPACKET as u32, &restored_response())
            .expect("socketpair");
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(&sock, &mut buf).unwrap();
        let resp = CriuResp::decode(&buf[..n]).unwrap();
        assert!(resp.success);
        assert_eq!(resp.dump.and_then(|d| d.restored), Some(true));
        assert_eq!(nix::unistd::read(&sock, &mut buf).unwrap(), 0, "then EOF");
    }

    #[test]
    fn service_flag_is_criu_s_bit() {
        let entry = FileEntry {
            usk: Some(UnixSkEntry {
                uflags: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(is_service_socket(&entry));
    }
}
