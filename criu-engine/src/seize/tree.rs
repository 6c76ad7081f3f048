//! Seizing a whole process tree (CRIU's `collect_pstree`,
//! `collect_children` and `collect_task` in `criu/seize.c`).
//!
//! The root is seized first; then, breadth first, the children of every
//! seized process (listed in `/proc/<pid>/task/<tid>/children` of each of
//! its threads) are seized in turn. A seized process cannot fork, so once
//! every process of the tree is held, the list of children is final. A
//! child in the zombie state is recorded with its exit status; one that
//! dies while we reach for it is looked at again (it is then a zombie: its
//! frozen parent cannot reap it).

use super::{SeizeError, SeizeOptions, SeizedProcess};
use crate::proc::stat::ProcStat;
use crate::pstree::RealPid;

/// What a task of the tree is.
#[derive(Debug)]
pub enum MemberKind {
    /// A live process, every thread seized.
    Alive(SeizedProcess),
    /// A zombie.
    Zombie {
        /// Its wait status (`exit_code` of `/proc/<pid>/stat`).
        exit_code: u32,
        /// Its name.
        comm: String,
    },
}

/// One task of the tree with its ids as the kernel reported them frozen.
#[derive(Debug)]
pub struct TreeMember {
    /// Pid.
    pub pid: RealPid,
    /// Parent pid (the root's real parent for the root).
    pub ppid: RealPid,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Live or zombie.
    pub kind: MemberKind,
}

/// Every task of a tree, parents before children.
#[derive(Debug)]
pub struct SeizedTree {
    /// Breadth-first order; the first is the root.
    pub members: Vec<TreeMember>,
}

fn stat(pid: RealPid) -> Result<ProcStat, SeizeError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SeizeError::Vanished { pid }
        } else {
            SeizeError::Status { pid, source }
        }
    })?;
    crate::proc::stat::parse(&text).map_err(|e| SeizeError::Status {
        pid,
        source: std::io::Error::other(e.to_string()),
    })
}

/// The children of every thread of `pid`.
pub(crate) fn list_children(pid: RealPid) -> Result<Vec<RealPid>, SeizeError> {
    let tids = super::process::list_threads(pid)?;
    children_of(pid, tids.into_iter().map(RealPid))
}

fn children(process: &SeizedProcess) -> Result<Vec<RealPid>, SeizeError> {
    children_of(process.leader().pid(), process.tids().into_iter())
}

fn children_of(
    pid: RealPid,
    tids: impl Iterator<Item = RealPid>,
) -> Result<Vec<RealPid>, SeizeError> {
    let mut out = Vec::new();
    for tid in tids {
        let path = format!("/proc/{pid}/task/{tid}/children");
        let text =
            std::fs::read_to_string(&path).map_err(|source| SeizeError::Status { pid, source })?;
        out.extend(
            text.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .map(RealPid),
        );
    }
    Ok(out)
}

fn member(pid: RealPid, opts: &SeizeOptions) -> Result<TreeMember, SeizeError> {
    let before = stat(pid)?;
    let kind = if before.state == 'Z' {
        None
    } else {
        match SeizedProcess::seize(pid, opts) {
            Ok(p) => Some(p),
            Err(SeizeError::Vanished { .. } | SeizeError::Zombie { .. }) => None,
            Err(e) => return Err(e),
        }
    };
    // Read again once frozen: the ids cannot change any more.
    let st = stat(pid)?;
    let kind = match kind {
        Some(p) => MemberKind::Alive(p),
        None => MemberKind::Zombie {
            exit_code: u32::try_from(st.exit_code).unwrap_or(0),
            comm: st.comm.clone(),
        },
    };
    Ok(TreeMember {
        pid,
        ppid: RealPid(st.ppid),
        pgid: st.pgid,
        sid: st.sid,
        kind,
    })
}

impl SeizedTree {
    /// Seizes `root` and all its descendants.
    #[tracing::instrument(level = "debug", skip_all, fields(%root))]
    pub fn seize(root: RealPid, opts: &SeizeOptions) -> Result<SeizedTree, SeizeError> {
        let first = member(root, opts)?;
        if matches!(first.kind, MemberKind::Zombie { .. }) {
            return Err(SeizeError::Zombie { pid: root });
        }
        let mut tree = SeizedTree {
            members: vec![first],
        };
        let mut next = 0;
        while next < tree.members.len() {
            let kids = match &tree.members[next].kind {
                MemberKind::Alive(p) => children(p)?,
                MemberKind::Zombie { .. } => Vec::new(),
            };
            for kid in kids {
                if tree.members.iter().any(|m| m.pid == kid) {
                    continue;
                }
                tree.members.push(member(kid, opts)?);
            }
            next += 1;
        }
        tracing::debug!(tasks = tree.members.len(), "tree seized");
        Ok(tree)
    }

    /// The live processes, parents first.
    pub fn processes(&self) -> impl Iterator<Item = &SeizedProcess> {
        self.members.iter().filter_map(|m| match &m.kind {
            MemberKind::Alive(p) => Some(p),
            MemberKind::Zombie { .. } => None,
        })
    }

    fn into_processes(self) -> impl DoubleEndedIterator<Item = SeizedProcess> {
        self.members.into_iter().filter_map(|m| match m.kind {
            MemberKind::Alive(p) => Some(p),
            MemberKind::Zombie { .. } => None,
        })
    }

    /// Lets every task go as it was, children first.
    pub fn detach(self) -> Result<(), SeizeError> {
        for p in self.into_processes().rev() {
            p.detach()?;
        }
        Ok(())
    }

    /// Releases every task into a stopped state, children first.
    pub fn detach_stopped(self) -> Result<(), SeizeError> {
        for p in self.into_processes().rev() {
            p.detach_stopped()?;
        }
        Ok(())
    }

    /// Kills every task: `SIGKILL` to all of them first (children first),
    /// then their memory freed from here while they exit, then their exits
    /// collected.
    pub fn kill(self) {
        let procs: Vec<SeizedProcess> = self.into_processes().rev().collect();
        for p in &procs {
            p.send_kill();
        }
        for p in &procs {
            p.release_memory();
        }
        for p in procs {
            p.collect_killed();
        }
    }
}
