//! Seizing every thread of a process (CRIU's `seize_threads` and
//! `collect_threads` in `criu/seize.c`).
//!
//! The leader is seized first; then `/proc/<pid>/task` is listed again and
//! again, seizing every thread not yet held, until one pass finds nothing
//! new. A thread that exits between the listing and the seize is dropped
//! from the set. A thread can only be created by a running thread, so once
//! a pass finds every listed thread already held, nothing can add more.

use std::collections::BTreeSet;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;

use super::{wait, SeizeError, SeizeOptions, SeizedTask};
use crate::pstree::RealPid;

/// How many listing passes may find new threads before we give up: a
/// process spawning threads faster than we can stop them.
const MAX_PASSES: usize = 64;

/// A whole thread group, every thread seized and stopped.
#[derive(Debug)]
pub struct SeizedProcess {
    leader: SeizedTask,
    threads: Vec<SeizedTask>,
}

/// Lists the thread ids of `pid` (ascending; the leader included).
pub(crate) fn list_threads(pid: RealPid) -> Result<BTreeSet<i32>, SeizeError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SeizeError::Vanished { pid }
        } else {
            SeizeError::Status { pid, source }
        }
    })?;
    let mut tids = BTreeSet::new();
    for entry in dir {
        let entry = entry.map_err(|source| SeizeError::Status { pid, source })?;
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.insert(tid);
        }
    }
    Ok(tids)
}

impl SeizedProcess {
    /// Seizes the leader `pid` and every thread of its group.
    #[tracing::instrument(level = "debug", skip_all, fields(%pid))]
    pub fn seize(pid: RealPid, opts: &SeizeOptions) -> Result<SeizedProcess, SeizeError> {
        let leader = SeizedTask::seize(pid, opts)?;
        let mut process = SeizedProcess {
            leader,
            threads: Vec::new(),
        };
        let mut gone = BTreeSet::new();
        for _ in 0..MAX_PASSES {
            let listed = list_threads(pid)?;
            let mut new = 0;
            for &tid in &listed {
                if tid == pid.0 || gone.contains(&tid) || process.holds(RealPid(tid)) {
                    continue;
                }
                match SeizedTask::seize(RealPid(tid), opts) {
                    Ok(t) => {
                        process.threads.push(t);
                        new += 1;
                    }
                    // Exited on its way: nothing to dump for it.
                    Err(SeizeError::Vanished { .. } | SeizeError::Zombie { .. }) => {
                        gone.insert(tid);
                    }
                    Err(e) => return Err(e),
                }
            }
            if new == 0 {
                process.threads.sort_by_key(|t| t.pid());
                tracing::debug!(threads = process.threads.len() + 1, "thread group seized");
                return Ok(process);
            }
        }
        Err(SeizeError::UnexpectedStop {
            pid,
            status: format!("threads kept appearing for {MAX_PASSES} passes"),
        })
    }

    fn holds(&self, tid: RealPid) -> bool {
        self.threads.iter().any(|t| t.pid() == tid)
    }

    /// The thread-group leader.
    pub fn leader(&self) -> &SeizedTask {
        &self.leader
    }

    /// The other threads, by ascending tid.
    pub fn threads(&self) -> &[SeizedTask] {
        &self.threads
    }

    /// Every tid, the leader first (`pstree_entry.threads` order).
    pub fn tids(&self) -> Vec<RealPid> {
        std::iter::once(self.leader.pid())
            .chain(self.threads.iter().map(SeizedTask::pid))
            .collect()
    }

    /// Lets every thread go as it was (see [`SeizedTask::detach`]).
    pub fn detach(self) -> Result<(), SeizeError> {
        for t in self.threads {
            t.detach()?;
        }
        self.leader.detach()
    }

    /// Releases the process into a stopped state (see
    /// [`SeizedTask::detach_stopped`]): the leader's stop signal stops the
    /// whole group.
    pub fn detach_stopped(self) -> Result<(), SeizeError> {
        let stop = self.leader.stop_signal().unwrap_or(Signal::SIGSTOP);
        let pid = self.leader.pid();
        kill(pid.as_nix(), stop).map_err(|source| SeizeError::Signal {
            pid,
            signal: stop,
            source,
        })?;
        for mut t in self.threads {
            t.release(None)?;
        }
        let mut leader = self.leader;
        leader.release(None)
    }

    /// Kills the whole group and collects every thread's exit.
    pub fn kill(self) {
        self.send_kill();
        self.release_memory();
        self.collect_killed();
    }

    /// Sends `SIGKILL` to the whole group ([`SeizedProcess::collect_killed`]
    /// then waits for it), so that several processes can die at once.
    pub(crate) fn send_kill(&self) {
        let pid = self.leader.pid();
        if let Err(err) = kill(pid.as_nix(), Signal::SIGKILL) {
            tracing::warn!(%pid, %err, "cannot kill a seized process");
        }
    }

    /// Frees the memory of the killed group from this thread
    /// (`process_mrelease`) while its threads exit on their own: a large
    /// address space goes away sooner (1 GiB: about 70 instead of 110 ms
    /// here). Errors (a memory shared
    /// with a process that lives on, an old kernel) only leave the freeing
    /// to the exit.
    pub(crate) fn release_memory(&self) {
        let pid = self.leader.pid();
        let released = crate::sys::probe::pidfd_open(pid.as_nix())
            .and_then(|fd| crate::sys::probe::process_mrelease(fd.as_fd()));
        if let Err(err) = released {
            tracing::debug!(%pid, %err, "process_mrelease");
        }
    }

    /// Collects the exit of every thread of a group sent `SIGKILL`.
    pub(crate) fn collect_killed(self) {
        for t in self.threads {
            t.reap_killed();
        }
        self.leader.kill();
    }
}

/// Waits until traced thread `tid` has exited.
pub(crate) fn reap(tid: RealPid) {
    loop {
        match wait::wait(tid.as_nix()) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => break,
            Err(err) => {
                tracing::warn!(%tid, %err, "cannot collect a killed thread");
                break;
            }
            Ok(_) => {}
        }
    }
}
