//! Unix sockets of the restored tree (CRIU's `open_unix_sk` and friends in
//! `criu/sk-unix.c`, `restore_sk_queue` in `criu/sk-queue.c`).
//!
//! The engine plans every socket from `files.img` and `sk-queues.img`; the
//! root task builds them all at once, before its children inherit them:
//!
//! 1. two sockets that are each other's peer become one `socketpair`; a
//!    connection whose peer closed (both directions shut down) gets a
//!    `socketpair` whose other end is closed after queueing; any other
//!    socket is a plain `socket`. Each gets its options, then its name
//!    (datagram sockets and unconnected ones; a stale socket file at the
//!    path is removed first, as CRIU does) and, for a listener, `listen`;
//! 2. sockets connected to a named peer (in the tree or outside it,
//!    `USK_EXTERN`) connect to that name;
//! 3. queued messages are sent again, one `send` per saved message, from
//!    the peer of the pair, the closed end, or (for a named datagram
//!    socket) a temporary socket;
//! 4. shutdown state and file status flags (`O_NONBLOCK`) are set.
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use criu_proto::images::{
    FileEntry, FilePermsEntry, SkOptsEntry, SkPacketEntry, SkShutdown, UnixSkEntry,
};
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, listen, send, sendto, shutdown, socket, socketpair, AddressFamily, Backlog,
    MsgFlags, Shutdown, SockFlag, SockType, UnixAddr,
};

use super::files::FdStep;
use super::images::{read_error, ImagesError};
use crate::files::unix_dump::USK_EXTERN;
use crate::sys::clone3::{dup_above, set_status_flags};

/// `TCP_ESTABLISHED`.
const TCP_ESTABLISHED: u32 = 1;
/// `TCP_LISTEN`.
const TCP_LISTEN: u32 = 10;
/// Status flags restored on a socket.
const SETFL_MASK: i32 = libc::O_NONBLOCK | libc::O_ASYNC;

/// A unix socket of the images cannot be restored as asked.
#[derive(Debug, thiserror::Error)]
pub enum UnixRestoreError {
    /// A socket's peer is outside the tree and `ext_unix_sk` was not given.
    #[error(
        "task {pid}: fd {fd} is unix socket {ino} connected to socket {peer} outside the \
         tree; restoring it needs ext_unix_sk or inherit_fd socket:[{ino}]"
    )]
    External {
        /// Task (pid in the images).
        pid: u32,
        /// Descriptor.
        fd: u32,
        /// Socket inode.
        ino: u32,
        /// External peer inode.
        peer: u32,
    },
}

/// Refuses sockets connected to an external peer unless `ext_unix_sk` is
/// given or the socket itself is handed over (`inherited`), as CRIU does.
pub(crate) fn check_externals(
    tasks: &[Option<&super::images::TaskImages>],
    ext_unix_sk: bool,
    inherited: &dyn Fn(&FileEntry) -> bool,
) -> Result<(), UnixRestoreError> {
    if ext_unix_sk {
        return Ok(());
    }
    for task in tasks.iter().flatten() {
        for fd in &task.fds {
            let Some(file) = task.files.get(&fd.id).filter(|f| !inherited(f)) else {
                continue;
            };
            let Some(ue) = file.usk.as_ref() else {
                continue;
            };
            let external = ue.peer != 0
                && task
                    .files
                    .values()
                    .filter_map(|f| f.usk.as_ref())
                    .any(|p| p.ino == ue.peer && p.uflags & USK_EXTERN != 0);
            if external {
                return Err(UnixRestoreError::External {
                    pid: task.pid(),
                    fd: fd.fd,
                    ino: ue.ino,
                    peer: ue.peer,
                });
            }
        }
    }
    Ok(())
}

/// `uflags` of sockets handed over by a plugin or `inherit_fd`.
const USK_CALLBACK_OR_INHERIT: u32 = (1 << 2) | (1 << 3);

/// What in a socket's entry this engine cannot restore yet, if anything.
pub(crate) fn refused(ue: &UnixSkEntry) -> Option<&'static str> {
    if ue.uflags & USK_CALLBACK_OR_INHERIT != 0 {
        Some("a unix socket restored by a plugin or inherit_fd")
    } else if ue.deleted == Some(true) {
        Some("a unix socket bound to a removed path")
    } else if ue.name_dir.is_some() || ue.name.first().is_some_and(|&b| b != 0 && b != b'/') {
        Some("a unix socket bound to a relative path")
    } else if sock_type(ue.r#type).is_none() {
        Some("a unix socket of an unknown type")
    } else {
        None
    }
}

