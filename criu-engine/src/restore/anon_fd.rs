//! Anonymous-inode files of the restored tree: eventfd, signalfd, timerfd,
//! epoll, inotify and fanotify (CRIU's `eventfd_open`, `signalfd_open`,
//! `timerfd_open`, `eventpoll_open`/`eventpoll_post_open`,
//! `open_inotify_fd`, `open_fanotify_fd`, and `timerfd_arm` of
//! `criu/pie/restorer.c`).
//!
//! Each file is created by the root task with the other file objects
//! ([`AnonSource::open`]): an eventfd with its counter, a signalfd with its
//! mask, an inotify with its watches under their old numbers, a fanotify
//! with its marks (inode marks by path, mount marks by mount point), a
//! bare epoll and a disarmed timerfd. What needs every descriptor of a task in place
//! comes last, in the first task holding the file, through the injected
//! stub ([`finish`]): the targets of an epoll (registered by descriptor
//! number) and the arming of a timerfd with its remaining time and ticks,
//! as CRIU's restorer does right before the task resumes.
//!
//! # References
//!
//! - [timerfd_create(2)](https://man7.org/linux/man-pages/man2/timerfd_create.2.html)
//!   (`TFD_IOC_SET_TICKS`),
//!   [epoll_ctl(2)](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html),
//!   [inotify(7)](https://man7.org/linux/man-pages/man7/inotify.7.html),
//!   [fanotify_mark(2)](https://man7.org/linux/man-pages/man2/fanotify_mark.2.html)

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use criu_proto::images::{FdTypes, FileEntry, TimerfdEntry};
use nix::errno::Errno;

use super::files::FdStep;
use super::images::TaskImages;
use super::mm::{MmError, Remote};
use crate::sys::anon_fd;
use crate::sys::clone3::{set_status_flags, write_raw};

/// `TFD_IOC_SET_TICKS` (`_IOW('T', 0, u64)`).
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
/// `TFD_TIMER_ABSTIME`.
const TFD_TIMER_ABSTIME: u32 = 1;
/// `EPOLL_CTL_ADD`.
const EPOLL_CTL_ADD: u64 = 1;
/// Mask bits of an inotify watch that `inotify_add_watch` takes back:
/// the events, `IN_EXCL_UNLINK` and `IN_ONESHOT`.
const INOTIFY_KEEP: u32 = libc::IN_ALL_EVENTS | 0x0400_0000 | libc::IN_ONESHOT;
const NSEC_PER_SEC: u64 = 1_000_000_000;
/// `fanotify_init` flags set from the file's own flags.
const FAN_CLOEXEC: u32 = 0x1;
const FAN_NONBLOCK: u32 = 0x2;
/// `fanotify_mark` flags.
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_DONT_FOLLOW: u32 = 0x4;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;

