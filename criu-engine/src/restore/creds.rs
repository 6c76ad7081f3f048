//! Credentials of a restored task, given to it with injected syscalls as the
//! very last step of its restore (the `restore_creds()` part of CRIU's
//! `criu/pie/restorer.c`).
//!
//! The task is created by the worker and so starts with the worker's
//! credentials (root). When the images carry other ones, the task, still
//! privileged, first drops the bounding-set bits the images do not have,
//! sets `SECBIT_NO_SETUID_FIXUP` (so that changing ids keeps its
//! capabilities), sets its groups, gids and uids, then the dumped
//! securebits, `capset`s the dumped sets and raises the dumped ambient
//! ones, and finally sets the dumped `dumpable` flag again, since changing
//! ids resets it. `no_new_privs` comes last. The result is read back from
//! `/proc/<pid>/status` and compared with the images.
//!
//! # References
//!
//! - [setresuid(2)](https://man7.org/linux/man-pages/man2/setresuid.2.html),
//!   [setgroups(2)](https://man7.org/linux/man-pages/man2/setgroups.2.html),
//!   [setfsuid(2)](https://man7.org/linux/man-pages/man2/setfsuid.2.html),
//!   [capset(2)](https://man7.org/linux/man-pages/man2/capset.2.html),
//!   [capabilities(7)](https://man7.org/linux/man-pages/man7/capabilities.7.html)
//!   ("Effect of user ID changes on capabilities"),
//!   [PR_SET_DUMPABLE](https://man7.org/linux/man-pages/man2/PR_SET_DUMPABLE.2const.html)

use criu_proto::images::CredsEntry;

use super::mm::Remote;
use super::task::TaskError;
use crate::arch::x86_64::nr;
use crate::proc::status::ProcStatus;
use crate::pstree::RealPid;

/// `PR_SET_DUMPABLE`, `PR_CAPBSET_DROP`, `PR_GET_SECUREBITS`,
/// `PR_SET_SECUREBITS`, `PR_SET_NO_NEW_PRIVS`, `PR_CAP_AMBIENT`.
const PR_SET_DUMPABLE: u64 = 4;
const PR_CAPBSET_DROP: u64 = 24;
const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_CAP_AMBIENT: u64 = 47;
/// `PR_CAP_AMBIENT_RAISE`.
const PR_CAP_AMBIENT_RAISE: u64 = 2;
/// `SECBIT_NO_SETUID_FIXUP`.
const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// A 64-bit capability set from the two words CRIU stores (low word first).
pub(crate) fn cap_set(words: &[u32]) -> u64 {
    let lo = u64::from(words.first().copied().unwrap_or(0));
    let hi = u64::from(words.get(1).copied().unwrap_or(0));
    lo | (hi << 32)
}

fn status(pid: RealPid) -> Result<ProcStatus, TaskError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| TaskError::Status { pid, source })?;
    crate::proc::status::parse(&text).map_err(|e| TaskError::Status {
        pid,
        source: std::io::Error::other(e.to_string()),
    })
}

/// What in `now` differs from the images, if anything.
fn difference(c: &CredsEntry, now: &ProcStatus) -> Option<&'static str> {
    if [c.uid, c.euid, c.suid, c.fsuid] != now.uid {
        return Some("uids");
    }
    if [c.gid, c.egid, c.sgid, c.fsgid] != now.gid {
        return Some("gids");
    }
    let mut dumped = c.groups.clone();
    let mut groups = now.groups.clone();
    dumped.sort_unstable();
    groups.sort_unstable();
    if dumped != groups {
        return Some("groups");
    }
    let sets = [
        ("permitted capabilities", &c.cap_prm, now.cap_prm),
        ("effective capabilities", &c.cap_eff, now.cap_eff),
        ("inheritable capabilities", &c.cap_inh, now.cap_inh),
        ("bounding capabilities", &c.cap_bnd, now.cap_bnd),
    ];
    for (what, words, current) in sets {
        if cap_set(words) != current {
            return Some(what);
        }
    }
    if !c.cap_amb.is_empty() && cap_set(&c.cap_amb) != now.cap_amb {
        return Some("ambient capabilities");
    }
    None
}

