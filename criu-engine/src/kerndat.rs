//! What the running kernel can do, probed once at start-up.
//!
//! CRIU counterpart: `criu/kerndat.c` (`struct kerndat_s kdat`) and the
//! category-1 probes of `criu/cr-check.c`. Every field of [`KernelFeatures`] is
//! the result of actually using the interface (forking and seizing a child,
//! opening a `map_files` entry, issuing the ioctl...), never of a version
//! number. CHECK, FEATURE_CHECK and `criu check` answer from these values, and
//! engine code branches on them instead of retrying on `ENOSYS`.
//!
//! [`Privileges`] records the caller's effective capabilities (via the `caps`
//! crate) and effective uid.
//!
//! # References
//!
//! - [proc(5)](https://man7.org/linux/man-pages/man5/proc.5.html): `map_files`,
//!   `pagemap`, `clear_refs`, `fdinfo`
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html),
//!   [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html),
//!   [clone3(2)](https://man7.org/linux/man-pages/man2/clone.2.html),
//!   [pidfd_getfd(2)](https://man7.org/linux/man-pages/man2/pidfd_getfd.2.html),
//!   [vmsplice(2)](https://man7.org/linux/man-pages/man2/vmsplice.2.html),
//!   [sock_diag(7)](https://man7.org/linux/man-pages/man7/sock_diag.7.html)

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::fcntl::{vmsplice, Flock, FlockArg, OFlag, SpliceFFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::ptrace;
use nix::sys::socket::{socket, socketpair, AddressFamily, SockFlag, SockProtocol, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{access, getpid, pipe2, AccessFlags};

use crate::sys::probe::{self as sysprobe, PageRegion, PageScan};
use crate::sys::probe_child::ProbeChild;
use crate::sys::sock_diag::{self, DiagFamily};
use crate::sys::{abi, ptrace as rawptrace};

/// `UFFD_FEATURE_EVENT_FORK | EVENT_REMAP | EVENT_REMOVE | EVENT_UNMAP`: what
/// lazy restore needs to follow a non-cooperative tree.
pub const UFFD_LAZY_EVENTS: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);
/// `UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC`: what dirty tracking
/// with write-protect plus `PAGEMAP_SCAN` needs.
pub const UFFD_WP_ASYNC_FEATURES: u64 = (1 << 13) | (1 << 15);

/// `PM_SOFT_DIRTY`: bit 55 of a `/proc/<pid>/pagemap` entry.
const PME_SOFT_DIRTY: u64 = 1 << 55;
/// `UFFD_USER_MODE_ONLY` flag of `userfaultfd(2)`.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// Kernel interfaces the engine may rely on, each probed by using it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `PTRACE_SEIZE` + `PTRACE_INTERRUPT` on a child works.
    pub ptrace_seize: bool,
    /// `PTRACE_GET_RSEQ_CONFIGURATION` works (Linux 5.13).
    pub ptrace_get_rseq_conf: bool,
    /// `PTRACE_PEEKSIGINFO` and `PTRACE_GETSIGMASK` work on a seized child.
    pub peek_siginfo: bool,
    /// `PTRACE_O_SUSPEND_SECCOMP` can be set on a seized child.
    pub seccomp_suspend: bool,
    /// `PTRACE_SECCOMP_GET_FILTER` reads a seized child's filter.
    pub seccomp_filter_dump: bool,
    /// `/proc/self/map_files/<range>` can be opened.
    pub map_files: bool,
    /// `kcmp(2)` works.
    pub kcmp: bool,
    /// `kcmp(KCMP_EPOLL_TFD)` works (Linux 4.13).
    pub kcmp_epoll: bool,
    /// `memfd_create(2)` works.
    pub memfd: bool,
    /// `memfd_create(MFD_HUGETLB)` works.
    pub memfd_hugetlb: bool,
    /// `clone3(2)` understands `set_tid` (Linux 5.5).
    pub clone3_set_tid: bool,
    /// `pidfd_open(2)` works on ourselves.
    pub pidfd_open: bool,
    /// `pidfd_getfd(2)` duplicates one of our own descriptors.
    pub pidfd_getfd: bool,
    /// `userfaultfd(2)` plus the `UFFDIO_API` handshake work.
    pub userfaultfd: bool,
    /// Features `UFFDIO_API` reported (`UFFD_FEATURE_*` bits; 0 without uffd).
    pub uffd_features: u64,
    /// All of [`UFFD_LAZY_EVENTS`] are reported (CRIU's "uffd-noncoop").
    pub uffd_lazy_events: bool,
    /// All of [`UFFD_WP_ASYNC_FEATURES`] are reported (Linux 6.7).
    pub uffd_wp_async: bool,
    /// `ioctl(PAGEMAP_SCAN)` works on `/proc/self/pagemap` (Linux 6.7).
    pub pagemap_scan: bool,
    /// `PAGEMAP_SCAN` accepts `PAGE_IS_GUARD`.
    pub pagemap_scan_guard_pages: bool,
    /// `madvise(MADV_GUARD_INSTALL)` is understood (Linux 6.13).
    pub madv_guard: bool,
    /// Soft-dirty bits work: after writing `4` to `clear_refs`, a written page
    /// has bit 55 set in `pagemap` (`CONFIG_MEM_SOFT_DIRTY`).
    pub soft_dirty: bool,
    /// An unaligned `vmsplice(2)` into a pipe works.
    pub vmsplice: bool,
    /// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)` works (the `PR_SET_MM_MAP` interface).
    pub prctl_mm_map: bool,
    /// Time namespaces exist (`/proc/self/ns/time`, `/proc/self/timens_offsets`).
    pub time_ns: bool,
    /// User namespaces exist (`/proc/self/ns/user`).
    pub user_ns: bool,
    /// Cgroup namespaces exist (`/proc/self/ns/cgroup`).
    pub cgroup_ns: bool,
    /// `/proc/self/status` has an `NSpid:` line.
    pub ns_pid: bool,
    /// `/proc/sys/kernel/ns_last_pid` is writable.
    pub ns_last_pid: bool,
    /// Socket diagnostics answer for unix, TCP, UDP (v4 and, with IPv6, v6),
    /// packet and netlink sockets.
    pub sock_diag: bool,
    /// Socket diagnostics answer for raw IP sockets (v4 and, with IPv6, v6).
    pub sock_diag_raw: bool,
    /// `SIOCGSKNS` returns a socket's network namespace.
    pub sk_ns: bool,
    /// `SIOCUNIXFILE` is understood on unix sockets (Linux 6.0).
    pub sk_unix_file: bool,
    /// `SO_BUF_LOCK` can be read (Linux 5.14).
    pub sockopt_buf_lock: bool,
    /// IPv6 is enabled (`/proc/sys/net/ipv6`).
    pub ipv6: bool,
    /// `IPV6_FREEBIND` can be set (Linux 4.15).
    pub ipv6_freebind: bool,
    /// `/proc/<pid>/fdinfo/<fd>` shows `mnt_id:`.
    pub fdinfo_mnt_id: bool,
    /// `/proc/<pid>/fdinfo/<fd>` shows `lock:` lines of file locks.
    pub fdinfo_lock: bool,
    /// `/proc/self/loginuid` exists (audit syscall support).
    pub loginuid: bool,
    /// `move_mount(MOVE_MOUNT_SET_GROUP)` is understood (Linux 5.15).
    pub move_mount_set_group: bool,
    /// `openat2(2)` exists (Linux 5.6).
    pub openat2: bool,
    /// `prctl(PR_TIMER_CREATE_RESTORE_IDS)` is understood.
    pub timer_cr_ids: bool,
    /// `rseq(2)` exists (Linux 4.18).
    pub rseq: bool,
    /// `membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)` works (Linux 6.3).
    pub membarrier_get_registrations: bool,
}