/// The last steps of the anonymous files of a task failed.
#[derive(Debug, thiserror::Error)]
pub enum AnonFdError {
    /// An injected call failed.
    #[error(transparent)]
    Remote(#[from] MmError),
    /// An epoll target names no descriptor of the task.
    #[error("task {pid}: epoll fd {efd} has target fd {tfd}, which the task does not have")]
    Target {
        /// The task.
        pid: u32,
        /// The epoll descriptor.
        efd: u32,
        /// The missing target.
        tfd: u32,
    },
}

/// How the root task creates one anonymous file.
#[derive(Debug)]
pub(crate) enum AnonSource {
    Eventfd {
        counter: u64,
        semaphore: bool,
        flags: i32,
    },
    Signalfd {
        mask: u64,
        flags: i32,
    },
    Timerfd {
        clockid: i32,
        flags: i32,
    },
    Epoll {
        flags: i32,
    },
    Inotify {
        flags: i32,
        /// `(wd, path, mask)`, by ascending watch number.
        watches: Vec<(i32, CString, u32)>,
    },
    Fanotify {
        init_flags: u32,
        event_flags: u32,
        flags: i32,
        /// `(mark flags, mask, ignored mask, path)`.
        marks: Vec<(u32, u64, u64, CString)>,
    },
}

/// Whether `file` is a well-formed entry of anonymous kind `kind`.
pub(crate) fn has_entry(file: &FileEntry, kind: FdTypes) -> bool {
    file.r#type == kind as i32
        && match kind {
            FdTypes::Eventfd => file.efd.as_ref().is_some_and(|e| e.id == file.id),
            FdTypes::Signalfd => file.sgfd.as_ref().is_some_and(|e| e.id == file.id),
            FdTypes::Timerfd => file.tfd.as_ref().is_some_and(|e| e.id == file.id),
            FdTypes::Eventpoll => file.epfd.as_ref().is_some_and(|e| e.id == file.id),
            FdTypes::Inotify => file.ify.as_ref().is_some_and(|e| e.id == file.id),
            FdTypes::Fanotify => file.ffy.as_ref().is_some_and(|e| e.id == file.id),
            _ => false,
        }
}

fn flags_of(flags: u32) -> Result<i32, Errno> {
    i32::try_from(flags).map_err(|_| Errno::EINVAL)
}

impl AnonSource {
    /// How to create `file`, or `None` when it is not an anonymous file.
    pub(crate) fn of(file: &FileEntry) -> Option<Result<AnonSource, Errno>> {
        let kind = FdTypes::try_from(file.r#type).ok()?;
        matches!(
            kind,
            FdTypes::Eventfd
                | FdTypes::Signalfd
                | FdTypes::Timerfd
                | FdTypes::Eventpoll
                | FdTypes::Inotify
                | FdTypes::Fanotify
        )
        .then(|| Self::build(file, kind))
    }

    fn build(file: &FileEntry, kind: FdTypes) -> Result<AnonSource, Errno> {
        let missing = Errno::ENOENT;
        Ok(match kind {
            FdTypes::Eventfd => {
                let e = file.efd.as_ref().ok_or(missing)?;
                AnonSource::Eventfd {
                    counter: e.counter,
                    semaphore: e.flags & crate::files::eventfd::EFD_SEMAPHORE != 0,
                    flags: flags_of(e.flags)?,
                }
            }
            FdTypes::Signalfd => {
                let e = file.sgfd.as_ref().ok_or(missing)?;
                AnonSource::Signalfd {
                    mask: e.sigmask,
                    flags: flags_of(e.flags)?,
                }
            }
            FdTypes::Timerfd => {
                let e = file.tfd.as_ref().ok_or(missing)?;
                AnonSource::Timerfd {
                    clockid: i32::try_from(e.clockid).map_err(|_| Errno::EINVAL)?,
                    flags: flags_of(e.flags)?,
                }
            }
            FdTypes::Eventpoll => {
                let e = file.epfd.as_ref().ok_or(missing)?;
                AnonSource::Epoll {
                    flags: flags_of(e.flags)?,
                }
            }
            FdTypes::Inotify => {
                let e = file.ify.as_ref().ok_or(missing)?;
                let mut watches = Vec::with_capacity(e.wd.len());
                for w in &e.wd {
                    let path = w.f_handle.path.as_deref().ok_or(missing)?;
                    let wd = i32::try_from(w.wd).map_err(|_| Errno::EINVAL)?;
                    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
                    watches.push((wd, path, w.mask & INOTIFY_KEEP));
                }
                watches.sort_by_key(|w| w.0);
                AnonSource::Inotify {
                    flags: flags_of(e.flags)?,
                    watches,
                }
            }
            FdTypes::Fanotify => {
                let e = file.ffy.as_ref().ok_or(missing)?;
                let mut marks = Vec::with_capacity(e.mark.len());
                for m in &e.mark {
                    let (how, path) = match (&m.ie, &m.me) {
                        (Some(ie), _) => (FAN_MARK_DONT_FOLLOW, ie.f_handle.path.clone()),
                        (None, Some(me)) => {
                            (FAN_MARK_MOUNT, me.path.as_ref().map(|p| format!("/{p}")))
                        }
                        (None, None) => return Err(missing),
                    };
                    let path = CString::new(path.ok_or(missing)?).map_err(|_| Errno::EINVAL)?;
                    let flags = FAN_MARK_ADD | how | m.mflags;
                    marks.push((flags, m.mask.into(), m.ignored_mask.into(), path));
                }
                let mut init_flags = e.faflags | FAN_CLOEXEC;
                if e.flags & libc::O_NONBLOCK as u32 != 0 {
                    init_flags |= FAN_NONBLOCK;
                }
                AnonSource::Fanotify {
                    init_flags,
                    event_flags: e.evflags,
                    flags: flags_of(e.flags)?,
                    marks,
                }
            }
            _ => return Err(Errno::EINVAL),
        })
    }

    /// In the root task: creates the file (close-on-exec, at the lowest
    /// free number). Plain syscalls only.
    pub(crate) fn open(&self) -> Result<OwnedFd, (FdStep, Errno)> {
        let cloexec = libc::O_CLOEXEC;
        let (fd, flags, step) = match self {
            AnonSource::Eventfd {
                counter,
                semaphore,
                flags,
            } => {
                let sem = if *semaphore { libc::EFD_SEMAPHORE } else { 0 };
                let fd = anon_fd::eventfd(cloexec | sem).map_err(|e| (FdStep::Eventfd, e))?;
                if *counter != 0 {
                    write_raw(fd.as_raw_fd(), &counter.to_ne_bytes())
                        .map_err(|e| (FdStep::Eventfd, e))?;
                }
                (fd, *flags, FdStep::Eventfd)
            }
            AnonSource::Signalfd { mask, flags } => (
                anon_fd::signalfd(*mask, cloexec).map_err(|e| (FdStep::Signalfd, e))?,
                *flags,
                FdStep::Signalfd,
            ),
            AnonSource::Timerfd { clockid, flags } => (
                anon_fd::timerfd(*clockid, cloexec).map_err(|e| (FdStep::Timerfd, e))?,
                *flags,
                FdStep::Timerfd,
            ),
            AnonSource::Epoll { flags } => (
                anon_fd::epoll(cloexec).map_err(|e| (FdStep::Epoll, e))?,
                *flags,
                FdStep::Epoll,
            ),
            AnonSource::Inotify { flags, watches } => {
                let fd = anon_fd::inotify(cloexec).map_err(|e| (FdStep::Inotify, e))?;
                for (wd, path, mask) in watches {
                    let raw = fd.as_raw_fd();
                    let fail = |e| (FdStep::InotifyWatch, e);
                    anon_fd::inotify_next_wd(raw, *wd).map_err(fail)?;
                    let got = anon_fd::inotify_watch(raw, path, mask | libc::IN_DONT_FOLLOW)
                        .map_err(fail)?;
                    if got != *wd {
                        return Err(fail(Errno::EEXIST));
                    }
                }
                (fd, *flags, FdStep::Inotify)
            }
            AnonSource::Fanotify {
                init_flags,
                event_flags,
                flags,
                marks,
            } => {
                let fd = anon_fd::fanotify(*init_flags, *event_flags)
                    .map_err(|e| (FdStep::Fanotify, e))?;
                for (how, mask, ignored, path) in marks {
                    let raw = fd.as_raw_fd();
                    let fail = |e| (FdStep::FanotifyMark, e);
                    if *mask != 0 {
                        anon_fd::fanotify_mark(raw, *how, *mask, path).map_err(fail)?;
                    }
                    if *ignored != 0 {
                        anon_fd::fanotify_mark(raw, *how | FAN_MARK_IGNORED_MASK, *ignored, path)
                            .map_err(fail)?;
                    }
                }
                (fd, *flags, FdStep::Fanotify)
            }
        };
        set_status_flags(fd.as_raw_fd(), flags & libc::O_NONBLOCK).map_err(|e| (step, e))?;
        Ok(fd)
    }
}

/// In the seized task `r` (with images `task`): registers the targets of
/// its epolls and arms its timerfds, for every such file no earlier task
/// handled (`done` holds their ids).
pub(crate) fn finish(
    r: &Remote<'_, '_>,
    task: &TaskImages,
    done: &mut HashSet<u32>,
) -> Result<(), AnonFdError> {
    for fd in &task.fds {
        let Some(file) = task.files.get(&fd.id) else {
            continue;
        };
        if let Some(ep) = file.epfd.as_ref().filter(|_| done.insert(fd.id)) {
            for t in &ep.tfd {
                if !task.fds.iter().any(|f| f.fd == t.tfd) {
                    return Err(AnonFdError::Target {
                        pid: task.pid(),
                        efd: fd.fd,
                        tfd: t.tfd,
                    });
                }
                let mut ev = [0u8; 12];
                ev[..4].copy_from_slice(&t.events.to_ne_bytes());
                ev[4..].copy_from_slice(&t.data.to_ne_bytes());
                let addr = r.scratch("copy an epoll event", 0, &ev)?;
                r.call(
                    "register an epoll target",
                    u64::from(t.tfd),
                    libc::SYS_epoll_ctl,
                    &[fd.fd.into(), EPOLL_CTL_ADD, t.tfd.into(), addr],
                )?;
            }
        }
        if let Some(t) = file.tfd.as_ref().filter(|_| done.insert(fd.id)) {
            arm_timer(r, fd.fd, t)?;
        }
    }
    Ok(())
}

/// Arms timerfd `fd` with its remaining time (made absolute again for a
/// `TFD_TIMER_ABSTIME` timer) and puts its ticks back.
fn arm_timer(r: &Remote<'_, '_>, fd: u32, t: &TimerfdEntry) -> Result<(), AnonFdError> {
    let (mut vsec, mut vnsec) = (t.vsec, t.vnsec);
    if t.settime_flags & TFD_TIMER_ABSTIME != 0 {
        let addr = r.scratch("prepare a clock read", 0, &[0u8; 16])?;
        r.call(
            "read the clock of a timerfd",
            u64::from(t.clockid),
            libc::SYS_clock_gettime,
            &[t.clockid.into(), addr],
        )?;
        let mut now = [0u8; 16];
        r.inj
            .read_scratch(0, &mut now)
            .map_err(|source| MmError::Inject {
                pid: r.pid,
                step: "read the clock of a timerfd",
                source,
            })?;
        let sec = u64::from_ne_bytes(now[..8].try_into().expect("8 bytes"));
        let nsec = u64::from_ne_bytes(now[8..].try_into().expect("8 bytes"));
        vnsec += nsec;
        vsec += sec + vnsec / NSEC_PER_SEC;
        vnsec %= NSEC_PER_SEC;
    }
    let spec: Vec<u8> = [t.isec, t.insec, vsec, vnsec]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let addr = r.scratch("copy a timerfd setting", 0, &spec)?;
    r.call(
        "arm a timerfd",
        u64::from(fd),
        libc::SYS_timerfd_settime,
        &[fd.into(), t.settime_flags.into(), addr, 0],
    )?;
    if t.ticks != 0 {
        let addr = r.scratch("copy timerfd ticks", 0, &t.ticks.to_ne_bytes())?;
        r.call(
            "set the ticks of a timerfd",
            u64::from(fd),
            libc::SYS_ioctl,
            &[fd.into(), TFD_IOC_SET_TICKS, addr],
        )?;
    }
    Ok(())
}
