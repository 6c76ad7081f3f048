//! Unix sockets of the dumped tree as `unix_sk_entry` (CRIU's
//! `dump_one_unix_fd` and `fix_external_unix_sockets` in `criu/sk-unix.c`).
//!
//! Each socket is described by `unix_diag` (type, state, name, peer, queue
//! lengths, connections not accepted yet, shutdown state); its options and
//! queued messages are read from a copy of the descriptor taken from the
//! task. Once every task is dumped, each socket's peer must be a socket of
//! the dump too. A peer outside the tree is accepted with `ext_unix_sk`
//! when it is a datagram socket with a name to connect to again, or, for
//! any socket, with `--external unix[<ino>]` naming the tree's socket
//! (which restore then expects through `inherit_fd` as `socket:[<ino>]`):
//! the peer gets an entry of its own flagged [`USK_EXTERN`].
//!
//! A connection still waiting in the queue of a listener of the tree gets
//! that listener as its peer, as CRIU does, and connects to it again on
//! restore.
//!
//! Not supported yet, and refused with the task, fd and socket named:
//! connections waiting in a listener's queue that already sent data or
//! whose listener is outside the tree, sockets bound to a relative or
//! removed path, and queued messages carrying descriptors.
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
//! - [sock_diag(7)](https://man7.org/linux/man-pages/man7/sock_diag.7.html)

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_proto::images::{
    FdTypes, FileEntry, FilePermsEntry, FownEntry, SkPacketEntry, SkShutdown, UnixSkEntry,
};
use criu_proto::img::{ImageError, ImageKind, ImagesDir};
use nix::errno::Errno;

use super::sk_queue::SkQueueError;
use super::{DumpedFd, FileTable, FilesError};
use crate::inject::Injection;
use crate::pstree::RealPid;
use crate::sys::sock_diag::UnixSocket;

/// `uflags` bit of a socket outside the tree (CRIU's `USK_EXTERN`).
pub const USK_EXTERN: u32 = 1;

/// `TCP_ESTABLISHED`.
const TCP_ESTABLISHED: u8 = 1;
/// `TCP_LISTEN`.
const TCP_LISTEN: u8 = 10;

/// A unix socket could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum UnixDumpError {
    /// `unix_diag` knows no such socket.
    #[error("task {pid}: cannot describe unix socket {ino} on fd {fd}")]
    Diag {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Its options could not be read.
    #[error("task {pid}: cannot read the options of unix socket {ino} on fd {fd}")]
    Options {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Its queue could not be copied.
    #[error("task {pid}: cannot dump the queue of unix socket {ino} on fd {fd}")]
    Queue {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// Cause.
        #[source]
        source: SkQueueError,
    },
    /// A state of the socket that cannot be dumped yet.
    #[error("task {pid}: fd {fd} is unix socket {ino} {what}, which cannot be dumped yet")]
    Unsupported {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// What about it.
        what: String,
    },
    /// The peer is outside the dumped tree.
    #[error(
        "task {pid}: fd {fd} is unix socket {ino} connected to socket {peer} outside the \
         dumped tree (consider ext_unix_sk or --external unix[{ino}])"
    )]
    ExternalPeer {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// Peer inode.
        peer: u32,
    },
    /// The external peer cannot be reconnected on restore.
    #[error(
        "task {pid}: fd {fd} is unix socket {ino} connected to socket {peer} outside the \
         dumped tree, {why}"
    )]
    ExternalUnusable {
        /// Task.
        pid: RealPid,
        /// Descriptor.
        fd: i32,
        /// Socket inode.
        ino: u64,
        /// Peer inode.
        peer: u32,
        /// Why it cannot be reached again.
        why: &'static str,
    },
}

/// Which peers outside the tree the dump accepts (`ext_unix_sk`,
/// `--external unix[<ino>]`).
#[derive(Debug, Clone, Default)]
pub struct UnixExternals {
    /// `ext_unix_sk`: any datagram peer with a name.
    pub any: bool,
    /// Inodes of the tree's sockets named by `--external unix[<ino>]`.
    pub inos: Vec<u64>,
}

