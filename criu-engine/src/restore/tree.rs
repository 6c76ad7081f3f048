//! Creating the restored tree with its dumped pids and letting every task
//! set up what needs no special memory layout (CRIU's `fork_with_pid` and
//! `restore_task_with_children` in `criu/cr-restore.c`): the engine plans
//! (here), the tasks carry the plan out ([`super::child`]).
//!
//! The engine forks without exec, so it must be single-threaded. It creates
//! the root, which creates its children, and so on; every task reports
//! through one pipe (a fixed-size message, atomic), then stops itself with
//! `SIGSTOP` for the engine to seize, or exits if it is a zombie.
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
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::child::{
    child_main, ChildPlan, ChildStep, Session, TreePlan, REPORT_FD, REPORT_LEN, REPORT_OK,
    REPORT_STEP,
};
use super::files::{FdPlan, FdStep};
use super::helpers;
use super::pstree::{TaskKind, TreeImages};
use crate::pstree::RealPid;
use crate::sys::clone3::clone3_in;

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
    /// A task of the images cannot be restored yet.
    #[error("task {pid}: restoring {what} is not supported yet")]
    Unsupported {
        /// Task.
        pid: i32,
        /// What.
        what: String,
    },
    /// The new task died before reporting.
    #[error("task {pid} died while setting itself up")]
    ChildDied {
        /// Task.
        pid: i32,
    },
}

/// The restored tree until the restore is complete: dropping it kills every
/// task (and reaps the root when it is our child).
#[derive(Debug)]
pub(crate) struct RestoredTree {
    pid: Pid,
    /// Every task that reported (the root included), outside a new pid
    /// namespace.
    pids: Vec<Pid>,
    /// Our pid of every task, in tree order, once all reported.
    host: Vec<RealPid>,
    our_child: bool,
    committed: bool,
}

