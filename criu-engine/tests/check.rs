//! `criu check` semantics: required features, CRIU 4.2 feature names.

use criu_engine::check::{
    check_all, check_feature, check_required, decided_by, feature_names, CheckError, Decider,
};
use criu_engine::kerndat::{KernelFeatures, Privileges};

#[test]
fn required_features_present_here() {
    let kf = KernelFeatures::probe();
    check_required(&kf, &Privileges::probe()).unwrap();
}

#[test]
fn required_check_names_the_first_gap() {
    let kf = KernelFeatures::probe();
    let pr = Privileges::probe();

    let unprivileged = Privileges {
        euid: 1000,
        ..Privileges::default()
    };
    let err = check_required(&kf, &unprivileged).unwrap_err();
    assert!(
        matches!(err, CheckError::Privileges { euid: 1000 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("CAP_CHECKPOINT_RESTORE"), "{err}");

    let no_clone3 = KernelFeatures {
        clone3_set_tid: false,
        ..kf.clone()
    };
    let err = check_required(&no_clone3, &pr).unwrap_err();
    assert!(err.to_string().contains("clone3_set_tid"), "{err}");

    let two_gaps = KernelFeatures {
        map_files: false,
        pidfd_getfd: false,
        ..kf
    };
    match check_required(&two_gaps, &pr).unwrap_err() {
        CheckError::Missing { feature, .. } => assert_eq!(feature, "map_files"),
        other => panic!("unexpected {other:?}"),
    }
    let err = check_required(&KernelFeatures::default(), &pr).unwrap_err();
    assert_eq!(
        err.to_string(),
        "required kernel feature map_files is missing: /proc/<pid>/map_files cannot be opened"
    );
}

#[test]
fn feature_names_are_criu_4_2s() {
    let names = feature_names();
    assert_eq!(names.len(), 45);
    assert_eq!(names[0], "mnt_id");
    assert_eq!(names[44], "pagemap_scan_guard_pages");
    for n in [
        "uffd-noncoop",
        "get_rseq_conf",
        "timens",
        "pidfd_store",
        "ns_pid",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate names");
}

#[test]
fn feature_answers_on_this_machine() {
    let kf = KernelFeatures::probe();
    for name in [
        "mnt_id",
        "userns",
        "seccomp_suspend",
        "seccomp_filters",
        "uffd",
        "uffd-noncoop",
        "kcmp_epoll",
        "timens",
        "clone3_set_tid",
        "get_rseq_conf",
        "pagemap_scan",
        "ns_pid",
    ] {
        assert!(check_feature(name, &kf).unwrap(), "{name}");
        assert_eq!(decided_by(name).unwrap(), Decider::Kernel, "{name}");
    }
    // Both the kernel and the engine can track memory.
    assert!(check_feature("mem_dirty_track", &kf).unwrap());
    assert_eq!(decided_by("mem_dirty_track").unwrap(), Decider::Both);
    // The kernel could, the engine cannot (yet).
    assert!(!check_feature("pidfd_store", &kf).unwrap());
    assert_eq!(decided_by("pidfd_store").unwrap(), Decider::Both);
    for name in ["tun", "compat_cr", "external_net_ns", "nftables", "autofs"] {
        assert!(!check_feature(name, &kf).unwrap(), "{name}");
        assert_eq!(decided_by(name).unwrap(), Decider::Engine, "{name}");
    }
    // A kernel without userfaultfd loses both uffd names.
    let no_uffd = KernelFeatures {
        userfaultfd: false,
        ..kf.clone()
    };
    assert!(!check_feature("uffd", &no_uffd).unwrap());
    assert!(!check_feature("uffd-noncoop", &no_uffd).unwrap());
}

#[test]
fn unknown_feature_names_are_errors() {
    let kf = KernelFeatures::default();
    for name in [
        "",
        "has_ptrace_get_rseq_conf",
        "ns_get_userns",
        "MNT_ID",
        "uffd_noncoop",
    ] {
        let err = check_feature(name, &kf).unwrap_err();
        assert!(matches!(&err, CheckError::UnknownFeature { name: n } if n == name));
        assert_eq!(err.to_string(), format!("unknown feature {name}"));
        assert!(decided_by(name).is_err());
    }
}

#[test]
fn check_all_lists_every_feature_in_order() {
    let kf = KernelFeatures::probe();
    let all = check_all(&kf, &Privileges::probe());
    let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, feature_names());
    for (name, ok) in all {
        assert_eq!(ok, check_feature(name, &kf).unwrap(), "{name}");
    }
}