impl UnixExternals {
    /// Builds the set from `ext_unix_sk` and the `external` strings.
    pub fn new(ext_unix_sk: bool, externals: &[String]) -> Self {
        UnixExternals {
            any: ext_unix_sk,
            inos: externals
                .iter()
                .filter_map(|e| e.strip_prefix("unix[")?.strip_suffix(']')?.parse().ok())
                .collect(),
        }
    }
}

/// A socket of the tree already dumped.
#[derive(Debug)]
struct Dumped {
    pid: RealPid,
    fd: i32,
    id: u32,
    ino: u32,
    peer: u32,
    icons: Vec<u32>,
    /// A connection without peer: still waiting in a listener's queue.
    in_flight: bool,
    /// Bytes sent and not yet read by the peer.
    wqlen: u32,
}

/// The unix sockets met while dumping a tree, their queues and the peers
/// still to be checked.
#[derive(Debug, Default)]
pub struct UnixDump {
    sockets: Vec<Dumped>,
    queues: Vec<(SkPacketEntry, Vec<u8>)>,
    externals: UnixExternals,
}

/// The socket inode in a `socket:[N]` link.
pub(crate) fn socket_ino(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn family_name(family: i32) -> String {
    match family {
        libc::AF_INET => "an inet socket".to_owned(),
        libc::AF_INET6 => "an inet6 socket".to_owned(),
        libc::AF_NETLINK => "a netlink socket".to_owned(),
        libc::AF_PACKET => "a packet socket".to_owned(),
        other => format!("a socket of family {other}"),
    }
}

/// `sk_shutdown` bits as the image's `sk_shutdown` enum.
fn shutdown_of(bits: u8) -> SkShutdown {
    match bits & 3 {
        1 => SkShutdown::Read,
        2 => SkShutdown::Write,
        3 => SkShutdown::Both,
        _ => SkShutdown::None,
    }
}

/// The path a socket is bound to, checked to still name it, with its
/// permissions; `None` for an abstract name or an unbound socket.
fn bound_path(sk: &UnixSocket) -> Result<Option<FilePermsEntry>, String> {
    if sk.name.first().is_none_or(|&b| b == 0) {
        return Ok(None);
    }
    let end = sk
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(sk.name.len());
    let path = String::from_utf8_lossy(&sk.name[..end]).into_owned();
    if !path.starts_with('/') {
        return Err(format!("bound to the relative path {path}"));
    }
    let meta = std::fs::symlink_metadata(&path);
    match (meta, sk.vfs) {
        (Ok(m), Some((ino, _)))
            if m.ino() == u64::from(ino) && m.mode() & libc::S_IFMT == libc::S_IFSOCK =>
        {
            Ok(Some(FilePermsEntry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
            }))
        }
        _ => Err(format!("bound to {path}, which was removed or replaced")),
    }
}