impl RestoredTree {
    /// Host pid of the restored root.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Our pid of every task of the tree, in tree order.
    pub(crate) fn host_pids(&self) -> &[RealPid] {
        &self.host
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
        // Tasks that did not report die with their parent (pdeath signal).
        for &pid in self.pids.iter().chain(std::iter::once(&self.pid)) {
            match kill(pid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    tracing::error!(%pid, %errno, "cannot kill a half-restored task")
                }
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

fn unsupported(pid: i32, what: String) -> TreeError {
    TreeError::Unsupported { pid, what }
}

/// Whether task `i` shares its parent's descriptor table (CRIU's
/// `CLONE_FILES` from equal `files_id`s in `prepare_pstree_kobj_ids`). A
/// table shared with a task other than the parent cannot be made by
/// `clone` and is refused, as CRIU refuses to dump it.
fn shares_parent_files(tree: &TreeImages, i: usize) -> Result<bool, TreeError> {
    // Whether task `i` is alive with the files id of its live parent.
    let inherits = |i: usize| -> Option<(u32, bool)> {
        let t = &tree.tasks[i];
        let files_id = t.alive()?.files_id;
        let parent = t.parent.and_then(|p| tree.tasks[p].alive());
        Some((files_id, parent.is_some_and(|p| p.files_id == files_id)))
    };
    let Some((files_id, shared)) = inherits(i) else {
        return Ok(false);
    };
    if shared {
        return Ok(true);
    }
    // Every other task with this table must get it from its parent.
    let other = (0..tree.tasks.len())
        .filter(|&o| o != i)
        .find(|&o| inherits(o) == Some((files_id, false)));
    match other {
        Some(o) => Err(unsupported(
            tree.tasks[i].pstree.pid as i32,
            format!(
                "a descriptor table shared with task {}, which is not its parent",
                tree.tasks[o].pstree.pid
            ),
        )),
        None => Ok(false),
    }
}

/// The task that creates task `i`: its parent, or its session helper.
fn creator_of(tree: &TreeImages, births: &helpers::Births, i: usize) -> usize {
    if births.by_helper[i] {
        if let Some(h) = births.children.iter().position(|c| c.contains(&i)) {
            return h;
        }
    }
    tree.tasks[i].parent.unwrap_or(0)
}

/// Plans every task of `tree`.
fn plan(tree: &TreeImages, fds: FdPlan, shell_job: bool) -> Result<TreePlan, TreeError> {
    let mut tasks = Vec::with_capacity(tree.tasks.len());
    let root_name = tree
        .root()
        .reg(tree.root().fs.root_id)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| "/".to_owned());
    let subreaper = tree.root().tc.child_subreaper == Some(true);
    let mut births = helpers::plan_sessions(tree, subreaper || tree.new_pidns)?;
    let setsid_after = helpers::plan_born_sessions(tree, &mut births)?;
    let mut groups = helpers::GroupHelpers::default();
    for (i, t) in tree.tasks.iter().enumerate() {
        let p = &t.pstree;
        let pid = i32::try_from(p.pid).unwrap_or(i32::MAX);
        let parent = births.born_in[i];
        let session = if p.sid == p.pid {
            Session::Leader
        } else if let Some((parent_sid, _)) = parent {
            if parent_sid != p.sid {
                return Err(unsupported(
                    pid,
                    format!("a session ({}) other than its parent's", p.sid),
                ));
            }
            if p.pgid == p.pid {
                Session::GroupLeader
            } else {
                Session::Inherit
            }
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
        let pgid = match (session, parent) {
            // The parent makes the group at once, so that a sibling created
            // next can join it.
            (Session::GroupLeader, Some(_)) => Some(p.pgid as i32),
            (Session::Inherit, Some((_, parent_pgid))) if p.pgid != parent_pgid => {
                if tree.tasks.iter().all(|o| o.pstree.pid != p.pgid) {
                    // Its leader is gone: a helper makes the group first.
                    let creator = creator_of(tree, &births, i);
                    groups.add(p.pid, p.pgid, creator)?;
                } else if !tree.tasks[..i].iter().any(|o| o.pstree.pid == p.pgid) {
                    // The group must exist, led by a task created before.
                    return Err(unsupported(
                        pid,
                        format!(
                            "process group {} whose leader is not restored before it",
                            p.pgid
                        ),
                    ));
                }
                Some(p.pgid as i32)
            }
            _ => None,
        };
        let children = births.children[i].clone();
        let share_files = shares_parent_files(tree, i)?;
        let plan = match &t.kind {
            TaskKind::Zombie { exit_code, comm } => ChildPlan {
                pid,
                session,
                pgid,
                children,
                share_files,
                setsid_after: 0,
                helper: false,
                guard: !births.by_helper[i],
                subreaper: false,
                group_helpers: Vec::new(),
                zombie: Some(*exit_code),
                root: None,
                cwd: c"/".to_owned(),
                umask: 0o022,
                rlimits: Vec::new(),
                comm: cstring(pid, "comm", comm)?,
                oom_score_adj: None,
            },
            TaskKind::Alive(task) => {
                let name = |id: u32| task.reg(id).map(|r| r.name.as_str()).unwrap_or("/");
                let root = name(task.fs.root_id);
                if root != root_name {
                    return Err(unsupported(
                        pid,
                        format!("a root ({root}) other than the tree root's"),
                    ));
                }
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
                ChildPlan {
                    pid,
                    session,
                    pgid,
                    children,
                    share_files,
                    setsid_after: setsid_after[i],
                    helper: false,
                    guard: !births.by_helper[i],
                    subreaper: i == 0 && !births.sessions.is_empty() && subreaper,
                    group_helpers: Vec::new(),
                    zombie: None,
                    root: (i == 0 && root != "/")
                        .then(|| cstring(pid, "root", root))
                        .transpose()?,
                    cwd: cstring(pid, "cwd", name(task.fs.cwd_id))?,
                    umask: task.fs.umask.unwrap_or(0o022),
                    rlimits,
                    comm: cstring(pid, "comm", &task.tc.comm)?,
                    oom_score_adj: task
                        .tc
                        .oom_score_adj
                        .filter(|&v| v != 0)
                        .map(|v| cstring(pid, "oom_score_adj", &v.to_string()))
                        .transpose()?,
                }
            }
        };
        tasks.push(plan);
    }
    for (k, &sid) in births.sessions.iter().enumerate() {
        tasks.push(ChildPlan {
            pid: sid,
            session: if sid == 0 {
                Session::Inherit
            } else {
                Session::Leader
            },
            pgid: None,
            children: births.children[tree.tasks.len() + k].clone(),
            share_files: false,
            setsid_after: 0,
            helper: true,
            guard: true,
            subreaper: false,
            group_helpers: Vec::new(),
            zombie: None,
            root: None,
            cwd: c"/".to_owned(),
            umask: 0o022,
            rlimits: Vec::new(),
            comm: c"criu-helper".to_owned(),
            oom_score_adj: None,
        });
    }
    for (i, t) in tasks.iter_mut().enumerate() {
        t.group_helpers = groups.made_by(i);
    }
    let scratch = max_open_fd()?.max(fds.max_target()) + 1;
    Ok(TreePlan {
        tasks,
        fds,
        scratch,
        new_pidns: tree.new_pidns,
    })
}

/// Creates every task of `tree` with its pid and waits until each has set
/// itself up and stopped (or, for zombies, exited).
pub(crate) fn create(
    tree: &TreeImages,
    fds: FdPlan,
    shell_job: bool,
    sibling: bool,
) -> Result<RestoredTree, TreeError> {
    let root_pid = i32::try_from(tree.root().pid()).unwrap_or(i32::MAX);
    let mut tp = plan(tree, fds, shell_job)?;
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| TreeError::Report {
        pid: root_pid,
        source,
    })?;
    let wr_raw = wr.as_raw_fd();
    let new_pidns = tree.new_pidns;
    // Session helpers report, then exit: their pids are not the tree's.
    let helper_pids: Vec<i32> = tp
        .tasks
        .iter()
        .filter(|t| t.helper)
        .map(|t| t.pid)
        .collect();
    let child = clone3_in(root_pid, sibling, new_pidns, &mut || {
        child_main(&mut tp, 0, wr_raw)
    })
    .map_err(|source| match source {
        Errno::EEXIST => TreeError::PidTaken { pid: root_pid },
        source => TreeError::Clone {
            pid: root_pid,
            source,
        },
    })?;
    let mut tree_guard = RestoredTree {
        pid: child,
        pids: Vec::new(),
        host: Vec::new(),
        our_child: !sibling,
        committed: false,
    };
    drop(wr);
    let total = tp.tasks.len();
    let mut reported = 0;
    while reported < total {
        let mut msg = [0u8; REPORT_LEN];
        let mut got = 0;
        while got < msg.len() {
            match nix::unistd::read(&rd, &mut msg[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => {}
                Err(source) => {
                    return Err(TreeError::Report {
                        pid: root_pid,
                        source,
                    })
                }
            }
        }
        if got < msg.len() {
            let missing = tp
                .tasks
                .iter()
                .find(|t| !tree_guard.pids.contains(&Pid::from_raw(t.pid)))
                .map_or(root_pid, |t| t.pid);
            return Err(TreeError::ChildDied { pid: missing });
        }
        let pid = i32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        if msg[4] != REPORT_OK {
            return Err(failure(pid, &msg));
        }
        reported += 1;
        // Inside a new pid namespace the reported pids are not ours; the
        // root's death ends the whole namespace anyway.
        if !new_pidns && !helper_pids.contains(&pid) {
            tree_guard.pids.push(Pid::from_raw(pid));
        }
    }
    tree_guard.host = host_pids(tree, child)?;
    if new_pidns {
        kill(child, Signal::SIGSTOP).map_err(|source| TreeError::Report {
            pid: root_pid,
            source,
        })?;
    }
    Ok(tree_guard)
}

/// The pid in `/proc/<host>/status` `NSpid:` as the task itself sees it.
fn inner_pid(host: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .next_back()?
        .parse()
        .ok()
}

/// Whether process `host` lives in the pid namespace our `/proc` shows
/// (its `NSpid:` has one entry): then the ids it sees are ours.
pub(crate) fn in_our_pidns(host: RealPid) -> bool {
    std::fs::read_to_string(format!("/proc/{host}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| l.split_whitespace().count() == 1)
        })
        .unwrap_or(false)
}

/// Finds, among the threads of process `host`, the one whose own tid is
/// `inner`.
pub(crate) fn host_tid(host: RealPid, inner: u32) -> Option<RealPid> {
    std::fs::read_dir(format!("/proc/{host}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| inner_pid(t) == Some(inner))
        .map(RealPid)
}

/// Our pid of every task of `tree` (tree order), the root being `root`.
fn host_pids(tree: &TreeImages, root: Pid) -> Result<Vec<RealPid>, TreeError> {
    if !tree.new_pidns {
        return Ok(tree
            .tasks
            .iter()
            .map(|t| RealPid(t.pstree.pid as i32))
            .collect());
    }
    let mut host = vec![RealPid(root.as_raw())];
    for t in &tree.tasks[1..] {
        let parent = host[t.parent.expect("only the root has none")];
        let children = crate::seize::list_children(parent).unwrap_or_default();
        let found = children
            .into_iter()
            .find(|&c| inner_pid(c.0) == Some(t.pstree.pid))
            .ok_or(TreeError::ChildDied {
                pid: t.pstree.pid as i32,
            })?;
        host.push(found);
    }
    Ok(host)
}

/// Turns a failure report into an error.
fn failure(pid: i32, msg: &[u8; REPORT_LEN]) -> TreeError {
    let fd = RawFd::from_le_bytes([msg[6], msg[7], msg[8], msg[9]]);
    let errno = Errno::from_raw(i32::from_le_bytes([msg[10], msg[11], msg[12], msg[13]]));
    if msg[4] == REPORT_STEP && msg[5] == ChildStep::Fork.code() {
        return match errno {
            Errno::EEXIST => TreeError::PidTaken { pid: fd },
            source => TreeError::Clone { pid: fd, source },
        };
    }
    let step = if msg[4] == REPORT_FD {
        FdStep::from_code(msg[5]).map_or("set up a descriptor", FdStep::name)
    } else {
        ChildStep::ALL
            .iter()
            .find(|s| s.code() == msg[5])
            .map_or("set itself up", |s| s.name())
    };
    TreeError::ChildStep {
        pid,
        step,
        fd,
        source: errno,
    }
}
