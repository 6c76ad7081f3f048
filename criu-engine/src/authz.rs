//! Who may do what through the service (our extension: CRIU's
//! `criu/cr-service.c` authorizes nobody, rpc-protocol.md 3.5).
//!
//! A service worker runs as root for every client that can reach the
//! socket. Root clients keep CRIU's full power; every other client is a
//! [`Caller`] held to its own lane, from the credentials the kernel recorded
//! when it connected (`SO_PEERCRED`):
//!
//! - options that make root read, write or join things by name (`root`,
//!   `external` and its older forms, `inherit_fd`, `join_ns`, cgroup paths,
//!   LSM profiles, `config_file`) and `exec_cmd` are refused, and
//!   `parent_img` must stay inside the images directory ([`check_request`]);
//! - a dump target must be a process the caller could ptrace itself with
//!   `PTRACE_MODE_ATTACH_REALCREDS`: the same real, effective and saved ids,
//!   no group or capability the caller lacks, and dumpable
//!   ([`check_dump_target`]);
//! - the images of a restore must carry the caller's ids and nothing more
//!   ([`check_restore_creds`]);
//! - every file the worker opens for the request is opened with the caller's
//!   file-system ids and groups ([`assume_identity`]), so images, logs and
//!   the files of a restored task are reachable only when the caller could
//!   reach them.
//!
//! Every refusal is an [`AuthzError`], reported with `cr_errno = EPERM`
//! before any task is touched.
//!
//! # References
//!
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html) (`SO_PEERCRED`)
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html) ("Ptrace access mode checking")
//! - [setfsuid(2)](https://man7.org/linux/man-pages/man2/setfsuid.2.html)
//! - [proc_pid_status(5)](https://man7.org/linux/man-pages/man5/proc_pid_status.5.html)

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use criu_proto::images::CredsEntry;
use criu_proto::rpc::{CriuOpts, CriuReqType};
use nix::unistd::{Gid, Uid};

use crate::proc::status::ProcStatus;

/// A client of the service that is not root, with what it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Pid of the connecting process (`SO_PEERCRED`).
    pub pid: i32,
    /// Its effective uid when it connected.
    pub uid: u32,
    /// Its effective gid when it connected.
    pub gid: u32,
    /// Its supplementary groups (from `/proc/<pid>/status`; empty when they
    /// cannot be read for the same uid).
    pub groups: Vec<u32>,
    /// Its permitted capabilities (likewise; 0 when unknown).
    pub caps: u64,
}

