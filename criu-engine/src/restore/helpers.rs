//! Helper tasks for sessions and process groups whose leader is not in the
//! tree (CRIU's `TASK_HELPER`: `prepare_pstree_ids` in `criu/pstree.c`,
//! `restore_one_helper` in `criu/cr-restore.c`). Helpers exist only during
//! the restore; the images never list them.
//!
//! - A child of the root in another session than the root's, which it
//!   does not lead, was reparented to the root (a subreaper, or the init of
//!   the tree's pid namespace). When the session's leader is gone, a
//!   session helper with the leader's pid calls `setsid`, creates such
//!   children and exits; the root reaps it and they are reparented to the
//!   root again. When the leader is in the tree, it makes the helper (any
//!   pid), which creates them in its session and exits the same way.
//! - A task in a process group whose leader is gone: before creating it,
//!   its parent creates a group helper with the leader's pid, which makes
//!   the group and stops; the task joins the group, and once every child is
//!   made the parent kills and reaps the helper. The group lives on through
//!   its members.

use std::collections::HashMap;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::pstree::TreeImages;
use super::tree::TreeError;
use crate::sys::clone3::clone3_child;

/// Where every task is born once session helpers are in place.
#[derive(Debug)]
pub(crate) struct Births {
    /// Children of every task, tree tasks first, then session helpers.
    pub(crate) children: Vec<Vec<usize>>,
    /// Session helpers, numbered after the tree's tasks: the pid of each
    /// (the id of the session it makes), or 0 (any pid) for a helper that
    /// the live leader of the session makes.
    pub(crate) sessions: Vec<i32>,
    /// `(sid, pgid)` every tree task inherits when it is created (its
    /// parent's, or its session helper's); `None` for the root.
    pub(crate) born_in: Vec<Option<(u32, u32)>>,
    /// Whether a tree task is created by a session helper, which exits
    /// under it: it must not die with its parent.
    pub(crate) by_helper: Vec<bool>,
}

fn unsupported(pid: u32, what: String) -> TreeError {
    TreeError::Unsupported {
        pid: i32::try_from(pid).unwrap_or(i32::MAX),
        what,
    }
}

/// Finds the root's children whose session leader is not in the tree and
/// puts each under a session helper.
pub(crate) fn plan_sessions(tree: &TreeImages, subreaper: bool) -> Result<Births, TreeError> {
    let n = tree.tasks.len();
    let mut children: Vec<Vec<usize>> = tree.tasks.iter().map(|t| t.children.clone()).collect();
    let mut born_in: Vec<Option<(u32, u32)>> = tree
        .tasks
        .iter()
        .map(|t| {
            t.parent
                .map(|p| (tree.tasks[p].pstree.sid, tree.tasks[p].pstree.pgid))
        })
        .collect();
    let mut by_helper = vec![false; n];
    let mut sessions: Vec<i32> = Vec::new();
    let mut helper_of: HashMap<u32, usize> = HashMap::new();
    let root = &tree.tasks[0].pstree;
    let mut root_children = Vec::with_capacity(children[0].len());
    for &c in &tree.tasks[0].children {
        let p = &tree.tasks[c].pstree;
        if p.sid == root.sid || p.sid == p.pid {
            root_children.push(c);
            continue;
        }
        let leader = tree.tasks.iter().position(|t| t.pstree.pid == p.sid);
        if leader.is_some_and(|l| tree.tasks[l].pstree.sid != p.sid) {
            return Err(unsupported(
                p.pid,
                format!("a session ({}) whose leader left it", p.sid),
            ));
        }
        if !subreaper {
            return Err(unsupported(
                p.pid,
                format!(
                    "a session whose leader {} is gone, under a root that is no child subreaper",
                    p.sid
                ),
            ));
        }
        // With the leader alive in the tree, a helper it makes (any pid)
        // is in its session and group already; otherwise the helper takes
        // the leader's pid and makes the session.
        let h = *helper_of.entry(p.sid).or_insert_with(|| {
            let h = n + sessions.len();
            sessions.push(match leader {
                Some(_) => 0,
                None => i32::try_from(p.sid).unwrap_or(i32::MAX),
            });
            children.push(Vec::new());
            match leader {
                Some(l) => children[l].push(h),
                None => root_children.push(h),
            }
            h
        });
        children[h].push(c);
        let pgid = leader.map_or(p.sid, |l| tree.tasks[l].pstree.pgid);
        born_in[c] = Some((p.sid, pgid));
        by_helper[c] = true;
    }
    children[0] = root_children;
    Ok(Births {
        children,
        sessions,
        born_in,
        by_helper,
    })
}

