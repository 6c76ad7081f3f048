//! Descriptors of the restored task: which file object goes to which number,
//! planned by the engine and carried out by the new task itself before it
//! stops (CRIU's `prepare_fds` in `criu/files.c`, `open_reg_by_id` in
//! `criu/files-reg.c`, `open_pipe` in `criu/pipes.c`, and the `inherit_fd`
//! lookup of `criu/files.c`).
//!
//! The plan is built with ordinary allocation in the engine. The child only
//! walks it: it opens files, creates pipes and duplicates descriptors with
//! plain syscalls, so it is safe to run right after `clone3`.
//!
//! # References
//!
//! - [open(2)](https://man7.org/linux/man-pages/man2/open.2.html),
//!   [dup(2)](https://man7.org/linux/man-pages/man2/dup.2.html),
//!   [pipe(2)](https://man7.org/linux/man-pages/man2/pipe.2.html)

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};

use criu_proto::images::{FdTypes, FileEntry};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use super::fifo::FifoData;
use super::images::TaskImages;
use super::unix_sk::{SkQueues, UnixPlan};
use crate::config::InheritFd;
use crate::sys::clone3::{dup_above, dup_to, set_status_flags, write_raw};

/// Flags of a dumped file that make no sense when reopening it.
const REOPEN_MASK: i32 =
    libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC;
/// Status flags `F_SETFL` can change on a pipe end.
const PIPE_SETFL_MASK: i32 = libc::O_NONBLOCK | libc::O_DIRECT | libc::O_ASYNC;

/// Where a file object comes from.
#[derive(Debug)]
enum Source {
    /// A regular file (or device, directory) reopened by path.
    Open {
        path: CString,
        flags: OFlag,
        pos: u64,
    },
    /// One end of pipe number `pipe` of the plan.
    Pipe {
        pipe: usize,
        write: bool,
        flags: i32,
    },
    /// A descriptor of the worker handed over with `inherit_fd`.
    Inherit { worker_fd: RawFd },
    /// The client's CRIU-RPC socket of a self-dump: a new socketpair whose
    /// far end has queued `response` (the encoded answer) and is closed.
    Service { sock_type: u32, response: Vec<u8> },
    /// A terminal end ([`super::tty`]).
    Tty(super::tty::TtySource),
    /// Unix socket number `sock` of the plan's [`UnixPlan`].
    Unix { sock: usize },
    /// A FIFO reopened by path; `data` (pipe size, bytes) is queued by the
    /// first object of each FIFO.
    Fifo {
        path: CString,
        flags: OFlag,
        data: Option<(u32, Vec<u8>)>,
    },
    /// An eventfd, signalfd, timerfd, epoll, inotify or fanotify.
    Anon(super::anon_fd::AnonSource),
    /// A memfd the worker recreated: reopened through `path`
    /// (`/proc/self/fd/<worker's fd>`) with the dumped flags and position.
    Memfd {
        path: CString,
        flags: OFlag,
        pos: u64,
    },
}

/// One file object (one open file description of the dump).
#[derive(Debug)]
struct Object {
    source: Source,
    /// First descriptor number naming it (for error reports).
    first: RawFd,
    /// Where the root task holds it (scratch numbers; -1 until opened).
    opened: RawFd,
}

/// The step of the child's set-up that failed, with the descriptor involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdFailure {
    /// What was being done.
    pub(crate) step: FdStep,
    /// Descriptor number in the task.
    pub(crate) fd: RawFd,
    /// Cause.
    pub(crate) errno: Errno,
}

