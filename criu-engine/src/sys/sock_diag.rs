//! Socket diagnostics (`NETLINK_SOCK_DIAG`) requests, enough to learn which
//! families the kernel can describe.
//!
//! Each request is a `SOCK_DIAG_BY_FAMILY` dump; a kernel without the family's
//! `*_diag` module answers `NLMSG_ERROR` with `ENOENT`.
//!
//! # References
//!
//! - [sock_diag(7)](https://man7.org/linux/man-pages/man7/sock_diag.7.html)
//! - [netlink(7)](https://man7.org/linux/man-pages/man7/netlink.7.html)

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};

use super::abi;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;

/// One socket family (and protocol) to ask the kernel about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiagFamily {
    /// `AF_UNIX` (`unix_diag`).
    Unix,
    /// `AF_INET`/`AF_INET6` with an IP protocol (`inet_diag`, `tcp_diag`,
    /// `udp_diag`, `raw_diag`).
    Inet {
        /// `true` for `AF_INET6`.
        v6: bool,
        /// `IPPROTO_*`.
        protocol: u8,
    },
    /// `AF_PACKET` (`packet_diag`).
    Packet,
    /// `AF_NETLINK` (`netlink_diag`).
    Netlink,
}

/// Opens a `NETLINK_SOCK_DIAG` socket.
pub(crate) fn open() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
}

fn family_byte(family: libc::c_int) -> u8 {
    u8::try_from(family).unwrap_or(0)
}

/// Builds the request payload (`unix_diag_req`, `inet_diag_req_v2`,
/// `packet_diag_req`, `netlink_diag_req`).
fn request_body(family: DiagFamily) -> Vec<u8> {
    match family {
        DiagFamily::Unix => {
            // family, protocol, pad, states, ino, show, cookie[2]
            let mut b = vec![family_byte(libc::AF_UNIX), 0, 0, 0];
            b.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
            b.extend_from_slice(&[0; 4 + 4 + 8]);
            b
        }
        DiagFamily::Inet { v6, protocol } => {
            let af = if v6 { libc::AF_INET6 } else { libc::AF_INET };
            // family, protocol, ext, pad, states, inet_diag_sockid (48 bytes)
            let mut b = vec![family_byte(af), protocol, 0, 0];
            b.extend_from_slice(&u32::MAX.to_ne_bytes());
            b.extend_from_slice(&[0; 48]);
            b
        }
        DiagFamily::Packet | DiagFamily::Netlink => {
            let (af, proto) = if family == DiagFamily::Packet {
                (libc::AF_PACKET, 0)
            } else {
                // NDIAG_PROTO_ALL
                (libc::AF_NETLINK, u8::MAX)
            };
            // family, protocol, pad, ino, show, cookie[2]
            let mut b = vec![family_byte(af), proto, 0, 0];
            b.extend_from_slice(&[0; 4 + 4 + 8]);
            b
        }
    }
}

/// Runs one dump request for `family` on `sock` and drains the answer.
/// Returns the number of sockets the kernel described, or the error it
/// reported (`ENOENT` when the family's diag module is missing).
pub(crate) fn dump_count(sock: &OwnedFd, family: DiagFamily) -> nix::Result<usize> {
    let body = request_body(family);
    let len = u32::try_from(NLMSG_HDRLEN + body.len()).map_err(|_| Errno::EINVAL)?;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&abi::SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel picks
    msg.extend_from_slice(&body);
    send(sock.as_raw_fd(), &msg, MsgFlags::empty())?;

    let mut buf = vec![0u8; 32 * 1024];
    let mut count = 0usize;
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Err(Errno::EPROTO);
        }
        let mut off = 0usize;
        while off + NLMSG_HDRLEN <= n {
            let h = &buf[off..off + NLMSG_HDRLEN];
            let mlen = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let mtype = u16::from_ne_bytes([h[4], h[5]]);
            if mlen < NLMSG_HDRLEN || off + mlen > n {
                return Err(Errno::EPROTO);
            }
            match mtype {
                NLMSG_DONE => return Ok(count),
                NLMSG_ERROR => {
                    let p = &buf[off + NLMSG_HDRLEN..off + mlen];
                    let code = p
                        .get(..4)
                        .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                        .ok_or(Errno::EPROTO)?;
                    return if code == 0 {
                        Ok(count)
                    } else {
                        Err(Errno::from_raw(-code))
                    };
                }
                _ => count += 1,
            }
            // Messages are 4-byte aligned.
            off += (mlen + 3) & !3;
        }
    }
}

