//! What each new task of the tree does by itself before it stops (CRIU's
//! `restore_task_with_children`, `create_children_and_session`,
//! `restore_sid`/`restore_pgid`, `prepare_fds`, `prepare_fs` and
//! `restore_one_zombie` in `criu/cr-restore.c`).
//!
//! A task runs plain Rust code on data the engine prepared ([`TreePlan`]),
//! in a copy of the worker's memory: it joins its session and group,
//! creates its children with their pids (each of which does the same),
//! puts its descriptors in place, reports to the engine through a shared
//! pipe, then stops itself (or, for a zombie, exits with its status).
//!
//! Until the engine has restored it (and its dumped parent-death signal), a
//! task is killed with its parent (`PR_SET_PDEATHSIG`), so a failure
//! anywhere takes the rest of the new tree down with the root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::Resource;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::files::{FdFailure, FdPlan};
use crate::sys::clone3::{clone3_child, close_range, dup_above, set_default_action, write_raw};

/// Steps of the child outside the descriptor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildStep {
    Session,
    Chroot,
    Chdir,
    Rlimit,
    Pdeath,
    Name,
    OomScore,
    Close,
    Fork,
    Group,
}

impl ChildStep {
    pub(crate) const ALL: [ChildStep; 10] = [
        ChildStep::Session,
        ChildStep::Chroot,
        ChildStep::Chdir,
        ChildStep::Rlimit,
        ChildStep::Pdeath,
        ChildStep::Name,
        ChildStep::OomScore,
        ChildStep::Close,
        ChildStep::Fork,
        ChildStep::Group,
    ];

    pub(crate) fn code(self) -> u8 {
        Self::ALL.iter().position(|&s| s == self).unwrap_or(0) as u8 + 1
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ChildStep::Session => "restore its session and process group",
            ChildStep::Chroot => "change its root",
            ChildStep::Chdir => "change its working directory",
            ChildStep::Rlimit => "set a resource limit",
            ChildStep::Pdeath => "set its parent-death signal",
            ChildStep::Name => "set its name",
            ChildStep::OomScore => "set its OOM score adjustment",
            ChildStep::Close => "close foreign descriptors",
            ChildStep::Fork => "create a child",
            ChildStep::Group => "put a child in its process group",
        }
    }
}

/// How the task joins its session and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// `setsid()`: it leads its session (and its group).
    Leader,
    /// `setpgid(0, 0)`: it leads a group in the session it inherited.
    GroupLeader,
    /// Stays in the session and group it inherited (its parent may move it
    /// to another group of the session).
    Inherit,
}

/// What one task does, prepared by the engine.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub(crate) pid: i32,
    pub(crate) session: Session,
    /// Group the parent puts this task in right after creating it.
    pub(crate) pgid: Option<i32>,
    pub(crate) children: Vec<usize>,
    /// Whether it shares its parent's descriptor table (`CLONE_FILES`):
    /// the parent (or the first ancestor that does not share) sets the
    /// table up, after this task has made its own children.
    pub(crate) share_files: bool,
    /// A session leader born in another session calls `setsid` only after
    /// making its first `setsid_after` children, which stay in that one
    /// (CRIU's `born_sid`).
    pub(crate) setsid_after: usize,
    /// A session helper: makes its session and children, reports, exits.
    pub(crate) helper: bool,
    /// Whether it dies with its parent until restored (not under a session
    /// helper, which exits first).
    pub(crate) guard: bool,
    /// Whether it becomes a child subreaper first (a root whose session
    /// helpers' children must come back to it).
    pub(crate) subreaper: bool,
    /// Groups whose helpers it makes before its children (see
    /// [`super::helpers`]).
    pub(crate) group_helpers: Vec<i32>,
    /// `Some(wait status)` for a zombie.
    pub(crate) zombie: Option<u32>,
    pub(crate) root: Option<CString>,
    pub(crate) cwd: CString,
    pub(crate) umask: u32,
    pub(crate) rlimits: Vec<(Resource, u64, u64)>,
    pub(crate) comm: CString,
    pub(crate) oom_score_adj: Option<CString>,
}

