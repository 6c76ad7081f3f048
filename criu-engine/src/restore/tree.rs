//! Creating the restored process with its dumped pid and letting it set up
//! what needs no special memory layout (CRIU's `fork_with_pid`,
//! `restore_task_with_children`, `prepare_fds`, `prepare_fs` and
//! `restore_sid`/`restore_pgid` in `criu/cr-restore.c`).
//!
//! The engine forks without exec, so it must be single-threaded. The child
//! runs plain Rust code that only makes syscalls on data the engine prepared
//! ([`ChildPlan`]), reports failures through a pipe, then stops itself with
//! `SIGSTOP` for the engine to seize.
//!
//! # References
//!
//! - [clone3(2)](https://man7.org/linux/man-pages/man2/clone.2.html),
//!   [setsid(2)](https://man7.org/linux/man-pages/man2/setsid.2.html),
//!   [setrlimit(2)](https://man7.org/linux/man-pages/man2/setrlimit.2.html),
//!   [PR_SET_NAME](https://man7.org/linux/man-pages/man2/PR_SET_NAME.2const.html)

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::Resource;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::files::{FdFailure, FdPlan, FdStep};
use super::images::TaskImages;
use crate::sys::clone3::{clone3_with_pid, close_range, dup_above, write_raw};

/// Resource numbers in `tc.rlimits` order (`RLIMIT_CPU` = 0 ... `RLIMIT_RTTIME` = 15).
const RESOURCES: [Resource; 16] = [
    Resource::RLIMIT_CPU,
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_DATA,
    Resource::RLIMIT_STACK,
    Resource::RLIMIT_CORE,
    Resource::RLIMIT_RSS,
    Resource::RLIMIT_NPROC,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_MEMLOCK,
    Resource::RLIMIT_AS,
    Resource::RLIMIT_LOCKS,
    Resource::RLIMIT_SIGPENDING,
    Resource::RLIMIT_MSGQUEUE,
    Resource::RLIMIT_NICE,
    Resource::RLIMIT_RTPRIO,
    Resource::RLIMIT_RTTIME,
];