impl KernelFeatures {
    /// Probes the running kernel. Cheap enough to run per CHECK request: one
    /// forked child serves all ptrace probes.
    #[doc(alias = "kerndat_init")]
    pub fn probe() -> Self {
        let mut kf = Self::default();
        kf.probe_ptrace();
        kf.probe_memory();
        kf.probe_processes();
        kf.probe_files();
        kf.probe_sockets();
        kf.probe_uffd();
        kf
    }

    /// Seizes one child and runs every ptrace probe on it.
    fn probe_ptrace(&mut self) {
        let child = match ProbeChild::spawn() {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(?err, "cannot fork the ptrace probe child");
                return;
            }
        };
        let pid = child.pid();
        if let Err(err) =
            ptrace::seize(pid, ptrace::Options::empty()).and_then(|()| ptrace::interrupt(pid))
        {
            tracing::debug!(?err, "PTRACE_SEIZE probe failed");
            return;
        }
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)) => {}
            other => {
                tracing::debug!(?other, "seized probe child did not stop");
                return;
            }
        }
        self.ptrace_seize = true;

        let mut slot = [std::mem::MaybeUninit::<libc::siginfo_t>::uninit()];
        self.peek_siginfo = rawptrace::peek_siginfo(pid, 0, false, &mut slot).is_ok()
            && rawptrace::get_sigmask(pid).is_ok();
        self.seccomp_filter_dump = child.has_seccomp_filter()
            && rawptrace::seccomp_filter_len(pid, 0).is_ok_and(|n| n > 0);
        self.seccomp_suspend =
            rawptrace::set_options_raw(pid, abi::PTRACE_O_SUSPEND_SECCOMP).is_ok();
        self.ptrace_get_rseq_conf =
            rawptrace::rseq_configuration(pid).is_ok_and(|conf| conf.flags == 0);
    }

    /// Memory interfaces: memfd, vmsplice, pagemap, soft-dirty, guards.
    fn probe_memory(&mut self) {
        self.memfd = memfd_create(c"criu-probe", MFdFlags::MFD_CLOEXEC).is_ok();
        self.memfd_hugetlb = self.memfd
            && memfd_create(c"criu-probe", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_HUGETLB).is_ok();
        self.vmsplice = probe_vmsplice();
        self.prctl_mm_map = sysprobe::prctl_mm_map_size().is_ok();
        self.madv_guard = sysprobe::madv_guard_supported().unwrap_or(false);

        let page = sysprobe::page_size();
        // Two pages so that one whole page-aligned page lies inside.
        let mut buf = vec![0u8; 2 * page];
        let base = buf.as_ptr() as usize;
        let off = base.next_multiple_of(page) - base;
        let addr = base + off;

        let pagemap = match File::open("/proc/self/pagemap") {
            Ok(f) => f,
            Err(err) => {
                tracing::debug!(?err, "cannot open /proc/self/pagemap");
                return;
            }
        };
        self.soft_dirty = probe_soft_dirty(&pagemap, &mut buf, off, addr, page);

        let mut scan = PageScan {
            start: addr as u64,
            end: (addr + page) as u64,
            category_inverted: abi::PAGE_IS_PFNZERO | abi::PAGE_IS_FILE,
            category_mask: abi::PAGE_IS_PFNZERO | abi::PAGE_IS_FILE,
            category_anyof_mask: abi::PAGE_IS_PRESENT | abi::PAGE_IS_SWAPPED,
            return_mask: abi::PAGE_IS_PRESENT | abi::PAGE_IS_SWAPPED | abi::PAGE_IS_SOFT_DIRTY,
            ..PageScan::default()
        };
        let mut out = [PageRegion::default(); 1];
        self.pagemap_scan = sysprobe::pagemap_scan(pagemap.as_fd(), &scan, &mut out).is_ok();
        if self.pagemap_scan {
            scan.return_mask |= abi::PAGE_IS_GUARD;
            self.pagemap_scan_guard_pages =
                sysprobe::pagemap_scan(pagemap.as_fd(), &scan, &mut out).is_ok();
        }
    }

    /// Process and namespace interfaces.
    fn probe_processes(&mut self) {
        let me = getpid();
        self.clone3_set_tid = sysprobe::clone3_set_tid_errno() == Errno::EINVAL;
        self.kcmp = sysprobe::kcmp_vm(me, me) == Ok(0);
        self.kcmp_epoll = probe_kcmp_epoll();
        match sysprobe::pidfd_open(me) {
            Ok(pidfd) => {
                self.pidfd_open = true;
                self.pidfd_getfd = probe_pidfd_getfd(&pidfd);
            }
            Err(err) => tracing::debug!(?err, "pidfd_open probe failed"),
        }
        self.time_ns = exists("/proc/self/ns/time") && exists("/proc/self/timens_offsets");
        self.user_ns = exists("/proc/self/ns/user");
        self.cgroup_ns = exists("/proc/self/ns/cgroup");
        self.loginuid = exists("/proc/self/loginuid");
        self.ns_last_pid = access("/proc/sys/kernel/ns_last_pid", AccessFlags::W_OK).is_ok();
        self.ns_pid = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("NSpid:")));
        self.rseq = sysprobe::rseq_errno() != Errno::ENOSYS;
        self.membarrier_get_registrations = sysprobe::membarrier_get_registrations().is_ok();
        self.timer_cr_ids = sysprobe::timer_create_restore_ids_get().is_ok();
    }

    /// File-system interfaces: map_files, fdinfo, openat2, move_mount.
    fn probe_files(&mut self) {
        self.map_files = probe_map_files();
        (self.fdinfo_mnt_id, self.fdinfo_lock) = probe_fdinfo();
        self.openat2 = sysprobe::openat2_errno() != Errno::ENOSYS;
        let mm = sysprobe::move_mount_set_group_errno();
        self.move_mount_set_group = mm != Errno::EINVAL && mm != Errno::ENOSYS;
    }

    /// Socket interfaces: diag, SIOCGSKNS, options.
    fn probe_sockets(&mut self) {
        self.ipv6 = exists("/proc/sys/net/ipv6");
        (self.sock_diag, self.sock_diag_raw) = probe_sock_diag(self.ipv6);
        if let Ok(sk) = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            self.sk_ns = sysprobe::socket_netns(sk.as_fd()).is_ok();
            self.sk_unix_file = match sysprobe::unix_socket_file(sk.as_fd()) {
                Ok(_) | Err(Errno::ENOENT) => true,
                Err(_) => false,
            };
        }
        if let Ok(sk) = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        ) {
            self.sockopt_buf_lock =
                sysprobe::getsockopt_int(sk.as_fd(), libc::SOL_SOCKET, abi::SO_BUF_LOCK).is_ok();
        }
        if self.ipv6 {
            if let Ok(sk) = socket(
                AddressFamily::Inet6,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::Udp,
            ) {
                self.ipv6_freebind =
                    sysprobe::setsockopt_int(sk.as_fd(), libc::SOL_IPV6, libc::IPV6_FREEBIND, 1)
                        .is_ok();
            }
        }
    }

    /// `userfaultfd` and the `UFFDIO_API` feature bits.
    fn probe_uffd(&mut self) {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // Unprivileged callers may only get a user-mode-only uffd when
        // vm.unprivileged_userfaultfd is 0 (Linux 5.11).
        let uffd = sysprobe::userfaultfd(flags)
            .or_else(|_| sysprobe::userfaultfd(flags | UFFD_USER_MODE_ONLY));
        let Ok(uffd) = uffd else {
            return;
        };
        match sysprobe::uffdio_api(uffd.as_fd(), 0) {
            Ok(features) => {
                self.userfaultfd = true;
                self.uffd_features = features;
                self.uffd_lazy_events = features & UFFD_LAZY_EVENTS == UFFD_LAZY_EVENTS;
                self.uffd_wp_async = features & UFFD_WP_ASYNC_FEATURES == UFFD_WP_ASYNC_FEATURES;
            }
            Err(err) => tracing::debug!(?err, "UFFDIO_API probe failed"),
        }
    }
}

fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

/// Splices one unaligned byte into a pipe, as page pipes will.
fn probe_vmsplice() -> bool {
    let Ok((_rd, wr)) = pipe2(OFlag::O_CLOEXEC) else {
        return false;
    };
    let byte = [0x5au8];
    vmsplice(
        &wr,
        &[IoSlice::new(&byte)],
        SpliceFFlags::SPLICE_F_GIFT | SpliceFFlags::SPLICE_F_NONBLOCK,
    )
    .is_ok_and(|n| n == 1)
}

/// Clears soft-dirty bits, writes to one page of `buf` and reads its pagemap
/// entry back. Writing `4` succeeds even without `CONFIG_MEM_SOFT_DIRTY`, so
/// only the bit itself is proof.
#[doc(alias = "kerndat_get_dirty_track")]
fn probe_soft_dirty(pagemap: &File, buf: &mut [u8], off: usize, addr: usize, page: usize) -> bool {
    let cleared = OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut f| f.write_all(b"4"));
    if let Err(err) = cleared {
        tracing::debug!(?err, "clear_refs does not take soft-dirty resets");
        return false;
    }
    buf[off] = 1;
    std::hint::black_box(&mut *buf);
    let mut entry = [0u8; 8];
    let pos = (addr / page * 8) as u64;
    pagemap.read_exact_at(&mut entry, pos).is_ok()
        && u64::from_ne_bytes(entry) & PME_SOFT_DIRTY != 0
}

