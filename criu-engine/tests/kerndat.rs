//! Kernel probes on this machine (Linux 6.18, x86-64, root, no soft-dirty).

use criu_engine::kerndat::{KernelFeatures, Privileges};

#[test]
fn probes_find_what_this_kernel_has() {
    let kf = KernelFeatures::probe();
    let expected_true = [
        ("ptrace_seize", kf.ptrace_seize),
        ("peek_siginfo", kf.peek_siginfo),
        ("seccomp_suspend", kf.seccomp_suspend),
        ("seccomp_filter_dump", kf.seccomp_filter_dump),
        ("ptrace_get_rseq_conf", kf.ptrace_get_rseq_conf),
        ("map_files", kf.map_files),
        ("kcmp", kf.kcmp),
        ("kcmp_epoll", kf.kcmp_epoll),
        ("memfd", kf.memfd),
        ("pidfd_open", kf.pidfd_open),
        ("pidfd_getfd", kf.pidfd_getfd),
        ("clone3_set_tid", kf.clone3_set_tid),
        ("userfaultfd", kf.userfaultfd),
        ("uffd_lazy_events", kf.uffd_lazy_events),
        ("uffd_wp_async", kf.uffd_wp_async),
        ("pagemap_scan", kf.pagemap_scan),
        ("vmsplice", kf.vmsplice),
        ("prctl_mm_map", kf.prctl_mm_map),
        ("time_ns", kf.time_ns),
        ("user_ns", kf.user_ns),
        ("ns_pid", kf.ns_pid),
        ("ns_last_pid", kf.ns_last_pid),
        ("sock_diag", kf.sock_diag),
        ("fdinfo_mnt_id", kf.fdinfo_mnt_id),
        ("fdinfo_lock", kf.fdinfo_lock),
        ("openat2", kf.openat2),
        ("rseq", kf.rseq),
    ];
    let missing: Vec<_> = expected_true
        .iter()
        .filter(|(_, v)| !v)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        missing.is_empty(),
        "probes found missing: {missing:?} in {kf:#?}"
    );
    assert!(!kf.soft_dirty, "this kernel is built without soft-dirty");
    // The lazy-event bits are part of the raw feature word.
    assert_eq!(kf.uffd_features & 0x4e, 0x4e, "{:#x}", kf.uffd_features);
}

#[test]
fn probe_reaps_its_child_and_is_repeatable() {
    let first = KernelFeatures::probe();
    // Children forked by this thread (the ptrace probe child) must be gone.
    let children = std::fs::read_to_string("/proc/thread-self/children").unwrap();
    assert_eq!(children.trim(), "", "probe left children behind");
    assert_eq!(first, KernelFeatures::probe());
}

#[test]
fn privileges_of_root() {
    let pr = Privileges::probe();
    assert_eq!(pr.euid, 0);
    assert!(pr.cap_sys_admin && pr.cap_checkpoint_restore && pr.cap_sys_ptrace);
    assert!(pr.can_checkpoint());
    let none = Privileges {
        euid: 1000,
        ..Privileges::default()
    };
    assert!(!none.can_checkpoint());
    let cr_only = Privileges {
        cap_checkpoint_restore: true,
        ..none
    };
    assert!(cr_only.can_checkpoint());
}