/// Messages queued on each socket, by the socket's file id.
pub(crate) type SkQueues = HashMap<u32, Vec<Vec<u8>>>;

/// Reads `sk-queues.img` (absent: no queue).
pub(crate) fn load_queues(dir: &ImagesDir) -> Result<SkQueues, ImagesError> {
    let mut out = SkQueues::new();
    let err = |source| read_error(ImageKind::SkQueues, 0, source);
    let Some(mut reader) = dir.open_image(ImageKind::SkQueues, 0).map_err(err)? else {
        return Ok(out);
    };
    while let Some(entry) = reader.read_entry::<SkPacketEntry>().map_err(err)? {
        if !entry.scm.is_empty() {
            return Err(super::images::unsupported(format!(
                "descriptors queued on unix socket {:#x} (SCM_RIGHTS)",
                entry.id_for
            )));
        }
        let data = reader.read_extra(entry.length.into()).map_err(err)?;
        out.entry(entry.id_for).or_default().push(data);
    }
    Ok(out)
}

/// How a socket comes to life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Birth {
    /// `socket()`.
    Single,
    /// First end of a `socketpair` with socket `other`.
    PairFirst { other: usize },
    /// Second end: made with its first end.
    PairSecond { other: usize },
    /// One end of a `socketpair` whose other end is closed once the queue
    /// is sent (a connection whose peer is gone).
    HalfClosed,
}

/// One socket to rebuild.
#[derive(Debug)]
struct Sock {
    /// Task (pid in the images) holding it, for planning errors.
    pid: u32,
    /// File id (its queue's `id_for`).
    id: u32,
    ino: u32,
    peer: u32,
    ty: SockType,
    state: u32,
    /// First descriptor number naming it, for reports.
    first: RawFd,
    name: Vec<u8>,
    birth: Birth,
    bind: bool,
    perms: Option<FilePermsEntry>,
    listen: Option<i32>,
    /// Name to connect to.
    connect: Option<Vec<u8>>,
    opts: SkOptsEntry,
    flags: i32,
    shutdown: Option<Shutdown>,
    queue: Vec<Vec<u8>>,
}

/// Every unix socket of the tree, built by the root task.
#[derive(Debug, Default)]
pub(crate) struct UnixPlan {
    socks: Vec<Sock>,
    /// Sockets while being built (child only; sized by the engine).
    building: Vec<Option<OwnedFd>>,
    /// Closed-peer ends of half-closed connections (child only).
    fakes: Vec<Option<OwnedFd>>,
    /// Where the root task holds each socket once built (-1 before).
    fds: Vec<RawFd>,
}

/// The address of a saved name: abstract when it starts with a NUL byte,
/// else a path (up to its first NUL byte).
fn address(name: &[u8]) -> nix::Result<UnixAddr> {
    match name.split_first() {
        Some((0, rest)) => UnixAddr::new_abstract(rest),
        _ => {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            UnixAddr::new(&name[..end])
        }
    }
}

fn sock_type(ty: u32) -> Option<SockType> {
    match i32::try_from(ty).ok()? {
        libc::SOCK_STREAM => Some(SockType::Stream),
        libc::SOCK_DGRAM => Some(SockType::Datagram),
        libc::SOCK_SEQPACKET => Some(SockType::SeqPacket),
        _ => None,
    }
}

