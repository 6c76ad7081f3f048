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

use super::images::TaskImages;
use crate::config::InheritFd;
use crate::sys::clone3::{dup_above, dup_to, set_status_flags};

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
}

/// One file object and the descriptor numbers that refer to it.
#[derive(Debug)]
struct Object {
    source: Source,
    /// `(fd, close-on-exec)`.
    targets: Vec<(RawFd, bool)>,
    /// Inherited descriptor moved out of the way (child scratch).
    moved: RawFd,
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
    /// Rebuilding the client's RPC socket.
    Service,
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
            FdStep::Service => 7,
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
            7 => FdStep::Service,
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
            FdStep::Service => "rebuild the CRIU-RPC socket",
        }
    }
}

/// Every descriptor of the task, grouped by file object.
#[derive(Debug)]
pub(crate) struct FdPlan {
    objects: Vec<Object>,
    /// `[read, write]` ends of each pipe (child scratch, -1 until created).
    pipes: Vec<[RawFd; 2]>,
    /// Every target number, ascending.
    targets: Vec<RawFd>,
}

/// Whether `inherit_fd` key `key` names `file` (`pipe:[ID]` for pipes, the
/// path with or without its leading `/` for files).
pub(crate) fn inherit_matches(key: &str, file: &FileEntry) -> bool {
    if let Some(reg) = &file.reg {
        return key == reg.name || key == reg.name.trim_start_matches('/');
    }
    if let Some(pipe) = &file.pipe {
        return key == format!("pipe:[{}]", pipe.pipe_id);
    }
    false
}

impl FdPlan {
    /// Plans the descriptors of `task`, replacing files named by `inherit`.
    pub(crate) fn new(task: &TaskImages, inherit: &[InheritFd]) -> Result<FdPlan, Errno> {
        let mut objects: Vec<Object> = Vec::new();
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        let mut pipes: HashMap<u32, usize> = HashMap::new();
        let mut targets = Vec::new();
        for fd in &task.fds {
            let target = RawFd::try_from(fd.fd).map_err(|_| Errno::EBADF)?;
            let cloexec = fd.flags & 1 != 0;
            targets.push(target);
            if let Some(&idx) = by_id.get(&fd.id) {
                objects[idx].targets.push((target, cloexec));
                continue;
            }
            let file = task.files.get(&fd.id).ok_or(Errno::ENOENT)?;
            let source = if let Some(inh) = inherit.iter().find(|i| inherit_matches(&i.key, file)) {
                Source::Inherit { worker_fd: inh.fd }
            } else if crate::files::unix_sk::is_service_socket(file) {
                let usk = file.usk.as_ref().ok_or(Errno::ENOENT)?;
                Source::Service {
                    sock_type: usk.r#type,
                    response: crate::files::unix_sk::restored_response(),
                }
            } else if fd.r#type == FdTypes::Pipe as i32 {
                let pipe = file.pipe.as_ref().ok_or(Errno::ENOENT)?;
                let next = pipes.len();
                let idx = *pipes.entry(pipe.pipe_id).or_insert(next);
                let flags = i32::try_from(pipe.flags).map_err(|_| Errno::EINVAL)?;
                Source::Pipe {
                    pipe: idx,
                    write: flags & libc::O_ACCMODE == libc::O_WRONLY,
                    flags,
                }
            } else {
                let reg = file.reg.as_ref().ok_or(Errno::ENOENT)?;
                let flags = i32::try_from(reg.flags).map_err(|_| Errno::EINVAL)? & !REOPEN_MASK;
                Source::Open {
                    path: CString::new(reg.name.as_str()).map_err(|_| Errno::EINVAL)?,
                    flags: OFlag::from_bits_retain(flags),
                    pos: reg.pos,
                }
            };
            by_id.insert(fd.id, objects.len());
            objects.push(Object {
                source,
                targets: vec![(target, cloexec)],
                moved: -1,
            });
        }
        targets.sort_unstable();
        Ok(FdPlan {
            objects,
            pipes: vec![[-1, -1]; pipes.len()],
            targets,
        })
    }

    /// Target numbers, ascending.
    pub(crate) fn targets(&self) -> &[RawFd] {
        &self.targets
    }

    /// Highest target number, or -1 without descriptors.
    pub(crate) fn max_target(&self) -> RawFd {
        self.targets.last().copied().unwrap_or(-1)
    }

    /// In the new task: moves inherited descriptors to `scratch` or above.
    /// Must run before [`FdPlan::apply`], and `scratch` must exceed every
    /// target number.
    pub(crate) fn relocate(&mut self, scratch: RawFd) -> Result<(), FdFailure> {
        for obj in &mut self.objects {
            if let Source::Inherit { worker_fd } = obj.source {
                obj.moved = dup_above(worker_fd, scratch).map_err(|errno| FdFailure {
                    step: FdStep::Relocate,
                    fd: worker_fd,
                    errno,
                })?;
            }
        }
        Ok(())
    }

    /// In the new task: opens every file object and puts it at its numbers.
    /// Temporary descriptors stay above `scratch` and are closed with every
    /// other non-target descriptor afterwards.
    pub(crate) fn apply(&mut self, scratch: RawFd) -> Result<(), FdFailure> {
        for i in 0..self.objects.len() {
            let first = self.objects[i].targets[0].0;
            let fail = |step, errno| FdFailure {
                step,
                fd: first,
                errno,
            };
            let src = match &self.objects[i].source {
                Source::Inherit { .. } => self.objects[i].moved,
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
                Source::Pipe { pipe, write, flags } => {
                    let (pipe, write, flags) = (*pipe, *write, *flags);
                    if self.pipes[pipe][0] < 0 {
                        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                            .map_err(|e| fail(FdStep::Pipe, e))?;
                        let r2 =
                            dup_above(r.as_raw_fd(), scratch).map_err(|e| fail(FdStep::Dup, e))?;
                        let w2 =
                            dup_above(w.as_raw_fd(), scratch).map_err(|e| fail(FdStep::Dup, e))?;
                        self.pipes[pipe] = [r2, w2];
                    }
                    let end = self.pipes[pipe][usize::from(write)];
                    set_status_flags(end, flags & PIPE_SETFL_MASK)
                        .map_err(|e| fail(FdStep::SetFl, e))?;
                    end
                }
            };
            for &(target, cloexec) in &self.objects[i].targets {
                dup_to(src, target, cloexec).map_err(|errno| FdFailure {
                    step: FdStep::Dup,
                    fd: target,
                    errno,
                })?;
            }
        }
        Ok(())
    }
}