/// Errors of creating the task.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The worker has more than one thread and must not fork without exec.
    #[error("the restoring process has {threads} threads; restore needs a single-threaded worker")]
    MultiThreaded {
        /// Threads counted in `/proc/self/status`.
        threads: u32,
    },
    /// `/proc/self` cannot be read.
    #[error("cannot inspect the restoring process")]
    SelfInspect {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pid of the image is used by another process.
    #[error("pid {pid} is already taken")]
    PidTaken {
        /// The pid.
        pid: i32,
    },
    /// `clone3` failed otherwise.
    #[error("cannot create task {pid}")]
    Clone {
        /// The pid asked for.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A path or name of the images holds a NUL byte.
    #[error("task {pid}: {what} holds a NUL byte")]
    BadString {
        /// Task.
        pid: i32,
        /// Which string.
        what: &'static str,
    },
    /// The descriptor plan cannot be built.
    #[error("task {pid}: cannot plan its descriptors")]
    FdPlan {
        /// Task.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The report pipe cannot be created or read.
    #[error("task {pid}: cannot talk to the new task")]
    Report {
        /// Task.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The new task failed one of its set-up steps.
    #[error("task {pid} failed to {step} (fd {fd})")]
    ChildStep {
        /// Task.
        pid: i32,
        /// What it was doing.
        step: &'static str,
        /// Descriptor involved, -1 if none.
        fd: RawFd,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The new task died before reporting.
    #[error("task {pid} died while setting itself up")]
    ChildDied {
        /// Task.
        pid: i32,
    },
}

/// Steps of the child outside the descriptor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildStep {
    Session,
    Chroot,
    Chdir,
    Rlimit,
    Pdeath,
    Name,
    OomScore,
    Close,
}

impl ChildStep {
    const ALL: [ChildStep; 8] = [
        ChildStep::Session,
        ChildStep::Chroot,
        ChildStep::Chdir,
        ChildStep::Rlimit,
        ChildStep::Pdeath,
        ChildStep::Name,
        ChildStep::OomScore,
        ChildStep::Close,
    ];

    fn code(self) -> u8 {
        match self {
            ChildStep::Session => 1,
            ChildStep::Chroot => 2,
            ChildStep::Chdir => 3,
            ChildStep::Rlimit => 4,
            ChildStep::Pdeath => 5,
            ChildStep::Name => 6,
            ChildStep::OomScore => 7,
            ChildStep::Close => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ChildStep::Session => "restore its session and process group",
            ChildStep::Chroot => "change its root",
            ChildStep::Chdir => "change its working directory",
            ChildStep::Rlimit => "set a resource limit",
            ChildStep::Pdeath => "set its parent-death signal",
            ChildStep::Name => "set its name",
            ChildStep::OomScore => "set its OOM score adjustment",
            ChildStep::Close => "close foreign descriptors",
        }
    }
}

/// How the task joins its session and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// `setsid()`: it leads its session (and its group).
    Leader,
    /// `setpgid(0, 0)`: it leads a group in the worker's session (shell job).
    GroupLeader,
    /// Stays in the worker's session and group (shell job).
    Inherit,
}

/// What the child does, prepared by the engine.
#[derive(Debug)]
struct ChildPlan {
    session: Session,
    root: Option<CString>,
    cwd: CString,
    umask: u32,
    rlimits: Vec<(Resource, u64, u64)>,
    /// `SIGKILL` on the worker's death until the restore commits (the dumped
    /// parent-death signal is set at the very end, by injection); `None`
    /// for a sibling, whose parent is the client.
    guard: Option<Signal>,
    /// The worker's pid: the child checks that its parent is still alive
    /// once the guard is set.
    worker: Pid,
    comm: CString,
    oom_score_adj: Option<CString>,
    fds: FdPlan,
    /// Lowest number free for temporary descriptors (above every target and
    /// every descriptor of the worker).
    scratch: RawFd,
}

/// The restored task until the restore is complete: dropping it kills the
/// task (and reaps it when it is our child).
#[derive(Debug)]
pub(crate) struct RestoredTree {
    pid: Pid,
    our_child: bool,
    committed: bool,
}

impl RestoredTree {
    /// Host pid of the restored root.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Keeps the task alive: the restore succeeded.
    pub(crate) fn commit(mut self) -> Pid {
        self.committed = true;
        self.pid
    }
}

impl Drop for RestoredTree {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match kill(self.pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                tracing::error!(pid = %self.pid, %errno, "cannot kill a half-restored task")
            }
        }
        if self.our_child {
            loop {
                match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                    Err(Errno::EINTR) => continue,
                    Ok(nix::sys::wait::WaitStatus::Stopped(..))
                    | Ok(nix::sys::wait::WaitStatus::PtraceEvent(..))
                    | Ok(nix::sys::wait::WaitStatus::PtraceSyscall(..))
                    | Ok(nix::sys::wait::WaitStatus::Continued(..)) => continue,
                    _ => break,
                }
            }
        }
    }
}

/// Fails unless the calling process has exactly one thread.
pub(crate) fn check_single_threaded() -> Result<(), TreeError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| TreeError::SelfInspect { source })?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| TreeError::SelfInspect {
            source: std::io::Error::other("no Threads line in /proc/self/status"),
        })?;
    if threads != 1 {
        return Err(TreeError::MultiThreaded { threads });
    }
    Ok(())
}

/// Highest descriptor number open in the worker.
fn max_open_fd() -> Result<RawFd, TreeError> {
    let mut max = 2;
    for entry in
        std::fs::read_dir("/proc/self/fd").map_err(|source| TreeError::SelfInspect { source })?
    {
        let entry = entry.map_err(|source| TreeError::SelfInspect { source })?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            max = max.max(n);
        }
    }
    Ok(max)
}

fn cstring(pid: i32, what: &'static str, s: &str) -> Result<CString, TreeError> {
    CString::new(s).map_err(|_| TreeError::BadString { pid, what })
}

