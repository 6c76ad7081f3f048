//! The process tree of a dump: `pstree.img` with every task's images, in an
//! order where each parent comes before its children (CRIU's
//! `prepare_pstree` and `read_pstree_image` in `criu/pstree.c`), and the
//! data queued in pipes (`pipes-data.img`, CRIU's `collect_pipe_data` in
//! `criu/pipes.c`).

use std::collections::HashMap;

use criu_proto::images::{CoreEntry, FileEntry, PipeDataEntry, PstreeEntry};
use criu_proto::img::{ImageKind, ImagesDir};

use super::images::{self, read_error, required, ImagesError, TaskImages};

/// `TASK_DEAD` of `tc.task_state`.
const TASK_DEAD: u32 = 2;

/// What a task of the tree is.
#[derive(Debug)]
pub(crate) enum TaskKind {
    /// A live task with all its images.
    Alive(Box<TaskImages>),
    /// A zombie: only its exit status (as `wait` reports it) and name.
    Zombie {
        /// Wait status.
        exit_code: u32,
        /// Name.
        comm: String,
    },
}

/// One task of the tree.
#[derive(Debug)]
pub(crate) struct TreeTask {
    /// Its `pstree.img` entry.
    pub(crate) pstree: PstreeEntry,
    /// Live or zombie.
    pub(crate) kind: TaskKind,
    /// Index of its parent in [`TreeImages::tasks`]; `None` for the root.
    pub(crate) parent: Option<usize>,
    /// Indices of its children, in image order.
    pub(crate) children: Vec<usize>,
}

impl TreeTask {
    /// The live task's images, if it is alive.
    pub(crate) fn alive(&self) -> Option<&TaskImages> {
        match &self.kind {
            TaskKind::Alive(t) => Some(t),
            TaskKind::Zombie { .. } => None,
        }
    }
}

/// Every task of the dump.
#[derive(Debug)]
pub(crate) struct TreeImages {
    /// Tasks in `pstree.img` order; the first is the root.
    pub(crate) tasks: Vec<TreeTask>,
    /// Bytes queued in pipes at dump time, by `pipe_id`, with the pipe size.
    pub(crate) pipe_data: HashMap<u32, (u32, Vec<u8>)>,
    /// Messages queued on unix sockets, by the socket's file id.
    pub(crate) sk_queues: super::unix_sk::SkQueues,
    /// Bytes queued in FIFOs, by `pipe_id`, with the pipe size.
    pub(crate) fifo_data: super::fifo::FifoData,
    /// Whether the root is the init of its own pid namespace (the whole
    /// tree lives in it; the pids of the images are the ones inside).
    pub(crate) new_pidns: bool,
    /// Ghost files and link remaps made for the restore.
    pub(crate) remaps: super::remap::Remaps,
}

impl TreeImages {
    /// The root task's images (always alive).
    pub(crate) fn root(&self) -> &TaskImages {
        self.tasks[0].alive().expect("checked by load")
    }
}

fn unsupported(what: String) -> ImagesError {
    ImagesError::Unsupported { what }
}

/// Reads and checks every image of `dir` (see [`images::load_task`]).
pub(crate) fn load(
    dir: &ImagesDir,
    inherited: &dyn Fn(&FileEntry) -> bool,
) -> Result<TreeImages, ImagesError> {
    let inventory = images::load_inventory(dir)?;
    let entries: Vec<PstreeEntry> = dir
        .pstree()
        .map_err(|source| read_error(ImageKind::Pstree, 0, source))?;
    if entries.is_empty() {
        return Err(ImagesError::Missing {
            image: ImageKind::Pstree.file_name(0),
        });
    }
    images::check_pstree_pids(&entries)?;
    let mut files = images::load_files(dir)?;
    let root_dir = dir
        .fs(entries[0].pid)
        .ok()
        .flatten()
        .and_then(|fs| files.get(&fs.root_id)?.reg.as_ref().map(|r| r.name.clone()))
        .unwrap_or_else(|| "/".to_owned());
    let remaps = super::remap::apply(dir, &mut files, &root_dir)?;
    let mut tasks: Vec<TreeTask> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let pid = entry.pid;
        let parent = if i == 0 {
            if entry.ppid != 0 {
                return Err(unsupported(
                    "a root task with a parent in the tree".to_owned(),
                ));
            }
            None
        } else {
            let p = tasks
                .iter()
                .position(|t| t.pstree.pid == entry.ppid)
                .ok_or_else(|| {
                    unsupported(format!(
                        "task {pid} whose parent {} is not before it in the tree",
                        entry.ppid
                    ))
                })?;
            Some(p)
        };
        if tasks.iter().any(|t| t.pstree.pid == pid) {
            return Err(ImagesError::Core {
                pid,
                reason: "the pid appears twice in pstree.img",
            });
        }
        let core: CoreEntry = required(dir, ImageKind::Core, pid.into())?;
        let tc = core.tc.as_ref().ok_or(ImagesError::Core {
            pid,
            reason: "no tc",
        })?;
        let kind = if tc.task_state == TASK_DEAD {
            if i == 0 {
                return Err(unsupported(format!("a dead root task {pid}")));
            }
            TaskKind::Zombie {
                exit_code: tc.exit_code,
                comm: tc.comm.clone(),
            }
        } else {
            let task = images::load_task(dir, &inventory, entry.clone(), core, &files, inherited)?;
            TaskKind::Alive(Box::new(task))
        };
        if let Some(p) = parent {
            tasks[p].children.push(i);
        }
        tasks.push(TreeTask {
            pstree: entry,
            kind,
            parent,
            children: Vec::new(),
        });
    }
    let pipe_data = load_pipe_data(dir)?;
    let dumper_ns = inventory.root_ids.as_ref().and_then(|r| r.pid_ns_id);
    let root_ns = tasks[0].alive().and_then(|t| t.pid_ns_id);
    let new_pidns = root_ns.is_some() && root_ns != dumper_ns;
    for t in tasks.iter().filter_map(TreeTask::alive) {
        if t.pid_ns_id != root_ns {
            return Err(unsupported(format!(
                "nested pid namespaces (task {} is not in the root's)",
                t.pid()
            )));
        }
    }
    if new_pidns && tasks[0].pstree.pid != 1 {
        return Err(unsupported(format!(
            "a pid namespace whose root is pid {}, not 1",
            tasks[0].pstree.pid
        )));
    }
    Ok(TreeImages {
        tasks,
        pipe_data,
        sk_queues: super::unix_sk::load_queues(dir)?,
        fifo_data: super::fifo::load(dir)?,
        new_pidns,
        remaps,
    })
}

fn load_pipe_data(dir: &ImagesDir) -> Result<HashMap<u32, (u32, Vec<u8>)>, ImagesError> {
    let mut out = HashMap::new();
    let err = |source| read_error(ImageKind::PipesData, 0, source);
    let Some(mut reader) = dir.open_image(ImageKind::PipesData, 0).map_err(err)? else {
        return Ok(out);
    };
    while let Some(entry) = reader.read_entry::<PipeDataEntry>().map_err(err)? {
        let data = reader.read_extra(entry.bytes.into()).map_err(err)?;
        if !data.is_empty() {
            out.insert(entry.pipe_id, (entry.size.unwrap_or(0), data));
        }
    }
    Ok(out)
}
