//! Open files of a task: `files.img` entries and `fdinfo-<id>.img` (CRIU's
//! `criu/files.c`, `criu/files-reg.c`).
//!
//! One id space covers every file entry of a dump. Descriptors that share
//! an open file description (`dup`, inheritance) share an id, found with
//! `kcmp(KCMP_FILE)` after a cheap filter on inode and position. The
//! executable, cwd, root and mapped files are looked up by device and
//! inode among everything recorded so far (newest first, as CRIU's cache
//! answers) and get a fresh entry only on a miss; character devices always
//! get a fresh one. Regular files, directories, character devices, pty
//! ends ([`tty`]), pipes ([`pipe`]), FIFOs ([`fifo`]), unix sockets
//! ([`unix_dump`]), memfds ([`memfd`]), files reachable by no path
//! ([`remap`]), locks held through descriptors ([`lock`]), eventfd, epoll,
//! signalfd, timerfd, inotify and fanotify files ([`anon_inode`]), and the
//! client's CRIU-RPC socket of a self-dump ([`unix_sk`]) are supported; any
//! other kind of descriptor fails the dump with the task, fd and kind named.

pub mod anon_inode;
pub mod eventfd;
pub mod eventpoll;
pub mod fanotify;
pub mod fhandle;
pub mod fifo;
pub mod inotify;
pub mod lock;
pub mod memfd;
pub mod pipe;
pub mod reg;
pub mod remap;
pub mod signalfd;
pub(crate) mod sk_opts;
pub mod sk_queue;
pub mod timerfd;
pub mod tty;
pub mod unix_dump;
pub mod unix_sk;

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_proto::images::{FdTypes, FdinfoEntry, FileEntry};

use crate::arch::nr;
use crate::inject::{InjectError, Injection};
use crate::proc::ProcError;
use crate::pstree::RealPid;
use crate::sys::task_query::kcmp_file;