fn plan(
    task: &TaskImages,
    fds: FdPlan,
    shell_job: bool,
    sibling: bool,
) -> Result<ChildPlan, TreeError> {
    let pid = i32::try_from(task.pid()).unwrap_or(i32::MAX);
    let p = &task.pstree;
    let session = if p.sid == p.pid {
        Session::Leader
    } else if !shell_job {
        return Err(TreeError::ChildStep {
            pid,
            step: ChildStep::Session.name(),
            fd: -1,
            source: Errno::EINVAL,
        });
    } else if p.pgid == p.pid {
        Session::GroupLeader
    } else {
        Session::Inherit
    };
    let name = |id: u32| task.reg(id).map(|r| r.name.as_str()).unwrap_or("/");
    let root = name(task.fs.root_id);
    let rlimits = task
        .tc
        .rlimits
        .as_ref()
        .map(|r| {
            r.rlimits
                .iter()
                .zip(RESOURCES)
                .map(|(l, res)| (res, l.cur, l.max))
                .collect()
        })
        .unwrap_or_default();
    let pdeath = dumped_pdeath(task)?;
    let guard = if sibling {
        pdeath
    } else {
        Some(Signal::SIGKILL)
    };
    let scratch = max_open_fd()?.max(fds.max_target()) + 1;
    Ok(ChildPlan {
        session,
        root: (root != "/")
            .then(|| cstring(pid, "root", root))
            .transpose()?,
        cwd: cstring(pid, "cwd", name(task.fs.cwd_id))?,
        umask: task.fs.umask.unwrap_or(0o022),
        rlimits,
        guard,
        worker: nix::unistd::getpid(),
        comm: cstring(pid, "comm", &task.tc.comm)?,
        oom_score_adj: task
            .tc
            .oom_score_adj
            .filter(|&v| v != 0)
            .map(|v| cstring(pid, "oom_score_adj", &v.to_string()))
            .transpose()?,
        fds,
        scratch,
    })
}

/// The parent-death signal of the images (0 or absent: none).
pub(crate) fn dumped_pdeath(task: &TaskImages) -> Result<Option<Signal>, TreeError> {
    let pid = i32::try_from(task.pid()).unwrap_or(i32::MAX);
    task.thread_core
        .pdeath_sig
        .filter(|&s| s != 0)
        .map(|s| Signal::try_from(i32::try_from(s).unwrap_or(-1)))
        .transpose()
        .map_err(|source| TreeError::ChildStep {
            pid,
            step: ChildStep::Pdeath.name(),
            fd: -1,
            source,
        })
}

/// A failure inside the child: `(kind, step, fd, errno)`.
type ChildFailure = (u8, u8, RawFd, Errno);

const REPORT_OK: u8 = 0;
const REPORT_FD: u8 = 1;
const REPORT_STEP: u8 = 2;

fn step_failure(step: ChildStep, errno: Errno) -> ChildFailure {
    (REPORT_STEP, step.code(), -1, errno)
}

fn fd_failure(f: FdFailure) -> ChildFailure {
    (REPORT_FD, f.step.code(), f.fd, f.errno)
}