/// Steps of [`FdPlan::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdStep {
    /// Moving an inherited descriptor out of the way.
    Relocate,
    /// Opening a file by path.
    Open,
    /// Setting the file position.
    Seek,
    /// Creating a pipe.
    Pipe,
    /// Putting a descriptor at its number.
    Dup,
    /// Setting file status flags.
    SetFl,
    /// Queueing the data of a pipe.
    PipeData,
    /// Rebuilding the client's RPC socket.
    Service,
    /// Opening a terminal.
    TtyOpen,
    /// Reaching the dumped pty index.
    TtyIndex,
    /// Unlocking a pty.
    TtyUnlock,
    /// Setting termios and window size.
    TtyState,
    /// Setting packet mode.
    TtyPacket,
    /// Queueing the data of a terminal.
    TtyData,
    /// Locking a pty again.
    TtyLock,
    /// Taking the controlling terminal.
    TtyCtty,
    /// Setting the foreground process group.
    TtyForeground,
    /// Creating a unix socket.
    UnixSocket,
    /// Binding a unix socket to its name.
    UnixBind,
    /// Making a unix socket listen.
    UnixListen,
    /// Connecting a unix socket to its peer's name.
    UnixConnect,
    /// Queueing the saved messages of a unix socket.
    UnixQueue,
    /// Setting the options of a unix socket.
    UnixOpts,
    /// Shutting a unix socket down as it was.
    UnixShutdown,
    /// Opening a FIFO.
    Fifo,
    /// Queueing the data of a FIFO.
    FifoData,
    /// Creating an eventfd.
    Eventfd,
    /// Creating a signalfd.
    Signalfd,
    /// Creating a timerfd.
    Timerfd,
    /// Creating an epoll.
    Epoll,
    /// Creating an inotify.
    Inotify,
    /// Adding an inotify watch.
    InotifyWatch,
    /// Creating a fanotify.
    Fanotify,
    /// Adding a fanotify mark.
    FanotifyMark,
    /// Reopening a memfd.
    Memfd,
}

impl FdStep {
    /// Wire code used by the child's report.
    pub(crate) fn code(self) -> u8 {
        match self {
            FdStep::Relocate => 1,
            FdStep::Open => 2,
            FdStep::Seek => 3,
            FdStep::Pipe => 4,
            FdStep::Dup => 5,
            FdStep::SetFl => 6,
            FdStep::PipeData => 7,
            FdStep::Service => 8,
            FdStep::TtyOpen => 30,
            FdStep::TtyIndex => 31,
            FdStep::TtyUnlock => 32,
            FdStep::TtyState => 33,
            FdStep::TtyPacket => 34,
            FdStep::TtyData => 35,
            FdStep::TtyLock => 36,
            FdStep::TtyCtty => 37,
            FdStep::TtyForeground => 38,
            FdStep::UnixSocket => 20,
            FdStep::UnixBind => 21,
            FdStep::UnixListen => 22,
            FdStep::UnixConnect => 23,
            FdStep::UnixQueue => 24,
            FdStep::UnixOpts => 25,
            FdStep::UnixShutdown => 26,
            FdStep::Fifo => 27,
            FdStep::FifoData => 28,
            FdStep::Eventfd => 10,
            FdStep::Signalfd => 11,
            FdStep::Timerfd => 12,
            FdStep::Epoll => 13,
            FdStep::Inotify => 14,
            FdStep::InotifyWatch => 15,
            FdStep::Fanotify => 16,
            FdStep::FanotifyMark => 17,
            FdStep::Memfd => 40,
        }
    }

    /// Inverse of [`FdStep::code`].
    pub(crate) fn from_code(code: u8) -> Option<FdStep> {
        Some(match code {
            1 => FdStep::Relocate,
            2 => FdStep::Open,
            3 => FdStep::Seek,
            4 => FdStep::Pipe,
            5 => FdStep::Dup,
            6 => FdStep::SetFl,
            7 => FdStep::PipeData,
            8 => FdStep::Service,
            30 => FdStep::TtyOpen,
            31 => FdStep::TtyIndex,
            32 => FdStep::TtyUnlock,
            33 => FdStep::TtyState,
            34 => FdStep::TtyPacket,
            35 => FdStep::TtyData,
            36 => FdStep::TtyLock,
            37 => FdStep::TtyCtty,
            38 => FdStep::TtyForeground,
            20 => FdStep::UnixSocket,
            21 => FdStep::UnixBind,
            22 => FdStep::UnixListen,
            23 => FdStep::UnixConnect,
            24 => FdStep::UnixQueue,
            25 => FdStep::UnixOpts,
            26 => FdStep::UnixShutdown,
            27 => FdStep::Fifo,
            28 => FdStep::FifoData,
            10 => FdStep::Eventfd,
            11 => FdStep::Signalfd,
            12 => FdStep::Timerfd,
            13 => FdStep::Epoll,
            14 => FdStep::Inotify,
            15 => FdStep::InotifyWatch,
            16 => FdStep::Fanotify,
            17 => FdStep::FanotifyMark,
            40 => FdStep::Memfd,
            _ => return None,
        })
    }