/// `UDIAG_SHOW_*` bits: name, bound inode, peer, pending connections,
/// queue lengths.
const UDIAG_SHOW_ALL: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10;
/// `UNIX_DIAG_*` attribute types.
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// What `unix_diag` says about one unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UnixSocket {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub(crate) sock_type: u8,
    /// TCP-like state (`TCP_ESTABLISHED` = 1, `TCP_CLOSE` = 7, `TCP_LISTEN` = 10).
    pub(crate) state: u8,
    /// Inode of the socket.
    pub(crate) ino: u32,
    /// Inode of the connected peer, 0 when none.
    pub(crate) peer: u32,
    /// Bound address as the kernel keeps it (abstract names start with a
    /// NUL byte, path names may end with one); empty when unbound.
    pub(crate) name: Vec<u8>,
    /// Inode and device of the file a path name is bound to.
    pub(crate) vfs: Option<(u32, u32)>,
    /// Receive queue length (pending connections for a listener) and
    /// send queue length (the backlog for a listener).
    pub(crate) rqlen: (u32, u32),
    /// Inodes of connections not accepted yet (listeners only).
    pub(crate) icons: Vec<u32>,
    /// `sk_shutdown` bits (`RCV_SHUTDOWN` = 1, `SEND_SHUTDOWN` = 2).
    pub(crate) shutdown: u8,
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Looks up the unix socket with inode `ino` (an exact `unix_diag` request,
/// no dump) and returns what the kernel says about it; `ENOENT` when there
/// is no such socket.
pub(crate) fn unix_socket(ino: u32) -> nix::Result<UnixSocket> {
    let sock = open()?;
    // unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
    // (an all-ones cookie means "do not check").
    let mut body = vec![family_byte(libc::AF_UNIX), 0, 0, 0];
    body.extend_from_slice(&u32::MAX.to_ne_bytes());
    body.extend_from_slice(&ino.to_ne_bytes());
    body.extend_from_slice(&UDIAG_SHOW_ALL.to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]);
    let len = u32::try_from(NLMSG_HDRLEN + body.len()).map_err(|_| Errno::EINVAL)?;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&abi::SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    send(sock.as_raw_fd(), &msg, MsgFlags::empty())?;

    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    let buf = &buf[..n];
    let header = buf.get(..NLMSG_HDRLEN).ok_or(Errno::EPROTO)?;
    let mlen = (ne_u32(header).ok_or(Errno::EPROTO)? as usize).min(n);
    let mtype = u16::from_ne_bytes([header[4], header[5]]);
    let payload = buf.get(NLMSG_HDRLEN..mlen).ok_or(Errno::EPROTO)?;
    if mtype == NLMSG_ERROR {
        let code = ne_u32(payload).ok_or(Errno::EPROTO)? as i32;
        return Err(Errno::from_raw(-code));
    }
    parse_unix_msg(payload).ok_or(Errno::EPROTO)
}

/// Decodes a `unix_diag_msg` and its attributes.
fn parse_unix_msg(payload: &[u8]) -> Option<UnixSocket> {
    // unix_diag_msg: family, type, state, pad, ino, cookie[2]; then rtattrs.
    const MSG_LEN: usize = 16;
    let head = payload.get(..MSG_LEN)?;
    let mut found = UnixSocket {
        sock_type: head[1],
        state: head[2],
        ino: ne_u32(&head[4..])?,
        ..Default::default()
    };
    let mut off = MSG_LEN;
    while off + 4 <= payload.len() {
        let alen = usize::from(u16::from_ne_bytes([payload[off], payload[off + 1]]));
        let atype = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]);
        if alen < 4 || off + alen > payload.len() {
            break;
        }
        let v = &payload[off + 4..off + alen];
        match atype {
            UNIX_DIAG_NAME => found.name = v.to_vec(),
            UNIX_DIAG_VFS => found.vfs = Some((ne_u32(v)?, ne_u32(v.get(4..)?)?)),
            UNIX_DIAG_PEER => found.peer = ne_u32(v)?,
            UNIX_DIAG_ICONS => found.icons = v.chunks_exact(4).filter_map(ne_u32).collect(),
            UNIX_DIAG_RQLEN => found.rqlen = (ne_u32(v)?, ne_u32(v.get(4..)?)?),
            UNIX_DIAG_SHUTDOWN => found.shutdown = *v.first()?,
            _ => {}
        }
        off += (alen + 3) & !3;
    }
    Some(found)
}