impl UnixPlan {
    /// Adds the socket of `file` (first met as descriptor `first` of task
    /// `pid`); returns its index.
    pub(crate) fn add(&mut self, pid: u32, file: &FileEntry, first: RawFd) -> Result<usize, Errno> {
        let ue = file.usk.as_ref().ok_or(Errno::ENOENT)?;
        let ty = sock_type(ue.r#type).ok_or(Errno::EPROTOTYPE)?;
        let shutdown = match SkShutdown::try_from(ue.shutdown.unwrap_or(0)) {
            Ok(SkShutdown::Read) => Some(Shutdown::Read),
            Ok(SkShutdown::Write) => Some(Shutdown::Write),
            Ok(SkShutdown::Both) => Some(Shutdown::Both),
            _ => None,
        };
        self.socks.push(Sock {
            pid,
            id: ue.id,
            ino: ue.ino,
            peer: ue.peer,
            ty,
            state: ue.state,
            first,
            name: ue.name.clone(),
            birth: Birth::Single,
            bind: false,
            perms: ue.file_perms,
            listen: (ue.state == TCP_LISTEN).then(|| {
                let max: i32 = Backlog::MAXCONN.into();
                i32::try_from(ue.backlog).unwrap_or(max).min(max)
            }),
            connect: None,
            opts: ue.opts.clone(),
            flags: i32::try_from(ue.flags).map_err(|_| Errno::EINVAL)?,
            shutdown,
            queue: Vec::new(),
        });
        Ok(self.socks.len() - 1)
    }

    /// Once every socket is added: pairs peers, finds the names to
    /// connect to (`files` holds the external peers) and attaches the
    /// queues. A failure names the task holding the socket.
    pub(crate) fn resolve(
        &mut self,
        files: Option<&HashMap<u32, FileEntry>>,
        queues: &SkQueues,
    ) -> Result<(), (u32, Errno)> {
        for i in 0..self.socks.len() {
            let s = &self.socks[i];
            let err = |e, why: &str| {
                tracing::error!(
                    pid = s.pid,
                    fd = s.first,
                    ino = s.ino,
                    peer = s.peer,
                    "unix socket cannot be rebuilt: {why}"
                );
                (s.pid, e)
            };
            let named = !s.name.is_empty();
            let mut birth = s.birth;
            let mut connect = None;
            if s.peer != 0 {
                if let Some(j) = self.socks.iter().position(|o| o.ino == s.peer) {
                    let o = &self.socks[j];
                    if o.peer == s.ino && j != i {
                        birth = if i < j {
                            Birth::PairFirst { other: j }
                        } else {
                            Birth::PairSecond { other: j }
                        };
                    } else if o.name.is_empty() {
                        return Err(err(Errno::ENOTCONN, "its peer has no name to connect to"));
                    } else {
                        connect = Some(o.name.clone());
                    }
                } else {
                    let ext = files
                        .into_iter()
                        .flat_map(|f| f.values())
                        .filter_map(|f| f.usk.as_ref())
                        .find(|u| u.ino == s.peer && u.uflags & USK_EXTERN != 0)
                        .ok_or_else(|| err(Errno::ENOENT, "its peer is not in the images"))?;
                    connect = Some(ext.name.clone());
                }
            } else if s.state == TCP_ESTABLISHED && s.ty != SockType::Datagram {
                birth = Birth::HalfClosed;
            }
            let bind = named && (s.ty == SockType::Datagram || s.state != TCP_ESTABLISHED);
            let queue = queues.get(&s.id).cloned().unwrap_or_default();
            let can_queue = matches!(birth, Birth::PairFirst { .. } | Birth::PairSecond { .. })
                || birth == Birth::HalfClosed
                || (bind && s.ty == SockType::Datagram);
            if !queue.is_empty() && !can_queue {
                return Err(err(
                    Errno::ENOTCONN,
                    "its queued messages have no sender to come from",
                ));
            }
            let s = &mut self.socks[i];
            s.birth = birth;
            s.connect = connect;
            s.bind = bind;
            s.queue = queue;
        }
        self.building = (0..self.socks.len()).map(|_| None).collect();
        self.fakes = (0..self.socks.len()).map(|_| None).collect();
        self.fds = vec![-1; self.socks.len()];
        Ok(())
    }

    /// Where the root task holds socket `idx` after [`UnixPlan::open_all`].
    pub(crate) fn fd(&self, idx: usize) -> RawFd {
        self.fds[idx]
    }

    /// In the root task: builds every socket and moves it to `scratch` or
    /// above. A failure gives the step, the socket's first descriptor
    /// number and the cause.
    pub(crate) fn open_all(&mut self, scratch: RawFd) -> Result<(), (FdStep, RawFd, Errno)> {
        for i in 0..self.socks.len() {
            self.create(i)
                .map_err(|(step, e)| (step, self.socks[i].first, e))?;
        }
        for i in 0..self.socks.len() {
            let s = &self.socks[i];
            let fail = |e| (FdStep::UnixConnect, s.first, e);
            if let (Some(name), Some(sock)) = (&s.connect, &self.building[i]) {
                connect(sock.as_raw_fd(), &address(name).map_err(fail)?).map_err(fail)?;
            }
        }
        for i in 0..self.socks.len() {
            self.send_queue(i)
                .map_err(|e| (FdStep::UnixQueue, self.socks[i].first, e))?;
        }
        for fake in &mut self.fakes {
            drop(fake.take());
        }
        for i in 0..self.socks.len() {
            let s = &self.socks[i];
            let Some(sock) = self.building[i].take() else {
                return Err((FdStep::UnixSocket, s.first, Errno::EBADF));
            };
            if let (Some(how), false) = (s.shutdown, s.birth == Birth::HalfClosed) {
                shutdown(sock.as_raw_fd(), how).map_err(|e| (FdStep::UnixShutdown, s.first, e))?;
            }
            set_status_flags(sock.as_raw_fd(), s.flags & SETFL_MASK)
                .map_err(|e| (FdStep::SetFl, s.first, e))?;
            self.fds[i] =
                dup_above(sock.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, s.first, e))?;
        }
        Ok(())
    }