/// Registers a pipe in an epoll instance and asks kcmp to find it there.
fn probe_kcmp_epoll() -> bool {
    let Ok((rd, _wr)) = pipe2(OFlag::O_CLOEXEC) else {
        return false;
    };
    let Ok(ep) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
        return false;
    };
    if ep
        .add(&rd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
        .is_err()
    {
        return false;
    }
    let fd = rd.as_raw_fd();
    sysprobe::kcmp_epoll_tfd(getpid(), fd, ep.0.as_raw_fd(), fd) == Ok(0)
}

/// Steals one end of our own socketpair through a pidfd and reads through it.
fn probe_pidfd_getfd(pidfd: &std::os::fd::OwnedFd) -> bool {
    let Ok((a, b)) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) else {
        return false;
    };
    let probe = 1984u32.to_ne_bytes();
    if nix::unistd::write(&a, &probe) != Ok(probe.len()) {
        return false;
    }
    let Ok(stolen) = sysprobe::pidfd_getfd(pidfd.as_fd(), b.as_raw_fd()) else {
        return false;
    };
    let mut got = [0u8; 4];
    nix::unistd::read(stolen.as_fd(), &mut got) == Ok(got.len()) && got == probe
}

/// Opens the `map_files` entry of our first file-backed mapping.
fn probe_map_files() -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let Some(range) = maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        fields.nth(4).filter(|p| p.starts_with('/')).map(|_| range)
    }) else {
        return false;
    };
    File::open(format!("/proc/self/map_files/{range}")).is_ok()
}

