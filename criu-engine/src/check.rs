//! `criu check`, CHECK requests and `criu check --feature NAME`.
//!
//! CRIU counterpart: `criu/cr-check.c`. [`check_required`] tests what our dump
//! and restore cannot work without and stops at the first gap, as CRIU's
//! category-1 checks do (rpc-protocol.md 9.2). [`check_feature`] answers CRIU
//! 4.2's `--feature` names.
//!
//! A feature is reported true only when the kernel has it **and** the engine
//! implements what depends on it. Each name is decided by one of:
//!
//! - [`Decider::Kernel`]: a fact about the kernel that CRIU also reports as
//!   such; we report our probe truthfully.
//! - [`Decider::Both`]: the kernel probe AND an `engine_supports_*()` switch.
//! - [`Decider::Engine`]: a capability of a subsystem the engine does not
//!   implement yet (network namespaces, TUN, AIO rings, autofs, nftables...);
//!   false whatever the kernel says. The kernel probe is added together with
//!   the subsystem.

use crate::features;
use crate::kerndat::{KernelFeatures, Privileges};

/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `--feature` named something CRIU 4.2 does not know.
    #[error("unknown feature {name}")]
    UnknownFeature {
        /// The name asked for.
        name: String,
    },
    /// Neither `CAP_SYS_ADMIN` nor `CAP_CHECKPOINT_RESTORE` is effective.
    #[error("checkpoint/restore needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (euid {euid})")]
    Privileges {
        /// Effective uid of the checker.
        euid: u32,
    },
    /// A kernel interface the engine needs is missing.
    #[error("required kernel feature {feature} is missing: {what}")]
    Missing {
        /// Short name of the feature.
        feature: &'static str,
        /// What was tried.
        what: &'static str,
    },
}

/// Who decides a feature's answer (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// The kernel probe alone.
    Kernel,
    /// The kernel probe and the engine's support.
    Both,
    /// The engine alone (today: not implemented, so false).
    Engine,
}

/// One `--feature` name.
struct Feature {
    name: &'static str,
    decider: Decider,
    available: fn(&KernelFeatures) -> bool,
}

const fn kernel(name: &'static str, available: fn(&KernelFeatures) -> bool) -> Feature {
    Feature {
        name,
        decider: Decider::Kernel,
        available,
    }
}

const fn both(name: &'static str, available: fn(&KernelFeatures) -> bool) -> Feature {
    Feature {
        name,
        decider: Decider::Both,
        available,
    }
}

/// A feature of a subsystem the engine does not implement.
const fn engine(name: &'static str) -> Feature {
    Feature {
        name,
        decider: Decider::Engine,
        available: |_| false,
    }
}

/// CRIU 4.2's `feature_list[]`, in its order.
#[rustfmt::skip]
static FEATURES: &[Feature] = &[
    kernel("mnt_id", |k| k.fdinfo_mnt_id),
    // uffd-wp async + PAGEMAP_SCAN, and the engine's pre-dump tracking.
    both("mem_dirty_track", features::mem_track),
    engine("aio_remap"),
    engine("timerfd"),
    engine("tun"),
    engine("tun_ns"),
    kernel("userns", |k| k.user_ns && k.prctl_mm_map),
    kernel("fdinfo_lock", |k| k.fdinfo_lock),
    kernel("seccomp_suspend", |k| k.seccomp_suspend),
    kernel("seccomp_filters", |k| k.seccomp_filter_dump),
    // CRIU needs loginuid to be writable and restores it; we do not yet.
    engine("loginuid"),
    kernel("cgroupns", |k| k.cgroup_ns),
    engine("autofs"),
    // Needs TCP repair of half-closed sockets, which the engine lacks.
    engine("tcp_half_closed"),
    // 32-bit (compat) tasks are not supported by the engine.
    engine("compat_cr"),
    kernel("uffd", |k| k.userfaultfd),
    kernel("uffd-noncoop", |k| k.userfaultfd && k.uffd_lazy_events),
    // The engine moves the vDSO with mremap, never maps a fresh one.
    engine("can_map_vdso"),
    kernel("sk_ns", |k| k.sk_ns),
    kernel("sk_unix_file", |k| k.sk_unix_file),
    kernel("net_diag_raw", |k| k.sock_diag_raw),
    engine("nsid"),
    engine("link_nsid"),
    kernel("kcmp_epoll", |k| k.kcmp_epoll),
    kernel("timens", |k| k.time_ns),
    // CRIU answers yes unconditionally; we do not dump network namespaces yet.
    engine("external_net_ns"),
    kernel("clone3_set_tid", |k| k.clone3_set_tid),
    engine("newifindex"),
    engine("nftables"),
    engine("has_ipt_legacy"),
    both("pidfd_store", features::pidfd_store),
    kernel("ns_pid", |k| k.ns_pid),
    engine("apparmor_stacking"),
    engine("network_lock_nftables"),
    kernel("sockopt_buf_lock", |k| k.sockopt_buf_lock),
    kernel("memfd_hugetlb", |k| k.memfd_hugetlb),
    kernel("move_mount_set_group", |k| k.move_mount_set_group),
    kernel("openat2", |k| k.openat2),
    kernel("get_rseq_conf", |k| k.ptrace_get_rseq_conf),
    kernel("ipv6_freebind", |k| k.ipv6_freebind),
    kernel("pagemap_scan", |k| k.pagemap_scan),
    kernel("timer_cr_ids", |k| k.timer_cr_ids),
    // CRIU's probe mounts an overlayfs; file-backed VMAs are not dumped yet.
    engine("overlayfs_maps"),
    // Hardware breakpoints are used by CRIU's parasite, not by our injection.
    engine("breakpoints"),
    kernel("pagemap_scan_guard_pages", |k| k.pagemap_scan_guard_pages),
];

