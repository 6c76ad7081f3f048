//! One CRIU-RPC message per `AF_UNIX`/`SOCK_SEQPACKET` packet.
//!
//! A receive first peeks at the packet with `MSG_PEEK | MSG_TRUNC` to learn
//! its full length, then reads it into a buffer of exactly that size, so
//! requests of any size up to a sanity cap are read whole. Sends use
//! `MSG_NOSIGNAL`, so a vanished peer is an EPIPE error, never a signal.
//!
//! CRIU counterpart: `recv_criu_msg()`/`send_criu_msg_with_fd()` in
//! `criu/cr-service.c`.
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
//!   (`SOCK_SEQPACKET`, `SO_PEERCRED`, `SCM_RIGHTS`)
//! - [recv(2)](https://man7.org/linux/man-pages/man2/recv.2.html) (`MSG_PEEK`, `MSG_TRUNC`)

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use crate::fds;
use crate::requests::PeerCred;

/// Largest packet [`SeqPacket::recv`] accepts by default (4 MiB). The
/// protocol has no maximum, but a request beyond this is not a real one.
pub const MAX_PACKET: usize = 4 << 20;

// rpc-protocol.md 1.1: a server's cap, if any, must be at least 1 MiB.
const _: () = assert!(MAX_PACKET >= 1 << 20);

/// One received packet and the descriptor attached to it, if any.
pub type PacketWithFd = (Vec<u8>, Option<OwnedFd>);