/// Why a request of a non-root caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// An option only root may use.
    #[error("not permitted for uid {uid}: {option} is reserved to root callers")]
    RootOnly {
        /// The caller.
        uid: u32,
        /// The option.
        option: &'static str,
    },
    /// `parent_img` leaves the images directory.
    #[error("not permitted for uid {uid}: parent_img {value:?} must be a relative path inside the images directory")]
    ParentImg {
        /// The caller.
        uid: u32,
        /// The value given.
        value: String,
    },
    /// The dump target is not the caller's to trace.
    #[error("not permitted for uid {uid}: cannot dump pid {pid}: {reason}")]
    DumpTarget {
        /// The caller.
        uid: u32,
        /// The target.
        pid: i32,
        /// Which rule it breaks.
        reason: String,
    },
    /// The dump target cannot be inspected.
    #[error("not permitted for uid {uid}: cannot inspect pid {pid}")]
    Inspect {
        /// The caller.
        uid: u32,
        /// The target.
        pid: i32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The images would restore a task with credentials the caller lacks.
    #[error("not permitted for uid {uid}: the images of task {pid} carry {what} the caller does not have")]
    RestoreCreds {
        /// The caller.
        uid: u32,
        /// The task in the images.
        pid: u32,
        /// What differs.
        what: &'static str,
    },
    /// The worker could not take the caller's file-system identity.
    #[error("cannot take the file-system identity of uid {uid}")]
    Identity {
        /// The caller.
        uid: u32,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

impl AuthzError {
    /// `cr_errno` of every refusal: `EPERM`.
    pub fn cr_errno(&self) -> i32 {
        libc::EPERM
    }
}

impl Caller {
    /// The caller a service connection is held to, or `None` for root (and
    /// for swrk connections, whose client runs the worker itself).
    pub fn restricted(service: bool, pid: i32, uid: u32, gid: u32) -> Option<Caller> {
        if !service || uid == 0 {
            return None;
        }
        // Groups and capabilities are read from the live process; they only
        // count when it still has the uid it connected with.
        let status = read_status(pid)
            .ok()
            .filter(|s| s.uid[1] == uid && s.gid[1] == gid);
        Some(Caller {
            pid,
            uid,
            gid,
            groups: status
                .as_ref()
                .map(|s| s.groups.clone())
                .unwrap_or_default(),
            caps: status.map_or(0, |s| s.cap_prm),
        })
    }

    fn has_group(&self, gid: u32) -> bool {
        gid == self.gid || self.groups.contains(&gid)
    }
}

fn read_status(pid: i32) -> std::io::Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    crate::proc::status::parse(&text).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Refuses the options a non-root caller may not use, and checks the dump
/// target of DUMP, PRE_DUMP and SINGLE_PRE_DUMP.
pub fn check_request(
    caller: &Caller,
    ty: CriuReqType,
    opts: Option<&CriuOpts>,
) -> Result<(), AuthzError> {
    let uid = caller.uid;
    let root_only = |option| Err(AuthzError::RootOnly { uid, option });
    if let Some(o) = opts {
        let named = [
            ("exec_cmd", !o.exec_cmd.is_empty()),
            ("config_file", non_empty(&o.config_file)),
            ("root", non_empty(&o.root)),
            ("external", !o.external.is_empty()),
            ("ext_mnt", !o.ext_mnt.is_empty()),
            ("veths", !o.veths.is_empty()),
            ("unix_sk_ino", !o.unix_sk_ino.is_empty()),
            ("join_ns", !o.join_ns.is_empty()),
            ("inherit_fd", !o.inherit_fd.is_empty()),
            ("cg_root", !o.cg_root.is_empty()),
            ("cgroup_props", non_empty(&o.cgroup_props)),
            ("cgroup_props_file", non_empty(&o.cgroup_props_file)),
            ("cgroup_yard", non_empty(&o.cgroup_yard)),
            ("freeze_cgroup", non_empty(&o.freeze_cgroup)),
            ("lsm_profile", non_empty(&o.lsm_profile)),
            ("lsm_mount_context", non_empty(&o.lsm_mount_context)),
            ("empty_ns", o.empty_ns.is_some_and(|ns| ns != 0)),
        ];
        if let Some((option, _)) = named.iter().find(|(_, used)| *used) {
            return root_only(option);
        }
        if let Some(parent) = o.parent_img.as_deref().filter(|p| !p.is_empty()) {
            let inside = Path::new(parent)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(AuthzError::ParentImg {
                    uid,
                    value: parent.to_owned(),
                });
            }
        }
    }
    let dumps = matches!(
        ty,
        CriuReqType::Dump | CriuReqType::PreDump | CriuReqType::SinglePreDump
    );
    if dumps {
        let pid = opts.and_then(|o| o.pid).unwrap_or(caller.pid);
        check_dump_target(caller, pid)?;
    }
    Ok(())
}

fn non_empty(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// `PTRACE_MODE_ATTACH_REALCREDS` from the caller's point of view: the
/// target's real, effective and saved uids and gids are the caller's, it has
/// no group and no capability the caller lacks, and it is dumpable (a
/// non-dumpable task's `/proc/<pid>` belongs to root).
pub fn check_dump_target(caller: &Caller, pid: i32) -> Result<(), AuthzError> {
    let uid = caller.uid;
    let refuse = |reason: String| Err(AuthzError::DumpTarget { uid, pid, reason });
    if pid <= 0 {
        return refuse("not a process id".into());
    }
    let inspect = |source| AuthzError::Inspect { uid, pid, source };
    let status = read_status(pid).map_err(inspect)?;
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(inspect)?
        .uid();
    if status.uid[..3].iter().any(|&u| u != uid) {
        return refuse(format!("its uids {:?} are not the caller's", status.uid));
    }
    if status.gid[..3].iter().any(|&g| g != caller.gid) {
        return refuse(format!("its gids {:?} are not the caller's", status.gid));
    }
    if let Some(g) = status.groups.iter().find(|&&g| !caller.has_group(g)) {
        return refuse(format!("it is in group {g}, the caller is not"));
    }
    let caps = status.cap_prm | status.cap_eff | status.cap_inh | status.cap_amb;
    if caps & !caller.caps != 0 {
        return refuse(format!(
            "it has capabilities {:#x} beyond the caller's",
            caps & !caller.caps
        ));
    }
    if owner != uid {
        return refuse("it is not dumpable".into());
    }
    Ok(())
}

/// The credentials in the images of task `pid` are the caller's: the same
/// uids and gids, groups the caller has, no capability beyond the caller's.
/// Images without credentials would restore a root task and are refused.
pub fn check_restore_creds(
    caller: &Caller,
    pid: u32,
    creds: Option<&CredsEntry>,
) -> Result<(), AuthzError> {
    let refuse = |what| {
        Err(AuthzError::RestoreCreds {
            uid: caller.uid,
            pid,
            what,
        })
    };
    let Some(c) = creds else {
        return refuse("no credentials (root's)");
    };
    if [c.uid, c.euid, c.suid, c.fsuid]
        .iter()
        .any(|&u| u != caller.uid)
    {
        return refuse("uids");
    }
    if [c.gid, c.egid, c.sgid, c.fsgid]
        .iter()
        .any(|&g| g != caller.gid)
    {
        return refuse("gids");
    }
    if c.groups.iter().any(|&g| !caller.has_group(g)) {
        return refuse("groups");
    }
    let cap = |words: &[u32]| {
        let lo = u64::from(words.first().copied().unwrap_or(0));
        let hi = u64::from(words.get(1).copied().unwrap_or(0));
        lo | (hi << 32)
    };
    let caps = cap(&c.cap_prm) | cap(&c.cap_eff) | cap(&c.cap_inh) | cap(&c.cap_amb);
    if caps & !caller.caps != 0 {
        return refuse("capabilities");
    }
    Ok(())
}

/// The scheduling state in the images needs no privilege: no negative nice
/// value, no real-time policy, no negative OOM score adjustment (the worker
/// sets them while the task still has root's credentials).
pub fn check_restore_sched(
    caller: &Caller,
    pid: u32,
    nice: Option<i32>,
    policy: Option<u32>,
    oom_score_adj: Option<i32>,
) -> Result<(), AuthzError> {
    let refuse = |what| {
        Err(AuthzError::RestoreCreds {
            uid: caller.uid,
            pid,
            what,
        })
    };
    if nice.is_some_and(|n| n < 0) {
        return refuse("a negative nice value");
    }
    // SCHED_OTHER, SCHED_BATCH and SCHED_IDLE need no privilege.
    if policy.is_some_and(|p| !matches!(p, 0 | 3 | 5)) {
        return refuse("a real-time scheduling policy");
    }
    if oom_score_adj.is_some_and(|a| a < 0) {
        return refuse("a negative OOM score adjustment");
    }
    Ok(())
}

/// Makes every file access of this thread from now on use the caller's
/// identity: supplementary groups, then fs gid and fs uid (which also drops
/// the file-system capabilities: `CAP_DAC_OVERRIDE`, `CAP_FOWNER`, ...).
/// Ptrace and the other capabilities stay. The thread stays dumpable, so its
/// own `/proc` entries keep working.
pub fn assume_identity(caller: &Caller) -> Result<(), AuthzError> {
    let err = |source| AuthzError::Identity {
        uid: caller.uid,
        source,
    };
    let groups: Vec<Gid> = caller.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&groups).map_err(err)?;
    nix::unistd::setfsgid(Gid::from_raw(caller.gid));
    nix::unistd::setfsuid(Uid::from_raw(caller.uid));
    // setfsuid reports nothing; the previous value on a second call tells.
    let now = nix::unistd::setfsuid(Uid::from_raw(caller.uid));
    if now.as_raw() != caller.uid {
        return Err(err(nix::Error::EPERM));
    }
    nix::sys::prctl::set_dumpable(true).map_err(err)
}

/// Runs `f` with the worker's own file-system ids (root's), then returns to
/// the caller's; with no caller, just runs `f`. For the few files that are
/// root's because the worker made them: the memory of a task it is
/// restoring, before the task takes the caller's credentials.
pub fn with_worker_fs_ids<T>(caller: Option<&Caller>, f: impl FnOnce() -> T) -> T {
    let Some(caller) = caller else {
        return f();
    };
    nix::unistd::setfsuid(nix::unistd::geteuid());
    nix::unistd::setfsgid(nix::unistd::getegid());
    let out = f();
    nix::unistd::setfsgid(Gid::from_raw(caller.gid));
    nix::unistd::setfsuid(Uid::from_raw(caller.uid));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            pid: 1,
            uid: 4242,
            gid: 4242,
            groups: vec![],
            caps: 0,
        }
    }

    fn creds(uid: u32, gid: u32) -> CredsEntry {
        CredsEntry {
            uid,
            euid: uid,
            suid: uid,
            fsuid: uid,
            gid,
            egid: gid,
            sgid: gid,
            fsgid: gid,
            ..Default::default()
        }
    }

    #[test]
    fn root_and_swrk_are_unrestricted() {
        assert_eq!(Caller::restricted(true, 1, 0, 0), None);
        assert_eq!(Caller::restricted(false, 1, 4242, 4242), None);
        assert!(Caller::restricted(true, 1, 4242, 4242).is_some());
    }

    #[test]
    fn named_options_are_root_only() {
        let c = caller();
        let mut o = CriuOpts {
            images_dir_fd: -1,
            ..Default::default()
        };
        assert!(check_request(&c, CriuReqType::Restore, Some(&o)).is_ok());
        o.exec_cmd = vec!["/bin/sh".into()];
        let err = check_request(&c, CriuReqType::Restore, Some(&o)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not permitted for uid 4242: exec_cmd is reserved to root callers"
        );
        assert_eq!(err.cr_errno(), libc::EPERM);
        o.exec_cmd.clear();
        o.config_file = Some("/etc/shadow".into());
        assert!(check_request(&c, CriuReqType::Restore, Some(&o)).is_err());
    }

    #[test]
    fn parent_img_stays_inside() {
        let c = caller();
        let mut o = CriuOpts::default();
        for (value, ok) in [
            ("../x", false),
            ("/tmp", false),
            ("prev/1", true),
            ("./p", true),
        ] {
            o.parent_img = Some(value.into());
            assert_eq!(
                check_request(&c, CriuReqType::Restore, Some(&o)).is_ok(),
                ok,
                "{value}"
            );
        }
    }

    #[test]
    fn restore_creds_must_be_the_callers() {
        let c = caller();
        assert!(check_restore_creds(&c, 7, Some(&creds(4242, 4242))).is_ok());
        assert!(check_restore_creds(&c, 7, Some(&creds(0, 0))).is_err());
        assert!(check_restore_creds(&c, 7, Some(&creds(4242, 0))).is_err());
        assert!(check_restore_creds(&c, 7, None).is_err());
        let mut capped = creds(4242, 4242);
        capped.cap_eff = vec![1 << 21, 0];
        assert!(check_restore_creds(&c, 7, Some(&capped)).is_err());
        let mut grouped = creds(4242, 4242);
        grouped.groups = vec![0];
        assert!(check_restore_creds(&c, 7, Some(&grouped)).is_err());
    }

    #[test]
    fn a_root_process_cannot_be_dumped_by_a_user() {
        let c = caller();
        let err = check_dump_target(&c, 1).unwrap_err();
        assert!(err.to_string().contains("cannot dump pid 1"), "{err}");
        assert!(check_dump_target(&c, 0).is_err());
    }
}