/// A file of the task could not be described.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// `/proc/<pid>/fd` could not be listed.
    #[error("cannot list the descriptors of task {pid}")]
    List {
        /// The task.
        pid: RealPid,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A descriptor's link or inode could not be examined.
    #[error("cannot examine fd {fd} of task {pid}")]
    Fd {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its fdinfo could not be read.
    #[error("cannot read fdinfo of fd {fd} of task {pid}")]
    FdInfo {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// A kind of descriptor the dump does not support yet.
    #[error("task {pid}: fd {fd} is {kind}, which cannot be dumped yet")]
    Unsupported {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// What it is.
        kind: String,
    },
    /// The injected `fcntl(F_GETOWN)` failed.
    #[error("cannot query the owner of fd {fd} of task {pid}")]
    Owner {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// The client's RPC socket could not be saved.
    #[error(transparent)]
    UnixSk(#[from] unix_sk::UnixSkError),
    /// A terminal could not be dumped.
    #[error(transparent)]
    Tty(#[from] tty::TtyError),
    /// A unix socket could not be dumped.
    #[error(transparent)]
    UnixDump(#[from] unix_dump::UnixDumpError),
    /// An epoll's targets could not be described.
    #[error(transparent)]
    Eventpoll(#[from] eventpoll::EventpollError),
    /// An inotify's watches could not be described.
    #[error(transparent)]
    Inotify(#[from] inotify::InotifyError),
    /// A fanotify's marks could not be described.
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
    /// A memfd could not be saved.
    #[error("task {pid}: fd {fd} (-1: a mapping) is a memfd")]
    Memfd {
        /// The task.
        pid: RealPid,
        /// The descriptor (-1 for a mapping).
        fd: i32,
        /// Why.
        #[source]
        source: memfd::MemfdError,
    },
    /// A file whose path vanished could not be saved.
    #[error("task {pid}: fd {fd} (-1: a mapping or the executable) has lost its path")]
    Remap {
        /// The task.
        pid: RealPid,
        /// The descriptor (-1 for a mapping).
        fd: i32,
        /// Why.
        #[source]
        source: remap::RemapError,
    },
    /// A file lock could not be saved.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The contents of the memfds met could not be saved.
    #[error("cannot save the memfds of the dump")]
    MemfdImages(#[source] memfd::MemfdError),
    /// The ghost files or `remap-fpath.img` could not be saved.
    #[error("cannot save the ghost files of the dump")]
    RemapImages(#[source] remap::RemapError),
    /// The client's RPC socket could not be taken from the task.
    #[error("cannot take fd {fd} of task {pid}")]
    Steal {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// A path link (exe, cwd, root) could not be read or is unusable.
    #[error("task {pid}: cannot use its {what} {path}")]
    Special {
        /// The task.
        pid: RealPid,
        /// `exe`, `cwd` or `root`.
        what: &'static str,
        /// What the link says.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A descriptor's fdinfo entry and the (device, inode, position) key used
/// to find descriptors sharing its open file description.
type DumpedFd = (FdinfoEntry, (u64, u64, u64));

struct Known {
    dev: u64,
    ino: u64,
    id: u32,
}

/// A descriptor already described: `(pid, fd, dev, ino, pos, id)`.
type SeenFd = (RealPid, i32, u64, u64, u64, u32);

/// The `files.img` being built for a dump (of one task or a whole tree: a
/// file description shared by several tasks gets one entry).
#[derive(Default)]
pub struct FileTable {
    next_id: u32,
    entries: Vec<FileEntry>,
    known: Vec<Known>,
    seen: Vec<SeenFd>,
    pipes: Vec<pipe::PipeData>,
    rpc_socket: Option<u64>,
    ignored: Vec<(RealPid, i32)>,
    ttys: tty::TtyTable,
    tty_opts: tty::TtyOptions,
    unix: unix_dump::UnixDump,
    fifos: Vec<pipe::PipeData>,
    memfds: memfd::MemfdTable,
    remaps: remap::RemapTable,
    locks: lock::LockTable,
    /// Memfd files made for mappings: `(dev, ino, id)`.
    memfd_maps: Vec<(u64, u64, u32)>,
}

/// Options of the dump that change how files are saved.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// `ghost_limit`: biggest unlinked file saved, in bytes.
    pub ghost_limit: u64,
    /// `link_remap`: files unlinked while other links remain get a new one.
    pub link_remap: bool,
    /// `file_locks`: held file locks are saved (otherwise they fail the dump).
    pub file_locks: bool,
    /// Whether the dumped tasks keep running, so link remaps made for the
    /// images are removed again once the dump ends (as CRIU does).
    pub leave_running: bool,
    /// Which terminals are accepted and whether their queued bytes are
    /// written back.
    pub ttys: tty::TtyOptions,
}

/// `/proc/<pid>/fdinfo/<fd>` of a descriptor: its text and what it says.
fn read_fdinfo(pid: RealPid, fd: i32) -> Result<(String, crate::proc::fdinfo::FdInfo), FilesError> {
    let err = |source| FilesError::FdInfo { pid, fd, source };
    let text = crate::proc::read(pid.0, &format!("fdinfo/{fd}")).map_err(err)?;
    let info = crate::proc::fdinfo::parse(&text).map_err(err)?;
    Ok((text, info))
}

/// Fails with `refusal` when descriptor `fd` has an `F_SETOWN` owner (asked
/// by an injected `fcntl(F_GETOWN)`).
fn refuse_owner(
    pid: RealPid,
    inj: &Injection<'_>,
    fd: i32,
    refusal: impl FnOnce() -> FilesError,
) -> Result<(), FilesError> {
    let owner = inj
        .syscall(nr::FCNTL, &[fd as u64, libc::F_GETOWN as u64])
        .map_err(|source| FilesError::Owner { pid, fd, source })?;
    if owner != 0 {
        return Err(refusal());
    }
    Ok(())
}

/// Splits fdinfo `flags` into close-on-exec and the file status flags.
fn split_flags(flags: u32) -> (bool, u32) {
    let cloexec = libc::O_CLOEXEC as u32;
    (flags & cloexec != 0, flags & !cloexec)
}

/// The `fdinfo-<id>.img` entry putting file `id` at descriptor `fd`.
fn fdinfo_entry(id: u32, cloexec: bool, kind: FdTypes, fd: i32) -> FdinfoEntry {
    FdinfoEntry {
        id,
        flags: if cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
        r#type: kind as i32,
        fd: fd as u32,
        xattr_security_selinux: None,
    }
}

impl FileTable {
    /// The id of a descriptor seen before that shares the open file
    /// description of `fd` of `pid` (same key, `kcmp` equal).
    fn shared_id(&self, pid: RealPid, fd: i32, key: (u64, u64, u64)) -> Option<u32> {
        self.seen
            .iter()
            .find(|s| {
                (s.2, s.3, s.4) == key && kcmp_file(pid.as_nix(), s.0.as_nix(), fd, s.1) == Ok(0)
            })
            .map(|s| s.5)
    }
}

impl FileTable {
    /// An empty table; ids start at 1.
    pub fn new() -> Self {
        FileTable {
            next_id: 1,
            ..Default::default()
        }
    }

    /// The data of every pipe met so far, one entry per pipe.
    pub fn pipes(&self) -> &[pipe::PipeData] {
        &self.pipes
    }

    /// Names the worker's end of a CRIU-RPC connection: the task's socket
    /// connected to it is saved as the service socket (self-dump).
    pub fn set_rpc_socket(&mut self, ino: Option<u64>) {
        self.rpc_socket = ino;
    }

    /// Leaves descriptor `fd` of task `pid` out of the dump (one of the
    /// engine's own, such as the memory tracker).
    pub fn ignore_fd(&mut self, pid: RealPid, fd: i32) {
        self.ignored.push((pid, fd));
    }

    /// Every entry, in allocation order.
    pub fn entries(&self) -> &[FileEntry] {
        &self.entries
    }

    /// Applies the dump's file options.
    pub fn configure(&mut self, opts: FileOptions) {
        self.remaps.configure(opts.ghost_limit, opts.link_remap);
        self.locks.configure(opts.file_locks);
        self.tty_opts = opts.ttys;
    }

    /// Writes the images that follow `files.img`: `memfd.img` with memfd
    /// contents, ghost files, `remap-fpath.img` and `filelocks.img`.
    pub fn write_extra(&mut self, dir: &criu_proto::img::ImagesDir) -> Result<(), FilesError> {
        self.memfds.write(dir).map_err(FilesError::MemfdImages)?;
        self.remaps.write(dir).map_err(FilesError::RemapImages)?;
        self.locks.write(dir)?;
        Ok(())
    }

    /// Undoes what a failed dump left on disk (link remaps).
    pub fn rollback(&mut self) {
        self.remaps.rollback();
    }

    /// The id of the file behind a mapping of task `pid`: a memfd, an
    /// unlinked (ghost) file or a plain file found by path.
    pub fn mapped(
        &mut self,
        pid: RealPid,
        file: &crate::mem::vma::MappedFile,
        memfd: bool,
    ) -> Result<u32, FilesError> {
        let link = file.link.clone();
        let meta = &file.meta;
        if memfd {
            if let Some(&(_, _, id)) = self
                .memfd_maps
                .iter()
                .find(|m| (m.0, m.1) == (meta.dev(), meta.ino()))
            {
                return Ok(id);
            }
            let name = memfd::memfd_name(&file.path, meta).unwrap_or_default();
            let inode = self
                .memfds
                .inode(&name, meta, || File::open(&link))
                .map_err(|source| FilesError::Memfd {
                    pid,
                    fd: -1,
                    source,
                })?;
            let id = self.alloc();
            // As CRIU: no flags, the mapping's own access is in its VMA.
            self.entries.push(memfd::file_entry(id, 0, 0, inode));
            self.memfd_maps.push((meta.dev(), meta.ino(), id));
            return Ok(id);
        }
        if file.path.ends_with(remap::DELETED) {
            return self.vanished_special(pid, &file.path, meta, &link);
        }
        Ok(self.special(&file.path, meta, || File::open(link).ok()))
    }

    /// [`FileTable::special`] for a file its path no longer reaches (an
    /// unlinked executable or mapped file): the entry met before for the
    /// same inode, or a new one with a remap.
    fn vanished_special(
        &mut self,
        pid: RealPid,
        name: &str,
        meta: &Metadata,
        link: &Path,
    ) -> Result<u32, FilesError> {
        if let Some(k) = self
            .known
            .iter()
            .rev()
            .find(|k| k.dev == meta.dev() && k.ino == meta.ino())
        {
            return Ok(k.id);
        }
        let id = self.alloc();
        let name = self.remap(pid, -1, id, name, meta, link)?;
        let e = reg::entry(id, &name, 0, 0, meta, File::open(link).ok());
        Ok(self.push(e, meta))
    }

    fn remap(
        &mut self,
        pid: RealPid,
        fd: i32,
        id: u32,
        name: &str,
        meta: &Metadata,
        link: &Path,
    ) -> Result<String, FilesError> {
        let mut next = self.next_id;
        let mut alloc = || {
            let id = next;
            next += 1;
            id
        };
        let (path, extra) = self
            .remaps
            .remap(id, name, meta, link, &mut alloc)
            .map_err(|source| FilesError::Remap { pid, fd, source })?;
        self.next_id = next;
        if let Some(e) = extra {
            self.entries.push(e);
        }
        Ok(path)
    }

    fn push(&mut self, reg: criu_proto::images::RegFileEntry, meta: &Metadata) -> u32 {
        let id = reg.id;
        self.known.push(Known {
            dev: meta.dev(),
            ino: meta.ino(),
            id,
        });
        self.entries.push(FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(reg),
            ..Default::default()
        });
        id
    }

    fn alloc(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The id of a non-descriptor file (executable, mapping, cwd, root),
    /// adding an entry on a cache miss. `open` gives read access for the
    /// build-id.
    pub fn special(
        &mut self,
        name: &str,
        meta: &Metadata,
        open: impl FnOnce() -> Option<File>,
    ) -> u32 {
        let is_chr = meta.mode() & libc::S_IFMT == libc::S_IFCHR;
        if !is_chr {
            if let Some(k) = self
                .known
                .iter()
                .rev()
                .find(|k| k.dev == meta.dev() && k.ino == meta.ino())
            {
                return k.id;
            }
        }
        let id = self.alloc();
        let e = reg::entry(id, name, 0, 0, meta, open());
        self.push(e, meta)
    }

    /// The id of a path link of the task (`exe`, `cwd`, `root`).
    pub fn special_link(&mut self, pid: RealPid, what: &'static str) -> Result<u32, FilesError> {
        let link = crate::proc::path(pid.0, what);
        let err = |path: String, source| FilesError::Special {
            pid,
            what,
            path,
            source,
        };
        let target = std::fs::read_link(&link).map_err(|e| err(String::new(), e))?;
        let name = target.to_string_lossy().into_owned();
        let meta = std::fs::metadata(&link).map_err(|e| err(name.clone(), e))?;
        let regular = meta.mode() & libc::S_IFMT == libc::S_IFREG;
        if name.starts_with('/') && name.ends_with(remap::DELETED) && regular {
            // An unlinked executable: saved as a ghost file, like its mappings.
            return self.vanished_special(pid, &name, &meta, &link);
        }
        if !name.starts_with('/') || name.ends_with(remap::DELETED) {
            return Err(err(name, std::io::ErrorKind::NotFound.into()));
        }
        Ok(self.special(&name, &meta, || File::open(&link).ok()))
    }

    /// Describes every descriptor of the task, adding `files.img` entries;
    /// returns its `fdinfo` entries in fd order.
    pub fn dump_fds(
        &mut self,
        pid: RealPid,
        vpid: u32,
        inj: &Injection<'_>,
    ) -> Result<Vec<FdinfoEntry>, FilesError> {
        let dir = crate::proc::path(pid.0, "fd");
        let mut fds: Vec<i32> = std::fs::read_dir(&dir)
            .map_err(|source| FilesError::List { pid, source })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| !self.ignored.contains(&(pid, *fd)))
            .collect();
        fds.sort_unstable();
        let mut out = Vec::with_capacity(fds.len());
        for fd in fds {
            let (fdinfo, key) = self.dump_fd(pid, vpid, inj, fd, &dir)?;
            self.seen.push((pid, fd, key.0, key.1, key.2, fdinfo.id));
            out.push(fdinfo);
        }
        Ok(out)
    }

    fn dump_fd(
        &mut self,
        pid: RealPid,
        vpid: u32,
        inj: &Injection<'_>,
        fd: i32,
        dir: &Path,
    ) -> Result<DumpedFd, FilesError> {
        let link = dir.join(fd.to_string());
        let io_err = |source| FilesError::Fd { pid, fd, source };
        let target = std::fs::read_link(&link).map_err(io_err)?;
        let name = target.to_string_lossy().into_owned();
        let unsupported = |kind: String| FilesError::Unsupported { pid, fd, kind };
        if let Some(pipe_id) = pipe::pipe_ino(&name) {
            return self.dump_pipe(pid, inj, fd, &link, pipe_id);
        }
        if let Some(entry) = self.service_socket(pid, fd, &name)? {
            return Ok(entry);
        }
        if let Some(ino) = unix_dump::socket_ino(&name) {
            return self.dump_socket(pid, inj, fd, &link, ino);
        }
        if let Some(kind) = anon_inode::kind(&name) {
            return self.dump_anon(pid, inj, fd, &link, kind);
        }
        if !name.starts_with('/') {
            let kind = match name.split_once(':') {
                Some(("anon_inode", what)) => format!("an anonymous inode {what}"),
                Some((kind, _)) => format!("a {kind}"),
                None => format!("a special file {name}"),
            };
            return Err(unsupported(kind));
        }
        let meta = std::fs::metadata(&link).map_err(io_err)?;
        match meta.mode() & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => {}
            libc::S_IFCHR if !tty::is_tty(&meta) => {}
            libc::S_IFCHR => return self.dump_tty(pid, inj, fd, &name, &meta),
            libc::S_IFIFO => return self.dump_fifo(pid, inj, fd, &link, &name, &meta),
            _ => return Err(unsupported(format!("a special file {name}"))),
        }
        let memfd_name = memfd::memfd_name(&name, &meta);
        let vanished = memfd_name.is_none()
            && match std::fs::metadata(&name) {
                Ok(m) => m.dev() != meta.dev() || m.ino() != meta.ino(),
                Err(_) => true,
            };
        if vanished && !name.ends_with(remap::DELETED) {
            return Err(unsupported(format!("a file no longer reachable as {name}")));
        }
        let (text, info) = read_fdinfo(pid, fd)?;
        refuse_owner(pid, inj, fd, || {
            unsupported(format!("{name} with an F_SETOWN owner"))
        })?;
        let (cloexec, flags) = split_flags(info.flags);
        let key = (meta.dev(), meta.ino(), info.pos);
        let shared = self.shared_id(pid, fd, key);
        self.locks.note(pid, vpid, fd, &text, shared.is_none())?;
        let id = match shared {
            Some(id) => id,
            None if memfd_name.is_some() => {
                let mname = memfd_name.as_deref().unwrap_or_default();
                let inode = self
                    .memfds
                    .inode(mname, &meta, || File::open(&link))
                    .map_err(|source| FilesError::Memfd { pid, fd, source })?;
                let id = self.alloc();
                self.entries
                    .push(memfd::file_entry(id, flags, info.pos, inode));
                id
            }
            None => {
                let id = self.alloc();
                let name = if vanished {
                    self.remap(pid, fd, id, &name, &meta, &link)?
                } else {
                    name
                };
                let open = (meta.mode() & libc::S_IFMT == libc::S_IFREG
                    && reg::should_check_size(flags))
                .then(|| File::open(&link).ok())
                .flatten();
                let e = reg::entry(id, &name, flags, info.pos, &meta, open);
                self.push(e, &meta)
            }
        };
        let r#type = if memfd_name.is_some() {
            FdTypes::Memfd
        } else {
            FdTypes::Reg
        };
        Ok((fdinfo_entry(id, cloexec, r#type, fd), key))
    }
}