    /// Creates socket `i` (and its pair), sets its options, binds it and
    /// makes it listen.
    fn create(&mut self, i: usize) -> Result<(), (FdStep, Errno)> {
        let sock_err = |e| (FdStep::UnixSocket, e);
        let ty = self.socks[i].ty;
        match self.socks[i].birth {
            Birth::Single => {
                let s =
                    socket(AddressFamily::Unix, ty, SockFlag::empty(), None).map_err(sock_err)?;
                self.building[i] = Some(s);
            }
            Birth::PairFirst { other } => {
                let (a, b) = socketpair(AddressFamily::Unix, ty, None, SockFlag::empty())
                    .map_err(sock_err)?;
                self.building[i] = Some(a);
                self.building[other] = Some(b);
            }
            Birth::PairSecond { .. } => {}
            Birth::HalfClosed => {
                let (a, b) = socketpair(AddressFamily::Unix, ty, None, SockFlag::empty())
                    .map_err(sock_err)?;
                self.building[i] = Some(a);
                self.fakes[i] = Some(b);
            }
        }
        let s = &self.socks[i];
        let sock = self.building[i]
            .as_ref()
            .ok_or((FdStep::UnixSocket, Errno::EBADF))?;
        crate::files::sk_opts::restore(sock, &s.opts).map_err(|e| (FdStep::UnixOpts, e))?;
        if s.bind {
            let bind_err = |e| (FdStep::UnixBind, e);
            let addr = address(&s.name).map_err(bind_err)?;
            if let Some(path) = addr.path() {
                // A socket file left by the dumped process is in the way.
                if let Ok(st) = nix::sys::stat::lstat(path) {
                    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                        nix::unistd::unlink(path).map_err(bind_err)?;
                    }
                }
            }
            bind(sock.as_raw_fd(), &addr).map_err(bind_err)?;
            if let (Some(path), Some(p)) = (addr.path(), &s.perms) {
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    path,
                    nix::sys::stat::Mode::from_bits_truncate(p.mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(bind_err)?;
                nix::unistd::chown(
                    path,
                    Some(nix::unistd::Uid::from_raw(p.uid)),
                    Some(nix::unistd::Gid::from_raw(p.gid)),
                )
                .map_err(bind_err)?;
            }
        }
        if let Some(backlog) = s.listen {
            let backlog = Backlog::new(backlog).map_err(|e| (FdStep::UnixListen, e))?;
            listen(sock, backlog).map_err(|e| (FdStep::UnixListen, e))?;
        }
        Ok(())
    }