/// Locks a memfd and reads its fdinfo: `(has mnt_id, has lock)`.
fn probe_fdinfo() -> (bool, bool) {
    let Ok(fd) = memfd_create(c"criu-probe", MFdFlags::MFD_CLOEXEC) else {
        return (false, false);
    };
    let raw = fd.as_raw_fd();
    let locked = Flock::lock(File::from(fd), FlockArg::LockSharedNonblock);
    let mut text = String::new();
    let read = File::open(format!("/proc/self/fdinfo/{raw}"))
        .and_then(|mut f| f.read_to_string(&mut text));
    if read.is_err() {
        return (false, false);
    }
    let mnt_id = text.lines().any(|l| l.starts_with("mnt_id:"));
    let lock = locked.is_ok() && text.lines().any(|l| l.starts_with("lock:"));
    (mnt_id, lock)
}

/// Asks sock_diag about every family CRIU collects: `(all, raw)`.
fn probe_sock_diag(ipv6: bool) -> (bool, bool) {
    let Ok(nl) = sock_diag::open() else {
        return (false, false);
    };
    let answers = |family: DiagFamily| {
        let r = sock_diag::dump_count(&nl, family);
        if let Err(err) = r {
            tracing::debug!(?family, ?err, "sock_diag does not answer");
        }
        r.is_ok()
    };
    let ip = |protocol: i32| -> Vec<DiagFamily> {
        let protocol = u8::try_from(protocol).unwrap_or(0);
        let mut v = vec![DiagFamily::Inet {
            v6: false,
            protocol,
        }];
        if ipv6 {
            v.push(DiagFamily::Inet { v6: true, protocol });
        }
        v
    };
    let mut base = vec![DiagFamily::Unix, DiagFamily::Packet, DiagFamily::Netlink];
    base.extend(ip(libc::IPPROTO_TCP));
    base.extend(ip(libc::IPPROTO_UDP));
    let all = base.into_iter().all(answers);
    let raw = ip(libc::IPPROTO_RAW).into_iter().all(answers);
    (all, raw)
}

/// The caller's privileges, as far as checkpoint/restore cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Effective uid.
    pub euid: u32,
    /// `CAP_SYS_ADMIN` is effective.
    pub cap_sys_admin: bool,
    /// `CAP_CHECKPOINT_RESTORE` is effective (Linux 5.9).
    pub cap_checkpoint_restore: bool,
    /// `CAP_SYS_PTRACE` is effective.
    pub cap_sys_ptrace: bool,
}

impl Privileges {
    /// Reads the effective capability set and uid of this process.
    pub fn probe() -> Self {
        let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            cap_sys_admin: has(Capability::CAP_SYS_ADMIN),
            cap_checkpoint_restore: has(Capability::CAP_CHECKPOINT_RESTORE),
            cap_sys_ptrace: has(Capability::CAP_SYS_PTRACE),
        }
    }

    /// CRIU's minimum: `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`.
    #[doc(alias = "check_caps")]
    pub fn can_checkpoint(&self) -> bool {
        self.cap_sys_admin || self.cap_checkpoint_restore
    }
}