impl FileTable {
    /// Describes the socket on `fd` (`socket:[ino]`): a unix socket gets a
    /// `UNIXSK` entry (once, however many descriptors share it), any other
    /// family is refused.
    pub(super) fn dump_socket(
        &mut self,
        pid: RealPid,
        inj: &Injection<'_>,
        fd: i32,
        link: &Path,
        ino: u64,
    ) -> Result<DumpedFd, FilesError> {
        let io_err = |source| FilesError::Fd { pid, fd, source };
        let meta = std::fs::metadata(link).map_err(io_err)?;
        let (_, info) = super::read_fdinfo(pid, fd)?;
        let (cloexec, flags) = super::split_flags(info.flags);
        let key = (meta.dev(), ino, 0);
        let fdinfo = |id| super::fdinfo_entry(id, cloexec, FdTypes::Unixsk, fd);
        // A socket cannot be opened again: one inode, one open file
        // description.
        if let Some(s) = self.seen.iter().find(|s| (s.2, s.3, s.4) == key) {
            return Ok((fdinfo(s.5), key));
        }
        let sock = crate::inject::steal_fd(pid, fd).map_err(|source| FilesError::Steal {
            pid,
            fd,
            source,
        })?;
        let family = crate::sys::sockopt::get_int(&sock, libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(|e| io_err(e.into()))?;
        if family != libc::AF_UNIX {
            return Err(FilesError::Unsupported {
                pid,
                fd,
                kind: family_name(family),
            });
        }
        super::refuse_owner(pid, inj, fd, || {
            UnixDumpError::Unsupported {
                pid,
                fd,
                ino,
                what: "with an F_SETOWN owner".to_owned(),
            }
            .into()
        })?;
        let id = self.alloc();
        let entry = self.unix.describe(pid, fd, ino, id, flags, &sock)?;
        self.entries.push(FileEntry {
            r#type: FdTypes::Unixsk as i32,
            id,
            usk: Some(entry),
            ..Default::default()
        });
        Ok((fdinfo(id), key))
    }

    /// Sets which peers outside the tree are accepted.
    pub fn set_unix_externals(&mut self, externals: UnixExternals) {
        self.unix.externals = externals;
    }

    /// Once every task is dumped: checks that each socket's peer was dumped
    /// too, or adds an external entry for it where allowed.
    pub fn finish_sockets(&mut self) -> Result<(), FilesError> {
        self.fix_in_flight()?;
        let mut externs: Vec<u32> = Vec::new();
        for i in 0..self.unix.sockets.len() {
            let s = &self.unix.sockets[i];
            if s.peer == 0 || self.unix.sockets.iter().any(|o| o.ino == s.peer) {
                continue;
            }
            let (pid, fd, ino, peer) = (s.pid, s.fd, u64::from(s.ino), s.peer);
            if self.unix.sockets.iter().any(|o| o.icons.contains(&peer)) {
                return Err(UnixDumpError::Unsupported {
                    pid,
                    fd,
                    ino,
                    what: "connected to a listener that has not accepted it".to_owned(),
                }
                .into());
            }
            let ext = &self.unix.externals;
            // `--external unix[<ino>]` names a socket to be handed back on
            // restore (`inherit_fd`): its peer needs no name.
            let excepted = ext.inos.contains(&ino);
            if !ext.any && !excepted {
                return Err(UnixDumpError::ExternalPeer { pid, fd, ino, peer }.into());
            }
            let unusable = |why| UnixDumpError::ExternalUnusable {
                pid,
                fd,
                ino,
                peer,
                why,
            };
            let psk = match crate::sys::sock_diag::unix_socket(peer) {
                Ok(psk) => psk,
                Err(_) if excepted => Default::default(),
                Err(_) => return Err(unusable("which is gone").into()),
            };
            if !excepted && i32::from(psk.sock_type) != libc::SOCK_DGRAM {
                return Err(unusable("and half of a stream connection cannot be dumped").into());
            }
            if !excepted && psk.name.is_empty() {
                return Err(unusable("and it has no name to connect to again").into());
            }
            if externs.contains(&peer) {
                continue;
            }
            externs.push(peer);
            let id = self.alloc();
            tracing::info!(
                pid = pid.0,
                fd,
                ino,
                peer,
                "unix socket with an external peer"
            );
            self.entries.push(FileEntry {
                r#type: FdTypes::Unixsk as i32,
                id,
                usk: Some(UnixSkEntry {
                    id,
                    ino: peer,
                    r#type: libc::SOCK_DGRAM as u32,
                    state: u32::from(TCP_LISTEN),
                    uflags: USK_EXTERN,
                    name: psk.name,
                    fown: FownEntry::default(),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        Ok(())
    }

    /// Points each connection still waiting in a listener's queue at that
    /// listener, which it connects to again on restore (CRIU's in-flight
    /// connections); one whose listener is not in the tree, or that already
    /// sent data, is refused.
    fn fix_in_flight(&mut self) -> Result<(), FilesError> {
        for s in self.unix.sockets.iter().filter(|s| s.in_flight) {
            let unsupported = |what: &str| UnixDumpError::Unsupported {
                pid: s.pid,
                fd: s.fd,
                ino: u64::from(s.ino),
                what: what.to_owned(),
            };
            let Some(listener) = self.unix.sockets.iter().find(|l| l.icons.contains(&s.ino)) else {
                return Err(unsupported(
                    "connected to a peer that is gone or to a listener outside the tree",
                )
                .into());
            };
            if s.wqlen != 0 {
                return Err(
                    unsupported("with data sent to a listener that has not accepted it").into(),
                );
            }
            let entry = self
                .entries
                .iter_mut()
                .filter_map(|e| e.usk.as_mut())
                .find(|u| u.id == s.id);
            if let Some(u) = entry {
                u.peer = listener.ino;
            }
        }
        Ok(())
    }

    /// Writes `sk-queues.img` when a socket had messages queued.
    pub fn write_sk_queues(&self, dir: &ImagesDir) -> Result<(), ImageError> {
        if self.unix.queues.is_empty() {
            return Ok(());
        }
        let mut w = dir.create_image(ImageKind::SkQueues, 0)?;
        for (entry, data) in &self.unix.queues {
            w.write_entry_with_extra(entry, data)?;
        }
        w.finish().map(drop)
    }
}

impl UnixDump {
    /// Builds the entry of socket `ino` (file `id`, status `flags`), whose
    /// copy is `sock`, and records its queue.
    fn describe(
        &mut self,
        pid: RealPid,
        fd: i32,
        ino: u64,
        id: u32,
        flags: u32,
        sock: impl AsFd,
    ) -> Result<UnixSkEntry, UnixDumpError> {
        let unsupported = |what: String| UnixDumpError::Unsupported { pid, fd, ino, what };
        let ino32 = u32::try_from(ino).map_err(|_| unsupported("with a 64-bit inode".into()))?;
        let sk =
            crate::sys::sock_diag::unix_socket(ino32).map_err(|source| UnixDumpError::Diag {
                pid,
                fd,
                ino,
                source,
            })?;
        let ty = i32::from(sk.sock_type);
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
            return Err(unsupported(format!("of type {ty}")));
        }
        let shutdown = shutdown_of(sk.shutdown);
        if sk.state == TCP_LISTEN && sk.icons.contains(&0) {
            return Err(unsupported(
                "listening with a connection not accepted yet whose client is closed".into(),
            ));
        }
        let in_flight = sk.state == TCP_ESTABLISHED
            && ty != libc::SOCK_DGRAM
            && sk.peer == 0
            && shutdown != SkShutdown::Both;
        let perms = bound_path(&sk).map_err(unsupported)?;
        let opts = super::sk_opts::dump(&sock).map_err(|source| UnixDumpError::Options {
            pid,
            fd,
            ino,
            source,
        })?;
        if sk.rqlen.0 != 0 && sk.state != TCP_LISTEN {
            let queue_err = |source| UnixDumpError::Queue {
                pid,
                fd,
                ino,
                source,
            };
            let packets = super::sk_queue::peek(&sock).map_err(queue_err)?;
            if !packets.is_empty()
                && sk.peer == 0
                && shutdown != SkShutdown::Both
                && (ty != libc::SOCK_DGRAM || sk.name.is_empty())
            {
                return Err(unsupported(
                    "with queued messages and no peer or name to resend them from".into(),
                ));
            }
            for data in packets {
                self.queues.push((
                    SkPacketEntry {
                        id_for: id,
                        length: u32::try_from(data.len()).unwrap_or(u32::MAX),
                        scm: Vec::new(),
                    },
                    data,
                ));
            }
        }
        self.sockets.push(Dumped {
            pid,
            fd,
            id,
            ino: ino32,
            peer: sk.peer,
            icons: sk.icons.clone(),
            in_flight,
            wqlen: sk.rqlen.1,
        });
        Ok(UnixSkEntry {
            id,
            ino: ino32,
            r#type: ty as u32,
            state: u32::from(sk.state),
            flags,
            uflags: 0,
            backlog: sk.rqlen.1,
            peer: sk.peer,
            fown: FownEntry::default(),
            opts,
            name: sk.name,
            // CRIU leaves the field out when nothing is shut down.
            shutdown: (shutdown != SkShutdown::None).then_some(shutdown as i32),
            file_perms: perms,
            // The tree shares the dumper's network namespace.
            ns_id: crate::dump::inventory::root_ids().net_ns_id,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn externals_come_from_both_options() {
        let e = UnixExternals::new(false, &["unix[42]".into(), "mnt[/x]:y".into()]);
        assert!(!e.any);
        assert_eq!(e.inos, vec![42]);
        assert!(UnixExternals::new(true, &[]).any);
    }

    #[test]
    fn shutdown_bits_map_to_the_image_enum() {
        assert_eq!(shutdown_of(0), SkShutdown::None);
        assert_eq!(shutdown_of(1), SkShutdown::Read);
        assert_eq!(shutdown_of(2), SkShutdown::Write);
        assert_eq!(shutdown_of(3), SkShutdown::Both);
    }
}