/// The `--feature` names CRIU 4.2 accepts, in `criu check --help` order.
pub fn feature_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| FEATURES.iter().map(|f| f.name).collect())
}

fn lookup(name: &str) -> Result<&'static Feature, CheckError> {
    FEATURES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| CheckError::UnknownFeature {
            name: name.to_owned(),
        })
}

/// Who decides `name` (see the module docs).
pub fn decided_by(name: &str) -> Result<Decider, CheckError> {
    lookup(name).map(|f| f.decider)
}

/// `criu check --feature NAME`: `Ok(true)` when supported by kernel and engine.
#[doc(alias = "check_add_feature")]
pub fn check_feature(name: &str, kf: &KernelFeatures) -> Result<bool, CheckError> {
    lookup(name).map(|f| (f.available)(kf))
}

/// `criu check --all`: every feature name with its answer, in CRIU's order.
/// Privileges do not change per-feature answers (the probes already ran with
/// them); callers run [`check_required`] first for that.
pub fn check_all(kf: &KernelFeatures, _pr: &Privileges) -> Vec<(&'static str, bool)> {
    FEATURES
        .iter()
        .map(|f| (f.name, (f.available)(kf)))
        .collect()
}

/// `(feature, what was tried, probe result)`.
type Requirement = (&'static str, &'static str, fn(&KernelFeatures) -> bool);

/// What dump and restore cannot work without, in the order they are checked.
#[rustfmt::skip]
static REQUIRED: &[Requirement] = &[
    ("map_files", "/proc/<pid>/map_files cannot be opened", |k| k.map_files),
    ("sock_diag", "socket diagnostics do not answer for unix, inet, packet and netlink sockets", |k| k.sock_diag),
    ("kcmp", "kcmp(2) does not work", |k| k.kcmp),
    ("prctl_mm_map", "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) does not work", |k| k.prctl_mm_map),
    ("vmsplice", "an unaligned vmsplice(2) into a pipe fails", |k| k.vmsplice),
    ("ptrace_seize", "PTRACE_SEIZE/PTRACE_INTERRUPT of a child fails", |k| k.ptrace_seize),
    ("peek_siginfo", "PTRACE_PEEKSIGINFO or PTRACE_GETSIGMASK fails", |k| k.peek_siginfo),
    ("memfd", "memfd_create(2) fails", |k| k.memfd),
    ("pidfd_open", "pidfd_open(2) fails", |k| k.pidfd_open),
    ("pidfd_getfd", "pidfd_getfd(2) cannot duplicate a descriptor", |k| k.pidfd_getfd),
    ("clone3_set_tid", "clone3(2) does not understand set_tid", |k| k.clone3_set_tid),
];

/// CHECK / plain `criu check`: privileges first, then every required kernel
/// feature; the first missing one is the error.
#[doc(alias = "cr_check")]
pub fn check_required(kf: &KernelFeatures, pr: &Privileges) -> Result<(), CheckError> {
    if !pr.can_checkpoint() {
        return Err(CheckError::Privileges { euid: pr.euid });
    }
    for &(feature, what, present) in REQUIRED {
        if !present(kf) {
            return Err(CheckError::Missing { feature, what });
        }
    }
    Ok(())
}