    /// Sends the saved queue of socket `i` again, from where it can come.
    fn send_queue(&self, i: usize) -> Result<(), Errno> {
        let s = &self.socks[i];
        if s.queue.is_empty() {
            return Ok(());
        }
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let whole = |n: usize, len: usize| {
            if n == len {
                Ok(())
            } else {
                Err(Errno::EMSGSIZE)
            }
        };
        let from = match s.birth {
            Birth::PairFirst { other } | Birth::PairSecond { other } => {
                self.building[other].as_ref()
            }
            Birth::HalfClosed => self.fakes[i].as_ref(),
            Birth::Single => None,
        };
        if let Some(from) = from {
            for data in &s.queue {
                whole(send(from.as_raw_fd(), data, flags)?, data.len())?;
            }
            return Ok(());
        }
        let addr = address(&s.name)?;
        let tmp = socket(AddressFamily::Unix, s.ty, SockFlag::empty(), None)?;
        for data in &s.queue {
            whole(sendto(tmp.as_raw_fd(), data, &addr, flags)?, data.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, ino: u32, peer: u32, ty: i32, state: u32, name: &[u8]) -> FileEntry {
        FileEntry {
            id,
            usk: Some(UnixSkEntry {
                id,
                ino,
                peer,
                r#type: ty as u32,
                state,
                flags: libc::O_RDWR as u32,
                backlog: 4,
                name: name.to_vec(),
                opts: SkOptsEntry {
                    so_sndbuf: 212_992,
                    so_rcvbuf: 212_992,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_root_rebuilds_pairs_queues_listeners_and_waiting_connections() {
        let name = format!("\0criu-rs-unit-{}", std::process::id());
        let files: HashMap<u32, FileEntry> = [
            entry(1, 101, 102, libc::SOCK_DGRAM, TCP_ESTABLISHED, b""),
            entry(2, 102, 101, libc::SOCK_DGRAM, TCP_ESTABLISHED, b""),
            entry(3, 103, 0, libc::SOCK_STREAM, TCP_LISTEN, name.as_bytes()),
            entry(4, 104, 103, libc::SOCK_STREAM, TCP_ESTABLISHED, b""),
        ]
        .into_iter()
        .map(|f| (f.id, f))
        .collect();
        let mut plan = UnixPlan::default();
        let idx: Vec<usize> = (1..=4)
            .map(|id| plan.add(1, &files[&id], 10 + id as RawFd).unwrap())
            .collect();
        let queues: SkQueues = [(2, vec![b"first".to_vec(), b"second!".to_vec()])].into();
        plan.resolve(Some(&files), &queues).unwrap();
        plan.open_all(500).unwrap();
        let fd = |i: usize| plan.fd(idx[i]);
        assert!(idx.iter().all(|&i| plan.fd(i) >= 500));
        let mut buf = [0u8; 32];
        let n = nix::sys::socket::recv(fd(1), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"first", "boundaries kept");
        let n = nix::sys::socket::recv(fd(1), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"second!");
        // The waiting connection is in the listener's queue.
        let conn = nix::sys::socket::accept(fd(2)).unwrap();
        assert!(conn >= 0);
        for f in [fd(0), fd(1), fd(2), fd(3), conn] {
            let _ = nix::unistd::close(f);
        }
    }

    #[test]
    fn fd_steps_use_the_reserved_wire_codes() {
        for step in [
            FdStep::UnixSocket,
            FdStep::UnixBind,
            FdStep::UnixListen,
            FdStep::UnixConnect,
            FdStep::UnixQueue,
            FdStep::UnixOpts,
            FdStep::UnixShutdown,
            FdStep::Fifo,
            FdStep::FifoData,
        ] {
            assert!((20..=29).contains(&step.code()));
            assert_eq!(FdStep::from_code(step.code()), Some(step));
        }
    }

    #[test]
    fn removed_and_relative_names_are_refused() {
        let mut ue = UnixSkEntry {
            r#type: libc::SOCK_STREAM as u32,
            name: b"/run/x.sock\0".to_vec(),
            ..Default::default()
        };
        assert_eq!(refused(&ue), None);
        ue.deleted = Some(true);
        assert!(refused(&ue).is_some_and(|w| w.contains("removed")));
        ue.deleted = None;
        ue.name = b"x.sock\0".to_vec();
        assert!(refused(&ue).is_some_and(|w| w.contains("relative")));
        ue.name = b"\0abstract".to_vec();
        assert_eq!(refused(&ue), None);
    }

    #[test]
    fn names_map_to_abstract_or_path_addresses() {
        let a = address(b"\0criu-test").unwrap();
        assert_eq!(a.as_abstract(), Some(&b"criu-test"[..]));
        let p = address(b"/tmp/x.sock\0").unwrap();
        assert_eq!(p.path(), Some(std::path::Path::new("/tmp/x.sock")));
    }
}