/// Every task's plan and the shared descriptor plan.
#[derive(Debug)]
pub(crate) struct TreePlan {
    pub(crate) tasks: Vec<ChildPlan>,
    pub(crate) fds: FdPlan,
    /// Lowest number free for temporary descriptors (above every target and
    /// every descriptor of the worker).
    pub(crate) scratch: RawFd,
    /// Whether the root is the init of a new pid namespace.
    pub(crate) new_pidns: bool,
}

/// A failure inside a task: `(kind, step, fd, errno)`.
pub(crate) type ChildFailure = (u8, u8, RawFd, Errno);

pub(crate) const REPORT_OK: u8 = 0;
pub(crate) const REPORT_FD: u8 = 1;
pub(crate) const REPORT_STEP: u8 = 2;
/// Bytes of one report: pid, kind, step, fd, errno.
pub(crate) const REPORT_LEN: usize = 14;

fn step_failure(step: ChildStep, errno: Errno) -> ChildFailure {
    (REPORT_STEP, step.code(), -1, errno)
}

fn fd_failure(f: FdFailure) -> ChildFailure {
    (REPORT_FD, f.step.code(), f.fd, f.errno)
}

/// The whole life of task `idx` until it stops; runs right after `clone3`.
/// `report` is the write end of the engine's report pipe.
pub(crate) fn child_main(tp: &mut TreePlan, idx: usize, report: RawFd) -> u8 {
    let report = if idx == 0 {
        match dup_above(report, tp.scratch) {
            Ok(fd) => fd,
            Err(_) => return 1,
        }
    } else {
        report
    };
    let result = child_setup(tp, idx, report);
    let mut msg = [0u8; REPORT_LEN];
    msg[..4].copy_from_slice(&tp.tasks[idx].pid.to_le_bytes());
    if let Err((kind, step, fd, errno)) = result {
        msg[4] = kind;
        msg[5] = step;
        msg[6..10].copy_from_slice(&fd.to_le_bytes());
        msg[10..14].copy_from_slice(&(errno as i32).to_le_bytes());
    }
    let ok = msg[4] == REPORT_OK;
    if write_raw(report, &msg).is_err() || !ok {
        return 1;
    }
    // In a shared table the report descriptor is the parent's too.
    if !tp.tasks[idx].share_files && crate::sys::clone3::close_raw(report).is_err() {
        return 1;
    }
    if let Some(status) = tp.tasks[idx].zombie {
        return die_as(status);
    }
    if tp.tasks[idx].helper {
        return 0;
    }
    // The engine seizes us in this stop and never lets this code run on:
    // it replaces the whole address space. The init of a pid namespace
    // cannot stop itself (its namespace's signals without a handler do not
    // reach it): the engine stops it from outside.
    if idx == 0 && tp.new_pidns {
        loop {
            nix::unistd::pause();
        }
    }
    let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
    1
}

/// Ends a zombie with its dumped wait status.
fn die_as(status: u32) -> u8 {
    let sig = (status & 0x7f) as i32;
    if sig != 0 {
        let _ = nix::sys::prctl::set_dumpable(false);
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = set_default_action(sig);
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(sig);
            let _ = set.thread_unblock();
            let _ = kill(nix::unistd::getpid(), sig);
        }
        return 1;
    }
    ((status >> 8) & 0xff) as u8
}