/// Gives the task the dumped credentials and `dumpable` flag (see the
/// module docs), or checks that it already has them.
pub(crate) fn apply(
    r: &Remote<'_, '_>,
    creds: Option<&CredsEntry>,
    dumpable: Option<i32>,
) -> Result<(), TaskError> {
    let dumpable = u64::try_from(dumpable.unwrap_or(1)).unwrap_or(0);
    let Some(c) = creds else {
        return set_dumpable(r, dumpable, false);
    };
    let pid = r.pid;
    let now = status(pid)?;
    if difference(c, &now).is_none() {
        securebits(r, c.secbits.into())?;
        set_dumpable(r, dumpable, false)?;
    } else {
        change(r, c, &now)?;
        set_dumpable(r, dumpable, true)?;
    }
    for bit in 0..64u64 {
        if cap_set(&c.cap_amb) & (1 << bit) != 0 {
            r.call(
                "raise an ambient capability",
                bit,
                nr::PRCTL,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, bit, 0, 0],
            )?;
        }
    }
    if c.no_new_privs.unwrap_or(0) != 0 {
        r.call(
            "set no_new_privs",
            1,
            nr::PRCTL,
            &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0],
        )?;
    }
    match difference(c, &status(pid)?) {
        None => Ok(()),
        Some(what) => Err(TaskError::Creds { pid, what }),
    }
}

/// `PR_SET_SECUREBITS` unless the task already has `bits`.
fn securebits(r: &Remote<'_, '_>, bits: u64) -> Result<(), TaskError> {
    if r.call("read the securebits", 0, nr::PRCTL, &[PR_GET_SECUREBITS])? != bits {
        r.call(
            "set the securebits",
            bits,
            nr::PRCTL,
            &[PR_SET_SECUREBITS, bits, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Changes ids, groups and capabilities of a task that differ from `c`.
fn change(r: &Remote<'_, '_>, c: &CredsEntry, now: &ProcStatus) -> Result<(), TaskError> {
    let pid = r.pid;
    let bnd = cap_set(&c.cap_bnd);
    for bit in 0..64u64 {
        if now.cap_bnd & (1 << bit) != 0 && bnd & (1 << bit) == 0 {
            r.call(
                "drop a bounding capability",
                bit,
                nr::PRCTL,
                &[PR_CAPBSET_DROP, bit, 0, 0, 0],
            )?;
        }
    }
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let addr = r.scratch("copy the groups", 0, &groups)?;
    r.call(
        "set the groups",
        addr,
        libc::SYS_setgroups,
        &[c.groups.len() as u64, addr],
    )?;
    if now.uid == [0; 4] {
        securebits(r, SECBIT_NO_SETUID_FIXUP)?;
    }
    let ids = |a: u32, b: u32, c: u32| [u64::from(a), u64::from(b), u64::from(c)];
    r.call(
        "set the gids",
        0,
        libc::SYS_setresgid,
        &ids(c.gid, c.egid, c.sgid),
    )?;
    // setfsgid/setfsuid report the previous value, never an error.
    r.inj
        .syscall(libc::SYS_setfsgid, &[u64::from(c.fsgid)])
        .map_err(|source| super::mm::MmError::Inject {
            pid,
            step: "set the fs gid",
            source,
        })?;
    r.call(
        "set the uids",
        0,
        libc::SYS_setresuid,
        &ids(c.uid, c.euid, c.suid),
    )?;
    r.inj
        .syscall(libc::SYS_setfsuid, &[u64::from(c.fsuid)])
        .map_err(|source| super::mm::MmError::Inject {
            pid,
            step: "set the fs uid",
            source,
        })?;
    securebits(r, c.secbits.into())?;
    let after = status(pid)?;
    let (eff, prm, inh) = (
        cap_set(&c.cap_eff),
        cap_set(&c.cap_prm),
        cap_set(&c.cap_inh),
    );
    if (after.cap_eff, after.cap_prm, after.cap_inh) != (eff, prm, inh) {
        let mut data = Vec::with_capacity(32);
        data.extend_from_slice(&CAP_VERSION_3.to_le_bytes());
        data.extend_from_slice(&0i32.to_le_bytes());
        for word in 0..2 {
            for set in [eff, prm, inh] {
                data.extend_from_slice(&((set >> (32 * word)) as u32).to_le_bytes());
            }
        }
        let addr = r.scratch("copy the capability sets", 0, &data)?;
        r.call(
            "set the capabilities",
            addr,
            libc::SYS_capset,
            &[addr, addr + 8],
        )?;
    }
    Ok(())
}

/// `PR_SET_DUMPABLE` when the value differs from the default or the ids
/// changed (which reset it).
fn set_dumpable(r: &Remote<'_, '_>, value: u64, ids_changed: bool) -> Result<(), TaskError> {
    if value != 1 || ids_changed {
        r.call(
            "set dumpable",
            value,
            nr::PRCTL,
            &[PR_SET_DUMPABLE, value, 0, 0, 0],
        )?;
    }
    Ok(())
}