    /// Human name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FdStep::Relocate => "move an inherited fd",
            FdStep::Open => "open a file",
            FdStep::Seek => "set a file position",
            FdStep::Pipe => "create a pipe",
            FdStep::Dup => "place a descriptor",
            FdStep::SetFl => "set file status flags",
            FdStep::PipeData => "queue the data of a pipe",
            FdStep::Service => "rebuild the CRIU-RPC socket",
            FdStep::TtyOpen => "open a terminal",
            FdStep::TtyIndex => "open /dev/ptmx at the dumped pty index",
            FdStep::TtyUnlock => "unlock a pty",
            FdStep::TtyState => "restore a terminal's termios and window size",
            FdStep::TtyPacket => "set pty packet mode",
            FdStep::TtyData => "queue the data of a terminal",
            FdStep::TtyLock => "lock a pty",
            FdStep::TtyCtty => "take back its controlling terminal",
            FdStep::TtyForeground => "set a terminal's foreground process group",
            FdStep::UnixSocket => "create a unix socket",
            FdStep::UnixBind => "bind a unix socket",
            FdStep::UnixListen => "make a unix socket listen",
            FdStep::UnixConnect => "connect a unix socket",
            FdStep::UnixQueue => "queue the messages of a unix socket",
            FdStep::UnixOpts => "set the options of a unix socket",
            FdStep::UnixShutdown => "shut a unix socket down",
            FdStep::Fifo => "open a fifo",
            FdStep::FifoData => "queue the data of a fifo",
            FdStep::Eventfd => "create an eventfd",
            FdStep::Signalfd => "create a signalfd",
            FdStep::Timerfd => "create a timerfd",
            FdStep::Epoll => "create an epoll",
            FdStep::Inotify => "create an inotify",
            FdStep::InotifyWatch => "add an inotify watch",
            FdStep::Fanotify => "create a fanotify",
            FdStep::FanotifyMark => "add a fanotify mark",
            FdStep::Memfd => "reopen a memfd",
        }
    }
}

/// Every descriptor of every task of the tree, by file object.
///
/// The root task opens every object once, above all target numbers
/// ([`FdPlan::open_all`]), before it creates its children, which inherit
/// them: an object several tasks share is one open file description again,
/// with one offset. Each task then puts its objects at its own numbers
/// ([`FdPlan::apply`]) and closes the rest.
#[derive(Debug)]
pub(crate) struct FdPlan {
    objects: Vec<Object>,
    /// `[read, write]` ends of each pipe (child scratch, -1 until created).
    pipes: Vec<[RawFd; 2]>,
    /// Data to queue in each pipe: (pipe size, bytes).
    pipe_data: Vec<Option<(u32, Vec<u8>)>>,
    /// Per task (tree index): `(object, fd, close-on-exec)`.
    per_task: Vec<Vec<(usize, RawFd, bool)>>,
    /// Per task: every target number, ascending.
    targets: Vec<Vec<RawFd>>,
    /// Per task: the controlling terminal it takes as session leader.
    cttys: Vec<Option<super::tty::Ctty>>,
    /// Every unix socket.
    unix: UnixPlan,
}

/// Whether `inherit_fd` key `key` names `file` (`pipe:[ID]` for pipes,
/// `socket:[INO]` for unix sockets, the path with or without its leading
/// `/` for files).
pub(crate) fn inherit_matches(key: &str, file: &FileEntry) -> bool {
    if let Some(reg) = &file.reg {
        return key == reg.name || key == reg.name.trim_start_matches('/');
    }
    if let Some(pipe) = &file.pipe {
        return key == format!("pipe:[{}]", pipe.pipe_id);
    }
    if let Some(usk) = &file.usk {
        return key == format!("socket:[{}]", usk.ino);
    }
    false
}