fn child_setup(tp: &mut TreePlan, idx: usize, report: RawFd) -> Result<(), ChildFailure> {
    if tp.tasks[idx].guard {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| step_failure(ChildStep::Pdeath, e))?;
    }
    if tp.tasks[idx].subreaper {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| step_failure(ChildStep::Session, e))?;
    }
    // Children born in our first session are made before `setsid`.
    let setsid_after = tp.tasks[idx].setsid_after;
    match tp.tasks[idx].session {
        Session::Leader if setsid_after > 0 => {}
        Session::Leader => nix::unistd::setsid()
            .map(drop)
            .map_err(|e| step_failure(ChildStep::Session, e))?,
        Session::GroupLeader => nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
            .map_err(|e| step_failure(ChildStep::Session, e))?,
        Session::Inherit => {}
    }
    if let Some(pgid) = tp.tasks[idx].pgid {
        // The parent does this too, right after creating us; whoever comes
        // first wins, the other call changes nothing.
        let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(pgid));
    }
    // Zombie children must stay until their parent reaps them.
    set_default_action(Signal::SIGCHLD).map_err(|e| step_failure(ChildStep::Session, e))?;
    let scratch = tp.scratch;
    if idx == 0 {
        tp.fds.relocate(scratch).map_err(fd_failure)?;
        if let Some(root) = &tp.tasks[0].root {
            nix::unistd::chroot(root.as_c_str()).map_err(|e| step_failure(ChildStep::Chroot, e))?;
        }
        tp.fds.open_all(scratch).map_err(fd_failure)?;
    }
    let mut group_helpers = Vec::with_capacity(tp.tasks[idx].group_helpers.len());
    for k in 0..tp.tasks[idx].group_helpers.len() {
        let pgid = tp.tasks[idx].group_helpers[k];
        let helper = super::helpers::start_group_helper(pgid)
            .map_err(|e| (REPORT_STEP, ChildStep::Fork.code(), pgid, e))?;
        group_helpers.push(helper);
    }
    for k in 0..tp.tasks[idx].children.len() {
        if k == setsid_after && setsid_after > 0 {
            nix::unistd::setsid().map_err(|e| step_failure(ChildStep::Session, e))?;
        }
        let c = tp.tasks[idx].children[k];
        let (pid, pgid, share) = (tp.tasks[c].pid, tp.tasks[c].pgid, tp.tasks[c].share_files);
        // The report names the pid that could not be made in place of an fd.
        let child = clone3_child(pid, share, &mut || child_main(tp, c, report))
            .map_err(|e| (REPORT_STEP, ChildStep::Fork.code(), pid, e))?;
        if share {
            // Its own children copy the shared table when they are made:
            // it must still hold every scratch descriptor then.
            wait_settled(child).map_err(|e| step_failure(ChildStep::Fork, e))?;
        }
        if tp.tasks[c].helper {
            // A session helper exits once its children exist; they come
            // back to us (a subreaper or the namespace's init).
            super::helpers::reap(child).map_err(|e| step_failure(ChildStep::Fork, e))?;
        }
        if let Some(pgid) = pgid {
            match nix::unistd::setpgid(child, Pid::from_raw(pgid)) {
                // A zombie may be gone already; it joined by itself.
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(step_failure(ChildStep::Group, e)),
            }
        }
    }
    if setsid_after > 0 && setsid_after == tp.tasks[idx].children.len() {
        nix::unistd::setsid().map_err(|e| step_failure(ChildStep::Session, e))?;
    }
    for helper in group_helpers {
        super::helpers::end_helper(helper).map_err(|e| step_failure(ChildStep::Group, e))?;
    }
    let plan = &tp.tasks[idx];
    nix::sys::prctl::set_name(plan.comm.as_c_str())
        .map_err(|e| step_failure(ChildStep::Name, e))?;
    if plan.zombie.is_some() || plan.helper {
        return Ok(());
    }
    if !plan.share_files {
        tp.fds.apply(idx).map_err(fd_failure)?;
    }
    nix::unistd::chdir(plan.cwd.as_c_str()).map_err(|e| step_failure(ChildStep::Chdir, e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(plan.umask));
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
    if plan.share_files {
        return Ok(());
    }
    close_others(tp.fds.targets(idx), report).map_err(|e| step_failure(ChildStep::Close, e))
}

/// Waits, without reaping, until `child` has stopped itself or ended.
pub(super) fn wait_settled(child: Pid) -> nix::Result<()> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(child), flags) {
            Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
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
