//! Draining a task's last page pipes on another thread (no CRIU
//! counterpart: CRIU drains every pipe before it moves on).
//!
//! Writing to one tmpfs file is serialized by its inode lock, but two
//! files fill in parallel. So once the task has put its last pages in its
//! pipes, the engine hands those pipes (duplicated read ends, the pages
//! file) to a drainer thread and goes on with the task's other state and
//! the next task, whose pages go to another file meanwhile. Only `splice`
//! runs on the drainer: ptrace stays on the tracing thread. The pipes hold
//! references to the frozen task's pages, so they read the same later.
//! The dump waits for the drainer ([`PageDrainer::finish`]) before it
//! writes the inventory or lets the tasks go.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{splice, SpliceFFlags};

/// Draining handed-off pipes failed.
#[derive(Debug, thiserror::Error)]
pub enum PageDrainError {
    /// A `splice` into the pages file failed or the pipe ran dry.
    #[error("cannot write pages to {}", path.display())]
    Write {
        /// The pages file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The drainer thread could not be started.
    #[error("cannot start the page drainer thread")]
    Spawn(#[source] std::io::Error),
    /// The drainer thread stopped early (it panicked).
    #[error("the page drainer thread stopped")]
    Stopped,
}

/// Pipes of one task to empty into its pages file, in order.
struct Job {
    pipes: Vec<(OwnedFd, usize)>,
    file: File,
    path: PathBuf,
}

/// Jobs waiting at most (each pins up to a set of pipes of pages).
const QUEUE: usize = 2;

/// A thread that empties handed-off page pipes into pages files.
pub struct PageDrainer {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<Duration, PageDrainError>>>,
}

impl PageDrainer {
    /// Starts the thread.
    pub fn start() -> Result<PageDrainer, PageDrainError> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("page-drainer".into())
            .spawn(move || {
                let mut busy = Duration::ZERO;
                let mut failed = None;
                // Keep receiving after a failure so senders never block.
                for job in rx {
                    if failed.is_none() {
                        let started = Instant::now();
                        failed = drain(job).err();
                        busy += started.elapsed();
                    }
                }
                failed.map_or(Ok(busy), Err)
            })
            .map_err(PageDrainError::Spawn)?;
        Ok(PageDrainer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `pipes` (read ends with the bytes each holds) to be emptied,
    /// in order, at the current end of `file`; waits while the queue is
    /// full.
    pub fn hand_off(
        &self,
        pipes: Vec<(OwnedFd, usize)>,
        file: File,
        path: PathBuf,
    ) -> Result<(), PageDrainError> {
        let jobs = self.jobs.as_ref().ok_or(PageDrainError::Stopped)?;
        jobs.send(Job { pipes, file, path })
            .map_err(|_| PageDrainError::Stopped)
    }

    /// Waits until everything handed off is written; returns the time the
    /// thread spent writing, or its first failure.
    pub fn finish(mut self) -> Result<Duration, PageDrainError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Duration, PageDrainError> {
        drop(self.jobs.take());
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| PageDrainError::Stopped)?,
            None => Ok(Duration::ZERO),
        }
    }
}

impl Drop for PageDrainer {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::debug!(%err, "page drainer abandoned");
        }
    }
}

/// Empties the job's pipes into its file.
fn drain(job: Job) -> Result<(), PageDrainError> {
    let fail = |source| PageDrainError::Write {
        path: job.path.clone(),
        source,
    };
    for (pipe, len) in &job.pipes {
        let mut done = 0;
        while done < *len {
            let n = splice(
                pipe.as_fd(),
                None,
                job.file.as_fd(),
                None,
                len - done,
                SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(|e| fail(e.into()))?;
            if n == 0 {
                return Err(fail(std::io::ErrorKind::UnexpectedEof.into()));
            }
            done += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Two jobs' pipes end up in their files, in order; a pipe holding
    /// less than announced fails the drain.
    #[test]
    fn pipes_are_emptied_in_order() {
        let dir = std::env::temp_dir().join(format!("criu-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let drainer = PageDrainer::start().unwrap();
        let mut files = Vec::new();
        for j in 0..2u8 {
            let path = dir.join(format!("f{j}"));
            let mut file = File::create(&path).unwrap();
            file.write_all(b"head").unwrap();
            let mut pipes = Vec::new();
            for p in 0..3u8 {
                let (r, w) = nix::unistd::pipe().unwrap();
                let data = vec![j * 10 + p; 1000];
                File::from(w).write_all(&data).unwrap();
                pipes.push((r, data.len()));
            }
            drainer.hand_off(pipes, file, path.clone()).unwrap();
            files.push(path);
        }
        drainer.finish().unwrap();
        for (j, path) in files.iter().enumerate() {
            let got = std::fs::read(path).unwrap();
            let mut want = b"head".to_vec();
            for p in 0..3u8 {
                want.extend(vec![j as u8 * 10 + p; 1000]);
            }
            assert!(got == want, "{}", path.display());
        }
        let drainer = PageDrainer::start().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(b"short").unwrap();
        let path = dir.join("short");
        let file = File::create(&path).unwrap();
        drainer.hand_off(vec![(r, 10)], file, path).unwrap();
        assert!(matches!(
            drainer.finish(),
            Err(PageDrainError::Write { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