impl FdPlan {
    /// Plans the descriptors of every task (`None` for zombies), replacing
    /// files named by `inherit`. A failure names the task's pid.
    pub(crate) fn new(
        tasks: &[Option<&TaskImages>],
        inherit: &[InheritFd],
        pipe_data: &HashMap<u32, (u32, Vec<u8>)>,
        ttys: &super::tty::TtyImages,
        sk_queues: &SkQueues,
        fifo_data: &FifoData,
        memfds: &super::memfd::Memfds,
    ) -> Result<FdPlan, (u32, Errno)> {
        let mut unix = UnixPlan::default();
        let mut fifos_seen = Vec::new();
        let mut all_files = None;
        let mut objects: Vec<Object> = Vec::new();
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        let mut pipes: HashMap<u32, usize> = HashMap::new();
        let mut plan_data = Vec::new();
        let mut per_task = Vec::with_capacity(tasks.len());
        let mut all_targets = Vec::with_capacity(tasks.len());
        let mut cttys = Vec::with_capacity(tasks.len());
        let mut tty_ends = std::collections::HashSet::new();
        for task in tasks {
            cttys.push(task.and_then(|t| ttys.ctty(t.pid())));
            let mut mine = Vec::new();
            let mut targets = Vec::new();
            if let Some(task) = task {
                let err = |e| (task.pid(), e);
                all_files.get_or_insert(&task.files);
                for fd in &task.fds {
                    let target = RawFd::try_from(fd.fd).map_err(|_| err(Errno::EBADF))?;
                    let cloexec = fd.flags & 1 != 0;
                    targets.push(target);
                    if let Some(&idx) = by_id.get(&fd.id) {
                        mine.push((idx, target, cloexec));
                        continue;
                    }
                    let file = task.files.get(&fd.id).ok_or(err(Errno::ENOENT))?;
                    let source = if let Some(inh) =
                        inherit.iter().find(|i| inherit_matches(&i.key, file))
                    {
                        Source::Inherit { worker_fd: inh.fd }
                    } else if crate::files::unix_sk::is_service_socket(file) {
                        let usk = file.usk.as_ref().ok_or(err(Errno::ENOENT))?;
                        Source::Service {
                            sock_type: usk.r#type,
                            response: crate::files::unix_sk::restored_response(),
                        }
                    } else if fd.r#type == FdTypes::Tty as i32 {
                        let end = file.tty.as_ref().map_or(0, |t| t.tty_info_id);
                        let first = tty_ends.insert(end);
                        let src = ttys.source(task, file, inherit, first).map_err(|e| {
                            tracing::error!(pid = task.pid(), fd = fd.fd, "{e}");
                            err(Errno::ENOENT)
                        })?;
                        Source::Tty(src)
                    } else if fd.r#type == FdTypes::Unixsk as i32 {
                        Source::Unix {
                            sock: unix.add(task.pid(), file, target).map_err(err)?,
                        }
                    } else if fd.r#type == FdTypes::Fifo as i32 {
                        let fifo = file.fifo.as_ref().ok_or(err(Errno::ENOENT))?;
                        let reg = task
                            .files
                            .get(&fifo.regf_id.unwrap_or(fifo.id))
                            .and_then(|f| f.reg.as_ref())
                            .ok_or(err(Errno::ENOENT))?;
                        let flags = i32::try_from(reg.flags).map_err(|_| err(Errno::EINVAL))?
                            & !REOPEN_MASK;
                        let data = if fifos_seen.contains(&fifo.pipe_id) {
                            None
                        } else {
                            fifos_seen.push(fifo.pipe_id);
                            fifo_data.get(&fifo.pipe_id).cloned()
                        };
                        Source::Fifo {
                            path: CString::new(reg.name.as_str())
                                .map_err(|_| err(Errno::EINVAL))?,
                            flags: OFlag::from_bits_retain(flags),
                            data,
                        }
                    } else if let Some(anon) = super::anon_fd::AnonSource::of(file) {
                        Source::Anon(anon.map_err(err)?)
                    } else if let Some((worker_fd, flags, pos)) = memfds
                        .source(fd.id)
                        .filter(|_| fd.r#type == FdTypes::Memfd as i32)
                    {
                        let flags =
                            i32::try_from(flags).map_err(|_| err(Errno::EINVAL))? & !REOPEN_MASK;
                        Source::Memfd {
                            path: CString::new(format!("/proc/self/fd/{worker_fd}"))
                                .map_err(|_| err(Errno::EINVAL))?,
                            flags: OFlag::from_bits_retain(flags),
                            pos,
                        }
                    } else if fd.r#type == FdTypes::Pipe as i32 {
                        let pipe = file.pipe.as_ref().ok_or(err(Errno::ENOENT))?;
                        let next = pipes.len();
                        let idx = *pipes.entry(pipe.pipe_id).or_insert_with(|| {
                            plan_data.push(pipe_data.get(&pipe.pipe_id).cloned());
                            next
                        });
                        let flags = i32::try_from(pipe.flags).map_err(|_| err(Errno::EINVAL))?;
                        Source::Pipe {
                            pipe: idx,
                            write: flags & libc::O_ACCMODE == libc::O_WRONLY,
                            flags,
                        }
                    } else {
                        let reg = file.reg.as_ref().ok_or(err(Errno::ENOENT))?;
                        let flags = i32::try_from(reg.flags).map_err(|_| err(Errno::EINVAL))?
                            & !REOPEN_MASK;
                        Source::Open {
                            path: CString::new(reg.name.as_str())
                                .map_err(|_| err(Errno::EINVAL))?,
                            flags: OFlag::from_bits_retain(flags),
                            pos: reg.pos,
                        }
                    };
                    by_id.insert(fd.id, objects.len());
                    mine.push((objects.len(), target, cloexec));
                    objects.push(Object {
                        source,
                        first: target,
                        opened: -1,
                    });
                }
            }
            targets.sort_unstable();
            per_task.push(mine);
            all_targets.push(targets);
        }
        unix.resolve(all_files, sk_queues)?;
        Ok(FdPlan {
            unix,
            objects,
            pipes: vec![[-1, -1]; pipes.len()],
            pipe_data: plan_data,
            per_task,
            targets: all_targets,
            cttys,
        })
    }

    /// Target numbers of task `task` (tree index), ascending.
    pub(crate) fn targets(&self, task: usize) -> &[RawFd] {
        &self.targets[task]
    }

    /// Highest target number of any task, or -1 without descriptors.
    pub(crate) fn max_target(&self) -> RawFd {
        self.targets
            .iter()
            .filter_map(|t| t.last().copied())
            .max()
            .unwrap_or(-1)
    }

    /// In the new task: moves inherited descriptors to `scratch` or above.
    /// Must run before [`FdPlan::apply`], and `scratch` must exceed every
    /// target number.
    pub(crate) fn relocate(&mut self, scratch: RawFd) -> Result<(), FdFailure> {
        for obj in &mut self.objects {
            match &obj.source {
                Source::Inherit { worker_fd } => {
                    obj.opened = dup_above(*worker_fd, scratch).map_err(|errno| FdFailure {
                        step: FdStep::Relocate,
                        fd: *worker_fd,
                        errno,
                    })?;
                }
                // Reopened now: the worker's descriptors are still here and
                // /proc still reachable (no chroot yet).
                Source::Memfd { path, flags, pos } => {
                    let fail = |errno| FdFailure {
                        step: FdStep::Memfd,
                        fd: obj.first,
                        errno,
                    };
                    let fd =
                        nix::fcntl::open(path.as_c_str(), *flags | OFlag::O_CLOEXEC, Mode::empty())
                            .map_err(fail)?;
                    let pos = libc::off_t::try_from(*pos).map_err(|_| fail(Errno::EOVERFLOW))?;
                    nix::unistd::lseek(&fd, pos, Whence::SeekSet).map_err(fail)?;
                    obj.opened = dup_above(fd.as_raw_fd(), scratch).map_err(fail)?;
                }
                Source::Tty(tty) => {
                    if let Some(worker_fd) = tty.worker_fd() {
                        obj.opened = dup_above(worker_fd, scratch).map_err(|errno| FdFailure {
                            step: FdStep::Relocate,
                            fd: worker_fd,
                            errno,
                        })?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// In the root task: opens every file object above `scratch` (after
    /// [`FdPlan::relocate`]), creating each pipe once and queueing its data.
    pub(crate) fn open_all(&mut self, scratch: RawFd) -> Result<(), FdFailure> {
        self.unix
            .open_all(scratch)
            .map_err(|(step, fd, errno)| FdFailure { step, fd, errno })?;
        // Two rounds: pty masters first, as their slaves are reopened by
        // path; then everything else.
        let n = self.objects.len();
        for k in 0..2 * n {
            let i = k % n;
            if self.is_tty_master(i) != (k < n) {
                continue;
            }
            let first = self.objects[i].first;
            let fail = |step, errno| FdFailure {
                step,
                fd: first,
                errno,
            };
            let src = match &self.objects[i].source {
                Source::Inherit { .. } | Source::Memfd { .. } => self.objects[i].opened,
                Source::Open { path, flags, pos } => {
                    let fd = nix::fcntl::open(path.as_c_str(), *flags, Mode::empty())
                        .map_err(|e| fail(FdStep::Open, e))?;
                    if *pos != 0 {
                        let pos = libc::off_t::try_from(*pos)
                            .map_err(|_| fail(FdStep::Seek, Errno::EOVERFLOW))?;
                        match nix::unistd::lseek(&fd, pos, Whence::SeekSet) {
                            Ok(_) | Err(Errno::ESPIPE) => {}
                            Err(e) => return Err(fail(FdStep::Seek, e)),
                        }
                    }
                    let raw =
                        dup_above(fd.as_raw_fd(), scratch).map_err(|e| fail(FdStep::Dup, e))?;
                    drop(fd);
                    raw
                }
                Source::Service {
                    sock_type,
                    response,
                } => {
                    let sock = crate::files::unix_sk::rebuild_service_socket(*sock_type, response)
                        .map_err(|_| fail(FdStep::Service, Errno::EIO))?;
                    let raw =
                        dup_above(sock.as_raw_fd(), scratch).map_err(|e| fail(FdStep::Dup, e))?;
                    drop(sock);
                    raw
                }
                Source::Tty(tty) => tty
                    .open(self.objects[i].opened, scratch)
                    .map_err(|(step, e)| fail(step, e))?,
                Source::Unix { sock } => self.unix.fd(*sock),
                Source::Fifo { path, flags, data } => {
                    super::fifo::open(path, *flags, data.as_ref(), scratch)
                        .map_err(|(step, e)| fail(step, e))?
                }
                Source::Anon(anon) => {
                    let fd = anon.open().map_err(|(step, e)| fail(step, e))?;
                    dup_above(fd.as_raw_fd(), scratch).map_err(|e| fail(FdStep::Dup, e))?
                }
                Source::Pipe { pipe, write, flags } => {
                    let (pipe, write, flags) = (*pipe, *write, *flags);
                    if self.pipes[pipe][0] < 0 {
                        self.pipes[pipe] = self
                            .make_pipe(pipe, scratch)
                            .map_err(|(step, e)| fail(step, e))?;
                    }
                    let end = self.pipes[pipe][usize::from(write)];
                    set_status_flags(end, flags & PIPE_SETFL_MASK)
                        .map_err(|e| fail(FdStep::SetFl, e))?;
                    end
                }
            };
            self.objects[i].opened = src;
        }
        for obj in &self.objects {
            if let Source::Tty(tty) = &obj.source {
                tty.finish(obj.opened).map_err(|(step, errno)| FdFailure {
                    step,
                    fd: obj.first,
                    errno,
                })?;
            }
        }
        Ok(())
    }

    fn is_tty_master(&self, obj: usize) -> bool {
        matches!(&self.objects[obj].source, Source::Tty(t) if t.is_master())
    }

    /// Creates pipe `pipe` above `scratch` with its queued data.
    fn make_pipe(&self, pipe: usize, scratch: RawFd) -> Result<[RawFd; 2], (FdStep, Errno)> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| (FdStep::Pipe, e))?;
        let r2 = dup_above(r.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, e))?;
        let w2 = dup_above(w.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, e))?;
        if let Some((size, data)) = &self.pipe_data[pipe] {
            let want = (*size as usize).max(data.len());
            if want > 65536 {
                nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(want as i32))
                    .map_err(|e| (FdStep::PipeData, e))?;
            }
            write_raw(w2, data).map_err(|e| (FdStep::PipeData, e))?;
        }
        Ok([r2, w2])
    }

    /// In task `task` (tree index): puts its objects, inherited from the
    /// root, at its numbers.
    pub(crate) fn apply(&self, task: usize) -> Result<(), FdFailure> {
        for &(obj, target, cloexec) in &self.per_task[task] {
            dup_to(self.objects[obj].opened, target, cloexec).map_err(|errno| FdFailure {
                step: FdStep::Dup,
                fd: target,
                errno,
            })?;
        }
        if let Some(ctty) = &self.cttys[task] {
            ctty.apply().map_err(|(step, errno)| FdFailure {
                step,
                fd: -1,
                errno,
            })?;
        }
        Ok(())
    }
}