/// The child's whole life until it stops: runs right after `clone3`.
fn child_main(plan: &mut ChildPlan, report: RawFd) -> u8 {
    let report = match dup_above(report, plan.scratch) {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    let result = child_setup(plan, report);
    let msg = match result {
        Ok(()) => [REPORT_OK; 10],
        Err((kind, step, fd, errno)) => {
            let mut m = [0u8; 10];
            m[0] = kind;
            m[1] = step;
            m[2..6].copy_from_slice(&fd.to_le_bytes());
            m[6..10].copy_from_slice(&(errno as i32).to_le_bytes());
            m
        }
    };
    let ok = msg[0] == REPORT_OK;
    if write_raw(report, &msg).is_err() || !ok {
        return 1;
    }
    if crate::sys::clone3::close_raw(report).is_err() {
        return 1;
    }
    // The engine seizes us in this stop and never lets this code run on:
    // it replaces the whole address space.
    let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
    1
}

fn child_setup(plan: &mut ChildPlan, report: RawFd) -> Result<(), ChildFailure> {
    match plan.session {
        Session::Leader => nix::unistd::setsid()
            .map(drop)
            .map_err(|e| step_failure(ChildStep::Session, e))?,
        Session::GroupLeader => nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
            .map_err(|e| step_failure(ChildStep::Session, e))?,
        Session::Inherit => {}
    }
    plan.fds.relocate(plan.scratch).map_err(fd_failure)?;
    if let Some(root) = &plan.root {
        nix::unistd::chroot(root.as_c_str()).map_err(|e| step_failure(ChildStep::Chroot, e))?;
    }
    plan.fds.apply(plan.scratch).map_err(fd_failure)?;
    nix::unistd::chdir(plan.cwd.as_c_str()).map_err(|e| step_failure(ChildStep::Chdir, e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(plan.umask));
    nix::sys::prctl::set_name(plan.comm.as_c_str())
        .map_err(|e| step_failure(ChildStep::Name, e))?;
    if let Some(sig) = plan.guard {
        nix::sys::prctl::set_pdeathsig(sig).map_err(|e| step_failure(ChildStep::Pdeath, e))?;
        // A worker that died before the guard was set sends nothing.
        if sig == Signal::SIGKILL && nix::unistd::getppid() != plan.worker {
            return Err(step_failure(ChildStep::Pdeath, Errno::ESRCH));
        }
    }
    if let Some(adj) = &plan.oom_score_adj {
        let fd = nix::fcntl::open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| step_failure(ChildStep::OomScore, e))?;
        write_raw(fd.as_raw_fd(), adj.as_bytes())
            .map_err(|e| step_failure(ChildStep::OomScore, e))?;
    }
    for &(res, cur, max) in &plan.rlimits {
        match nix::sys::resource::setrlimit(res, cur, max) {
            Ok(()) => {}
            // Raising a hard limit needs CAP_SYS_RESOURCE: keep the current
            // hard limit and as much of the soft one as it allows.
            Err(Errno::EPERM) => {
                let (_, hard) = nix::sys::resource::getrlimit(res)
                    .map_err(|e| step_failure(ChildStep::Rlimit, e))?;
                nix::sys::resource::setrlimit(res, cur.min(hard), hard)
                    .map_err(|e| step_failure(ChildStep::Rlimit, e))?;
            }
            Err(e) => return Err(step_failure(ChildStep::Rlimit, e)),
        }
    }
    close_others(plan.fds.targets(), report).map_err(|e| step_failure(ChildStep::Close, e))
}

/// Closes every descriptor but the targets and `keep` (which is above them).
fn close_others(targets: &[RawFd], keep: RawFd) -> nix::Result<()> {
    let mut next: u32 = 0;
    for &fd in targets.iter().chain(std::iter::once(&keep)) {
        let fd = u32::try_from(fd).map_err(|_| Errno::EBADF)?;
        if fd > next {
            close_range(next, fd - 1)?;
        }
        next = fd + 1;
    }
    close_range(next, u32::MAX)
}

/// Creates the task of `task` with its pid and waits until it has set up its
/// descriptors, directories and limits and stopped itself.
pub(crate) fn create(
    task: &TaskImages,
    fds: FdPlan,
    shell_job: bool,
    sibling: bool,
) -> Result<RestoredTree, TreeError> {
    let pid = i32::try_from(task.pid()).unwrap_or(i32::MAX);
    let mut plan = plan(task, fds, shell_job, sibling)?;
    let (rd, wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| TreeError::Report { pid, source })?;
    let wr_raw = wr.as_raw_fd();
    let child =
        clone3_with_pid(pid, sibling, &mut || child_main(&mut plan, wr_raw)).map_err(|source| {
            match source {
                Errno::EEXIST => TreeError::PidTaken { pid },
                source => TreeError::Clone { pid, source },
            }
        })?;
    let tree = RestoredTree {
        pid: child,
        our_child: !sibling,
        committed: false,
    };
    drop(wr);
    let mut msg = [0u8; 10];
    let mut got = 0;
    while got < msg.len() {
        match nix::unistd::read(&rd, &mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(source) => return Err(TreeError::Report { pid, source }),
        }
    }
    if got < msg.len() {
        return Err(TreeError::ChildDied { pid });
    }
    if msg[0] == REPORT_OK {
        return Ok(tree);
    }
    let fd = RawFd::from_le_bytes([msg[2], msg[3], msg[4], msg[5]]);
    let errno = Errno::from_raw(i32::from_le_bytes([msg[6], msg[7], msg[8], msg[9]]));
    let step = if msg[0] == REPORT_FD {
        FdStep::from_code(msg[1]).map_or("set up a descriptor", FdStep::name)
    } else {
        ChildStep::ALL
            .iter()
            .find(|s| s.code() == msg[1])
            .map_or("set itself up", |s| s.name())
    };
    Err(TreeError::ChildStep {
        pid,
        step,
        fd,
        source: errno,
    })
}