/// Errors of [`SeqPacket`] operations.
#[derive(Debug, thiserror::Error)]
pub enum SeqPacketError {
    /// `socketpair` failed.
    #[error("cannot create a seqpacket socket pair")]
    Pair(#[source] Errno),
    /// The descriptor is not a socket (or SO_TYPE cannot be read).
    #[error("fd {fd} is not a socket")]
    NotSocket {
        /// The descriptor.
        fd: RawFd,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The descriptor is a socket of another type.
    #[error("fd {fd} is a {found:?} socket, not SOCK_SEQPACKET")]
    WrongType {
        /// The descriptor.
        fd: RawFd,
        /// Its socket type.
        found: SockType,
    },
    /// `recv`/`recvmsg` failed.
    #[error("cannot receive a packet on fd {fd}")]
    Recv {
        /// The socket.
        fd: RawFd,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The packet exceeds the sanity cap; it has been discarded.
    #[error("packet of {size} bytes on fd {fd} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The socket.
        fd: RawFd,
        /// Size of the packet.
        size: usize,
        /// The cap in force.
        limit: usize,
    },
    /// The packet changed size between peek and read.
    #[error("packet on fd {fd} was truncated to {size} bytes")]
    Truncated {
        /// The socket.
        fd: RawFd,
        /// Bytes read.
        size: usize,
    },
    /// More ancillary data arrived than fits one descriptor (`MSG_CTRUNC`);
    /// the descriptors that did arrive have been closed.
    #[error("ancillary data truncated on fd {fd} (more than one descriptor attached)")]
    ControlTruncated {
        /// The socket.
        fd: RawFd,
    },
    /// `send`/`sendmsg` failed (EPIPE when the peer is gone).
    #[error("cannot send a packet of {size} bytes on fd {fd}")]
    Send {
        /// The socket.
        fd: RawFd,
        /// Size of the packet.
        size: usize,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The kernel accepted only part of the packet.
    #[error("short send on fd {fd}: {sent} of {size} bytes")]
    ShortSend {
        /// The socket.
        fd: RawFd,
        /// Bytes accepted.
        sent: usize,
        /// Size of the packet.
        size: usize,
    },
    /// `getsockopt(SO_PEERCRED)` failed.
    #[error("cannot read SO_PEERCRED of fd {fd}")]
    PeerCred {
        /// The socket.
        fd: RawFd,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// `fstat` failed.
    #[error("cannot stat fd {fd}")]
    Stat {
        /// The socket.
        fd: RawFd,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// A connected `AF_UNIX`/`SOCK_SEQPACKET` socket carrying one message per
/// packet.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
    max_packet: usize,
}

impl SeqPacket {
    /// Creates a connected pair (both ends close-on-exec).
    #[doc(alias = "socketpair")]
    pub fn pair() -> Result<(SeqPacket, SeqPacket), SeqPacketError> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(SeqPacketError::Pair)?;
        Ok((Self::wrap(a), Self::wrap(b)))
    }

    /// Wraps a descriptor after checking with `SO_TYPE` that it is a
    /// `SOCK_SEQPACKET` socket. The descriptor is closed on error.
    pub fn from_fd(fd: OwnedFd) -> Result<SeqPacket, SeqPacketError> {
        let raw = fd.as_raw_fd();
        let found = socket::getsockopt(&fd, sockopt::SockType)
            .map_err(|source| SeqPacketError::NotSocket { fd: raw, source })?;
        if found != SockType::SeqPacket {
            return Err(SeqPacketError::WrongType { fd: raw, found });
        }
        Ok(Self::wrap(fd))
    }

    fn wrap(fd: OwnedFd) -> SeqPacket {
        SeqPacket {
            fd,
            max_packet: MAX_PACKET,
        }
    }

    /// Replaces the receive cap ([`MAX_PACKET`] by default). The protocol
    /// requires at least 1 MiB for a server; smaller values are for tests.
    #[must_use]
    pub fn with_max_packet(mut self, max_packet: usize) -> SeqPacket {
        self.max_packet = max_packet;
        self
    }

    /// Receives one packet. `Ok(None)` means end of file (a zero-length packet
    /// reads the same). Descriptors attached by the peer are discarded.
    pub fn recv(&self) -> Result<Option<Vec<u8>>, SeqPacketError> {
        Ok(self.recv_inner(0)?.map(|(data, _)| data))
    }

    /// Receives one packet and at most one descriptor passed with
    /// `SCM_RIGHTS` (close-on-exec). More than one descriptor is an error
    /// ([`SeqPacketError::ControlTruncated`]), and all of them are closed.
    pub fn recv_with_fd(&self) -> Result<Option<PacketWithFd>, SeqPacketError> {
        self.recv_inner(1)
    }

    fn recv_inner(&self, max_fds: usize) -> Result<Option<PacketWithFd>, SeqPacketError> {
        let raw = self.fd.as_raw_fd();
        let size = self.peek_size()?;
        if size == 0 {
            // End of file, or an empty packet (which we consume).
            self.discard()?;
            return Ok(None);
        }
        if size > self.max_packet {
            self.discard()?;
            return Err(SeqPacketError::TooLarge {
                fd: raw,
                size,
                limit: self.max_packet,
            });
        }
        let mut buf = vec![0u8; size];
        let got = fds::recv_with_rights(self.fd.as_fd(), &mut buf, max_fds)
            .map_err(|source| SeqPacketError::Recv { fd: raw, source })?;
        // Without a control buffer the kernel always reports MSG_CTRUNC when
        // descriptors were attached, and has closed them.
        if max_fds > 0 && got.control_truncated {
            return Err(SeqPacketError::ControlTruncated { fd: raw });
        }
        if got.truncated || got.len != size {
            return Err(SeqPacketError::Truncated {
                fd: raw,
                size: got.len,
            });
        }
        let mut received = got.fds.into_iter();
        let fd = received.next();
        if received.len() > 0 {
            tracing::warn!(
                fd = raw,
                extra = received.len(),
                "closing extra received descriptors"
            );
        }
        Ok(Some((buf, fd)))
    }

    /// Returns the length of the next packet without consuming it.
    fn peek_size(&self) -> Result<usize, SeqPacketError> {
        let raw = self.fd.as_raw_fd();
        loop {
            match socket::recv(raw, &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(SeqPacketError::Recv {
                        fd: raw,
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Consumes the next packet (if any) without keeping its contents.
    fn discard(&self) -> Result<(), SeqPacketError> {
        let raw = self.fd.as_raw_fd();
        loop {
            match socket::recv(raw, &mut [], MsgFlags::MSG_DONTWAIT) {
                Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(SeqPacketError::Recv {
                        fd: raw,
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Sends one packet.
    pub fn send(&self, data: &[u8]) -> Result<(), SeqPacketError> {
        self.send_msg(data, &[])
    }

    /// Sends one packet with one descriptor attached through `SCM_RIGHTS`.
    pub fn send_with_fd(&self, data: &[u8], fd: BorrowedFd<'_>) -> Result<(), SeqPacketError> {
        let rights = [fd.as_raw_fd()];
        self.send_msg(data, &[ControlMessage::ScmRights(&rights)])
    }

    fn send_msg(&self, data: &[u8], cmsgs: &[ControlMessage<'_>]) -> Result<(), SeqPacketError> {
        let raw = self.fd.as_raw_fd();
        let iov = [IoSlice::new(data)];
        loop {
            match socket::sendmsg::<()>(raw, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(sent) if sent == data.len() => return Ok(()),
                Ok(sent) => {
                    return Err(SeqPacketError::ShortSend {
                        fd: raw,
                        sent,
                        size: data.len(),
                    })
                }
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(SeqPacketError::Send {
                        fd: raw,
                        size: data.len(),
                        source,
                    })
                }
            }
        }
    }

    /// Credentials of the peer (`SO_PEERCRED`): for a socketpair, the process
    /// that created it; for an accepted connection, the one that connected.
    pub fn peer_cred(&self) -> Result<PeerCred, SeqPacketError> {
        let cred = socket::getsockopt(&self.fd, sockopt::PeerCredentials).map_err(|source| {
            SeqPacketError::PeerCred {
                fd: self.fd.as_raw_fd(),
                source,
            }
        })?;
        Ok(PeerCred {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    /// Inode number of this end of the socket (`fstat`'s `st_ino`), which is
    /// how a self-dump recognises the RPC socket in the dumped task.
    pub fn inode(&self) -> Result<u64, SeqPacketError> {
        let st = nix::sys::stat::fstat(&self.fd).map_err(|source| SeqPacketError::Stat {
            fd: self.fd.as_raw_fd(),
            source,
        })?;
        Ok(st.st_ino)
    }

    /// Gives up the socket.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests;
