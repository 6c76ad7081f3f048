//! Messages queued on a socket (`sk-queues.img`: an `sk_packet_entry` per
//! message followed by its bytes), copied without consuming them (CRIU's
//! `dump_sk_queue` in `criu/sk-queue.c`).
//!
//! The socket (a copy taken from the task) gets `SO_PEEK_OFF` 0, so each
//! `MSG_PEEK` read moves past what it returned; the task's own peek offset
//! is put back afterwards. A stream socket yields its bytes in chunks, a
//! datagram or seqpacket socket one message per read, which keeps message
//! boundaries. Queued descriptors (`SCM_RIGHTS`) and other control messages
//! are refused.
//!
//! # References
//!
//! - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html)
//!   (`SO_PEEK_OFF`), [recvmsg(2)](https://man7.org/linux/man-pages/man2/recvmsg.2.html)

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

use crate::sys::sockopt::{get_int, set_int};

/// Why a queue could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum SkQueueError {
    /// A socket call failed.
    #[error("cannot read the queue")]
    Sys(#[source] Errno),
    /// A message carries descriptors.
    #[error("a queued message carries {count} file descriptors (SCM_RIGHTS), which cannot be dumped yet")]
    ScmRights {
        /// How many.
        count: usize,
    },
    /// A message carries another kind of control message.
    #[error("a queued message carries control data ({what}), which CRIU does not dump")]
    Control {
        /// Which kind.
        what: &'static str,
    },
    /// A message did not fit the buffer.
    #[error("a queued message is longer than {limit} bytes")]
    Truncated {
        /// Buffer size.
        limit: usize,
    },
}

/// Copies every message queued for reading on `sock`, in order.
pub(crate) fn peek(sock: impl AsFd) -> Result<Vec<Vec<u8>>, SkQueueError> {
    let sk = sock.as_fd();
    let orig = get_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF).map_err(SkQueueError::Sys)?;
    set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).map_err(SkQueueError::Sys)?;
    let out = peek_all(sk);
    let reset = set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, orig).map_err(SkQueueError::Sys);
    let out = out?;
    reset?;
    Ok(out)
}

fn peek_all(sk: std::os::fd::BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, SkQueueError> {
    let sndbuf = get_int(sk, libc::SOL_SOCKET, libc::SO_SNDBUF).map_err(SkQueueError::Sys)?;
    let limit = usize::try_from(sndbuf).unwrap_or(0).max(64 * 1024);
    let mut buf = vec![0u8; limit];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 253], libc::ucred);
    let mut out = Vec::new();
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<UnixAddr>(
            sk.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(SkQueueError::Sys(e)),
        };
        let len = msg.bytes;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(SkQueueError::Truncated { limit });
        }
        let mut refused = None;
        for c in msg.cmsgs().map_err(SkQueueError::Sys)? {
            match c {
                ControlMessageOwned::ScmRights(fds) => {
                    let count = fds.len();
                    for fd in fds {
                        let _ = nix::unistd::close(fd);
                    }
                    refused.get_or_insert(SkQueueError::ScmRights { count });
                }
                ControlMessageOwned::ScmCredentials(_) => {
                    refused.get_or_insert(SkQueueError::Control {
                        what: "SCM_CREDENTIALS",
                    });
                }
                _ => {
                    refused.get_or_insert(SkQueueError::Control { what: "unknown" });
                }
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
        if len == 0 {
            // End of a stream whose peer shut down; an empty datagram
            // also ends the copy, as in CRIU.
            break;
        }
        out.push(buf[..len].to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn datagrams_are_copied_one_by_one_and_left_in_place() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        nix::unistd::write(&b, b"one").unwrap();
        nix::unistd::write(&b, b"three").unwrap();
        assert_eq!(peek(&a).unwrap(), vec![b"one".to_vec(), b"three".to_vec()]);
        let mut x = [0u8; 16];
        assert_eq!(nix::unistd::read(&a, &mut x).unwrap(), 3, "still queued");
    }

    #[test]
    fn queued_descriptors_are_refused() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        let fds = [b.as_raw_fd()];
        let cm = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<UnixAddr>(
            b.as_raw_fd(),
            &[std::io::IoSlice::new(b"x")],
            &cm,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(matches!(
            peek(&a),
            Err(SkQueueError::ScmRights { count: 1 })
        ));
    }
}