/// Finds the session leaders that made children before calling `setsid`
/// (CRIU's `born_sid`): a task whose session is an older ancestor's, not
/// its parent's, was made before its parent (and every task up to that
/// ancestor) left the session. Puts such children first and returns, per
/// task, how many of its children it makes before `setsid`; the children's
/// `born_in` become the session and group they were made in.
pub(crate) fn plan_born_sessions(
    tree: &TreeImages,
    births: &mut Births,
) -> Result<Vec<usize>, TreeError> {
    let n = tree.tasks.len();
    let mut born_sid: Vec<Option<u32>> = vec![None; n];
    for (i, t) in tree.tasks.iter().enumerate() {
        let p = &t.pstree;
        let Some((parent_sid, _)) = births.born_in[i] else {
            continue;
        };
        if p.sid == p.pid || p.sid == parent_sid {
            continue;
        }
        let mut cur = t.parent;
        loop {
            let Some(c) = cur else {
                return Err(unsupported(
                    p.pid,
                    format!("a session ({}) whose leader is not its ancestor", p.sid),
                ));
            };
            let up = &tree.tasks[c].pstree;
            if up.pid == p.sid {
                break;
            }
            if up.sid != up.pid || born_sid[c].is_some_and(|s| s != p.sid) {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "a session ({}) its parent's line left in more than one way",
                        p.sid
                    ),
                ));
            }
            born_sid[c] = Some(p.sid);
            cur = tree.tasks[c].parent;
        }
    }
    let mut setsid_after = vec![0; births.children.len()];
    for i in 0..n {
        let Some(sid) = born_sid[i] else {
            continue;
        };
        let born_pgid = births.born_in[i].map_or(0, |b| b.1);
        let (early, late): (Vec<usize>, Vec<usize>) = births.children[i].iter().partition(|&&c| {
            c < n && (tree.tasks[c].pstree.sid == sid || born_sid[c] == Some(sid))
        });
        for &c in &early {
            births.born_in[c] = Some((sid, born_pgid));
        }
        setsid_after[i] = early.len();
        births.children[i] = early.into_iter().chain(late).collect();
    }
    Ok(setsid_after)
}

/// Group helpers planned so far: the group's id and the task that creates
/// its helper (tree or session-helper index).
#[derive(Debug, Default)]
pub(crate) struct GroupHelpers {
    by_group: HashMap<u32, usize>,
}

impl GroupHelpers {
    /// Plans a helper for group `pgid` of task `pid`, created by task
    /// `creator` before its children; the same creator makes one helper per
    /// group.
    pub(crate) fn add(&mut self, pid: u32, pgid: u32, creator: usize) -> Result<(), TreeError> {
        match self.by_group.get(&pgid) {
            Some(&c) if c != creator => Err(unsupported(
                pid,
                format!("process group {pgid}, whose leader is gone, spread under several parents"),
            )),
            _ => {
                self.by_group.insert(pgid, creator);
                Ok(())
            }
        }
    }

    /// The groups whose helpers task `creator` makes, ascending.
    pub(crate) fn made_by(&self, creator: usize) -> Vec<i32> {
        let mut groups: Vec<i32> = self
            .by_group
            .iter()
            .filter(|&(_, &c)| c == creator)
            .map(|(&g, _)| i32::try_from(g).unwrap_or(i32::MAX))
            .collect();
        groups.sort_unstable();
        groups
    }
}

/// In a new task: creates the helper of group `pgid` and waits until it
/// has made the group and stopped. Returns its pid.
pub(crate) fn start_group_helper(pgid: i32) -> nix::Result<Pid> {
    let helper = clone3_child(pgid, false, &mut group_helper_main)?;
    super::child::wait_settled(helper)?;
    Ok(helper)
}

/// The life of a group helper: make the group, then stop until killed.
fn group_helper_main() -> u8 {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return 1;
    }
    if nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).is_err() {
        return 1;
    }
    loop {
        let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
    }
}

/// Kills and reaps a helper this task created.
pub(crate) fn end_helper(helper: Pid) -> nix::Result<()> {
    match kill(helper, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(e),
    }
    reap(helper)
}

/// Waits until a child of this task is gone and reaps it.
pub(crate) fn reap(child: Pid) -> nix::Result<()> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Ok(nix::sys::wait::WaitStatus::Exited(..))
            | Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return Ok(()),
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}
