//! `inventory.img`, `ids-<pid>.img` namespace ids, `timens-0.img` and the
//! empty `seccomp.img` (CRIU's `criu/image.c` `prepare_inventory`,
//! `criu/namespaces.c` id allocation, `criu/timens.c`, `criu/seccomp.c`).
//!
//! CRIU registers its own process first: it takes id 1 of each kernel
//! object kind (vm, files, fs, sighand) and namespace ids 1..8 in the order
//! pid, net, ipc, uts, time, mnt, user, cgroup. A task living in the
//! dumper's namespaces therefore carries exactly the namespace ids of
//! `root_ids`. The one namespace of its own a dumped tree may have is a pid
//! namespace whose init is the root of the tree (id [`TREE_PID_NS_ID`]);
//! any other is refused for now.

use std::os::unix::fs::MetadataExt;

use criu_proto::images::{
    InventoryEntry, Lsmtype, PluginsEntry, TaskKobjIdsEntry, TimensEntry, Timespec,
};
use nix::time::{clock_gettime, ClockId};

use crate::config::NetworkLock;
use crate::pstree::RealPid;

/// Image version CRIU 4.2 writes (v1.1).
const IMG_VERSION: u32 = 2;
/// `pid_ns_id` of the pid namespace a dumped tree's root is the init of.
pub const TREE_PID_NS_ID: u32 = 9;
/// Namespace kinds in CRIU's registration order, with their `/proc` names.
const NAMESPACES: [&str; 8] = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

/// The task lives in a namespace the dump cannot handle yet, or its
/// namespaces could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace link could not be read.
    #[error("cannot read the {ns} namespace of task {pid}")]
    Read {
        /// The task.
        pid: RealPid,
        /// Namespace kind.
        ns: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The task is in a namespace of its own.
    #[error("task {pid} is in its own {ns} namespace; dumping namespaces is not supported yet")]
    Foreign {
        /// The task.
        pid: RealPid,
        /// Namespace kind.
        ns: &'static str,
    },
}

fn ns_ino(pid: Option<RealPid>, ns: &'static str) -> std::io::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/ns/{ns}"),
        None => format!("/proc/self/ns/{ns}"),
    };
    std::fs::metadata(path).map(|m| m.ino())
}

/// Ids of the dumping process itself (`root_ids` of the inventory).
pub fn root_ids() -> TaskKobjIdsEntry {
    let id = |n: u32| Some(n);
    TaskKobjIdsEntry {
        vm_id: 1,
        files_id: 1,
        fs_id: 1,
        sighand_id: 1,
        pid_ns_id: id(1),
        net_ns_id: id(2),
        ipc_ns_id: id(3),
        uts_ns_id: id(4),
        mnt_ns_id: id(6),
        user_ns_id: id(7),
        cgroup_ns_id: id(8),
        time_ns_id: id(5),
    }
}

/// Checks that `pid` shares every namespace with us and returns its ids:
/// its own mm, fd table, fs and signal handlers, all numbered `id` (2 for
/// the first task: 1 is the dumper's).
///
/// With `own_pidns`, the task is in the tree's own pid namespace (checked by
/// the caller) and gets [`TREE_PID_NS_ID`].
pub fn task_ids(
    pid: RealPid,
    id: u32,
    own_pidns: bool,
) -> Result<TaskKobjIdsEntry, NamespaceError> {
    for ns in NAMESPACES {
        if ns == "pid" && own_pidns {
            continue;
        }
        let theirs =
            ns_ino(Some(pid), ns).map_err(|source| NamespaceError::Read { pid, ns, source })?;
        // A kind the kernel lacks is absent for both sides alike.
        if ns_ino(None, ns).ok() != Some(theirs) {
            return Err(NamespaceError::Foreign { pid, ns });
        }
    }
    Ok(TaskKobjIdsEntry {
        vm_id: id,
        files_id: id,
        fs_id: id,
        sighand_id: id,
        pid_ns_id: if own_pidns {
            Some(TREE_PID_NS_ID)
        } else {
            root_ids().pid_ns_id
        },
        ..root_ids()
    })
}

/// The inode of the pid namespace of `pid` (`None`: ours).
pub fn pid_ns(pid: Option<RealPid>) -> Result<u64, NamespaceError> {
    ns_ino(pid, "pid").map_err(|source| NamespaceError::Read {
        pid: pid.unwrap_or(RealPid(0)),
        ns: "pid",
        source,
    })
}

/// What `pid` (or thread `tid` of it) is called inside its own pid
/// namespace: the last `NSpid:`, `NSpgid:` and `NSsid:` values of its
/// status.
pub fn inner_ids(pid: RealPid, tid: RealPid) -> Result<(u32, u32, u32), NamespaceError> {
    let err = |source| NamespaceError::Read {
        pid: tid,
        ns: "pid",
        source,
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).map_err(err)?;
    let last = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next_back()?.parse().ok())
            .ok_or_else(|| err(std::io::Error::other(format!("no {key} line"))))
    };
    Ok((last("NSpid:")?, last("NSpgid:")?, last("NSsid:")?))
}

/// Whether `pid` has a network namespace other than ours.
pub fn own_netns(pid: RealPid) -> Result<bool, NamespaceError> {
    let theirs = ns_ino(Some(pid), "net").map_err(|source| NamespaceError::Read {
        pid,
        ns: "net",
        source,
    })?;
    Ok(ns_ino(None, "net").ok() != Some(theirs))
}

/// A random id for this dump run (`dump_criu_run_id`).
fn run_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The inventory of a finished dump.
pub fn inventory(lock: NetworkLock) -> InventoryEntry {
    InventoryEntry {
        img_version: IMG_VERSION,
        fdinfo_per_id: Some(true),
        root_ids: Some(root_ids()),
        ns_per_id: Some(true),
        root_cg_set: Some(1),
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_uptime: None,
        pre_dump_mode: None,
        tcp_close: None,
        network_lock_method: Some(match lock {
            NetworkLock::Iptables => 0,
            NetworkLock::Nftables => 1,
            NetworkLock::Skip => 2,
        }),
        plugins_entry: Some(PluginsEntry::default()),
        dump_criu_run_id: run_id(),
        allow_uprobes: None,
    }
}

/// The host clocks `timens-0.img` records.
pub fn timens() -> TimensEntry {
    let ts = |id| {
        let t = clock_gettime(id).unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
        Timespec {
            tv_sec: t.tv_sec() as u64,
            tv_nsec: t.tv_nsec() as u64,
        }
    };
    TimensEntry {
        monotonic: ts(ClockId::CLOCK_MONOTONIC),
        boottime: ts(ClockId::CLOCK_BOOTTIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_matches_root_ids() {
        let me = RealPid(std::process::id() as i32);
        let ids = task_ids(me, 2, false).unwrap();
        let root = root_ids();
        assert_eq!(ids.pid_ns_id, root.pid_ns_id);
        assert_eq!(ids.time_ns_id, Some(5));
        assert_eq!((ids.vm_id, ids.files_id), (2, 2));
        assert!(!own_netns(me).unwrap());
    }

    #[test]
    fn inventory_like_criu() {
        let i = inventory(NetworkLock::Skip);
        assert_eq!(i.img_version, 2);
        assert_eq!(i.network_lock_method, Some(2));
        assert_eq!(i.fdinfo_per_id, Some(true));
        assert_eq!(i.dump_criu_run_id.map(|s| s.len()), Some(36));
    }
}
