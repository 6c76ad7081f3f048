//! Credentials of a task as `creds_entry` (CRIU's `criu/cr-dump.c`
//! `dump_thread_creds` / parasite `dump_creds`).
//!
//! Ids, groups, capability sets and `no_new_privs` come from
//! `/proc/<pid>/status`; the securebits only the task can tell, through an
//! injected `prctl(PR_GET_SECUREBITS)`.

use criu_proto::images::CredsEntry;

use crate::proc::status::ProcStatus;

/// Splits a 64-bit capability set into the two words CRIU stores (low
/// word first).
fn cap_words(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// The entry for a task with this `status` and securebits.
pub fn entry(status: &ProcStatus, secbits: u32) -> CredsEntry {
    let [uid, euid, suid, fsuid] = status.uid;
    let [gid, egid, sgid, fsgid] = status.gid;
    CredsEntry {
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
        cap_inh: cap_words(status.cap_inh),
        cap_prm: cap_words(status.cap_prm),
        cap_eff: cap_words(status.cap_eff),
        cap_bnd: cap_words(status.cap_bnd),
        secbits,
        groups: status.groups.clone(),
        lsm_profile: None,
        lsm_sockcreate: None,
        apparmor_data: None,
        no_new_privs: status.no_new_privs.then_some(1),
        cap_amb: cap_words(status.cap_amb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_like_criu() {
        let s = ProcStatus {
            uid: [0, 0, 0, 0],
            gid: [0, 0, 0, 0],
            cap_prm: 0x1fffeffffff,
            cap_eff: 0x1fffeffffff,
            cap_bnd: 0x1fffeffffff,
            ..Default::default()
        };
        let c = entry(&s, 0);
        assert_eq!(c.cap_prm, vec![4278190079, 511]);
        assert_eq!(c.cap_inh, vec![0, 0]);
        assert_eq!(c.cap_amb, vec![0, 0]);
        assert!(c.groups.is_empty());
        assert_eq!(c.no_new_privs, None);
    }

    #[test]
    fn ids_in_order() {
        let s = ProcStatus {
            uid: [1, 2, 3, 4],
            gid: [5, 6, 7, 8],
            groups: vec![9],
            no_new_privs: true,
            ..Default::default()
        };
        let c = entry(&s, 0x2f);
        assert_eq!((c.uid, c.euid, c.suid, c.fsuid), (1, 2, 3, 4));
        assert_eq!((c.gid, c.egid, c.sgid, c.fsgid), (5, 6, 7, 8));
        assert_eq!(c.groups, vec![9]);
        assert_eq!(c.secbits, 0x2f);
        assert_eq!(c.no_new_privs, Some(1));
    }
}
