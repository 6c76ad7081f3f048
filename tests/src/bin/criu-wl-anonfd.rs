//! The checkpoint/restore target for anonymous-inode descriptors: one
//! object per kind, each checked from the inside on request.
//!
//! `criu-wl-anonfd DIR KIND...` daemonizes (prints the pid of the process
//! that runs) and holds, per `KIND`:
//!
//! * `eventfd`: a semaphore, non-blocking eventfd with counter 5;
//! * `fork`: a child sharing every descriptor (it only sleeps);
//! * `signalfd`: a non-blocking signalfd for `SIGWINCH` (blocked);
//! * `timerfd`: a periodic `CLOCK_MONOTONIC` timerfd (50 ms, first
//!   expiration set as an absolute time) and an expired one-shot one whose
//!   expiration is never read;
//! * `epoll`: an epoll watching a pipe read end holding one byte, an eventfd
//!   and an inner epoll that watches that eventfd too;
//! * `epoll-moved`: an epoll whose target eventfd was `dup`ed to another
//!   number and closed under its first one;
//! * `epoll-gone`: an epoll whose target only a child still holds;
//! * `inotify`: an inotify watching `DIR/watched` (modify) and `DIR/sub`
//!   (create);
//! * `fanotify`: a non-blocking fanotify marking `DIR/watched` (modify,
//!   and close-after-write ignored, even after a modification) and `DIR/sub` (close-after-write of its
//!   children);
//! * `fanotify-fs`: a fanotify with a filesystem mark (ignored mask only).
//!
//! Requests: when `DIR/go-N` appears (N = 1, 2, ...), it writes
//! `DIR/out-N`, one `kind key=value...` line per kind:
//!
//! * `eventfd count=C nonblock=B`: reads until empty (one per read as a
//!   semaphore), then writes the count back;
//! * `signalfd signo=S` (0 if nothing is pending);
//! * `timerfd fired=F interval_ms=I stale=T`: whether the periodic timer
//!   expires within 1 s, its interval, and the unread expirations of the
//!   one-shot timer (put back after reading them);
//! * `epoll ready=LIST`: after making the eventfd readable, the data of the
//!   ready targets (hex, sorted), then the eventfd is drained again;
//! * `moved ready=LIST`, the same for `epoll-moved`;
//! * `inotify events=LIST`: `wd:mask` of every queued event (hex);
//! * `fanotify events=LIST`: `name:mask` of the queued events on files in
//!   `DIR` (hex, sorted, repeats merged).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-anonfd: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

/// Wraps a descriptor returned by a raw call, dying on -1.
fn owned(fd: libc::c_int, what: &str) -> OwnedFd {
    if fd < 0 {
        die(what);
    }
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn write_u64(fd: RawFd, v: u64) -> bool {
    // SAFETY: writes 8 bytes from a live u64.
    unsafe { libc::write(fd, (&v as *const u64).cast(), 8) == 8 }
}

fn read_u64(fd: RawFd) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into a live u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    (n == 8).then_some(v)
}

fn epoll_add(ep: RawFd, fd: RawFd, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: the event pointer refers to a live struct.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        die("epoll_ctl");
    }
}

/// The data of every ready target of `ep`, hex, sorted.
fn ready(ep: RawFd) -> String {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: the buffer holds 16 live events.
    let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 16, 0) };
    let mut data: Vec<u64> = evs[..n.max(0) as usize].iter().map(|e| e.u64).collect();
    data.sort_unstable();
    let list: Vec<String> = data.iter().map(|d| format!("{d:x}")).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(",")
    }
}

fn timespec(ms: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

/// `TFD_IOC_SET_TICKS`.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

struct Eventfd {
    fd: OwnedFd,
}

impl Eventfd {
    fn new() -> Self {
        // SAFETY: eventfd takes integers.
        let fd = owned(
            unsafe { libc::eventfd(5, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK) },
            "eventfd",
        );
        Eventfd { fd }
    }

    fn report(&self) -> String {
        let fd = self.fd.as_raw_fd();
        let mut count = 0u64;
        while let Some(v) = read_u64(fd) {
            count += v;
        }
        if count > 0 && !write_u64(fd, count) {
            die("eventfd write back");
        }
        // SAFETY: F_GETFL takes no pointer.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        let nonblock = u8::from(fl & libc::O_NONBLOCK != 0);
        format!("eventfd count={count} nonblock={nonblock}")
    }
}

struct Signalfd {
    fd: OwnedFd,
}

impl Signalfd {
    fn new() -> Self {
        // SAFETY: sigset operations on a local set, then signalfd with it.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGWINCH);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                die("sigprocmask");
            }
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK)
        };
        Signalfd {
            fd: owned(fd, "signalfd"),
        }
    }

    fn report(&self) -> String {
        // SAFETY: an all-zero signalfd_siginfo is valid.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into a live struct.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut si as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        let signo = if n == size as isize { si.ssi_signo } else { 0 };
        format!("signalfd signo={signo}")
    }
}

struct Timerfd {
    periodic: OwnedFd,
    expired: OwnedFd,
}

impl Timerfd {
    fn new() -> Self {
        let mk = || {
            // SAFETY: timerfd_create takes integers.
            owned(
                unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK) },
                "timerfd_create",
            )
        };
        let (periodic, expired) = (mk(), mk());
        // SAFETY: clock_gettime and timerfd_settime get live structs.
        unsafe {
            let mut now: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            let spec = libc::itimerspec {
                it_interval: timespec(50),
                it_value: libc::timespec {
                    tv_sec: now.tv_sec + 1,
                    tv_nsec: now.tv_nsec,
                },
            };
            let abs = libc::TFD_TIMER_ABSTIME;
            if libc::timerfd_settime(periodic.as_raw_fd(), abs, &spec, std::ptr::null_mut()) != 0 {
                die("timerfd_settime");
            }
            let once = libc::itimerspec {
                it_interval: timespec(0),
                it_value: timespec(1),
            };
            if libc::timerfd_settime(expired.as_raw_fd(), 0, &once, std::ptr::null_mut()) != 0 {
                die("timerfd_settime");
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        Timerfd { periodic, expired }
    }

    fn report(&self) -> String {
        let p = self.periodic.as_raw_fd();
        let _ = read_u64(p);
        let mut pfd = libc::pollfd {
            fd: p,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let fired = unsafe { libc::poll(&mut pfd, 1, 1000) } == 1 && read_u64(p).is_some();
        // SAFETY: an all-zero itimerspec is valid; gettime fills it.
        let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: a live struct to fill.
        unsafe { libc::timerfd_gettime(p, &mut cur) };
        let interval_ms = cur.it_interval.tv_sec * 1000 + cur.it_interval.tv_nsec / 1_000_000;
        let e = self.expired.as_raw_fd();
        let stale = read_u64(e).unwrap_or(0);
        if stale > 0 {
            // SAFETY: the ioctl reads a live u64.
            if unsafe { libc::ioctl(e, TFD_IOC_SET_TICKS as _, &stale as *const u64) } != 0 {
                die("TFD_IOC_SET_TICKS");
            }
        }
        format!(
            "timerfd fired={} interval_ms={interval_ms} stale={stale}",
            u8::from(fired)
        )
    }
}

struct Epoll {
    outer: OwnedFd,
    _inner: OwnedFd,
    event: OwnedFd,
    _pipe: (OwnedFd, OwnedFd),
}

impl Epoll {
    fn new() -> Self {
        // SAFETY: epoll_create1 takes an integer.
        let outer = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll");
        // SAFETY: as above.
        let inner = owned(unsafe { libc::epoll_create1(0) }, "epoll");
        // SAFETY: eventfd takes integers.
        let event = owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) }, "eventfd");
        let mut p = [0 as libc::c_int; 2];
        // SAFETY: pipe fills two ints.
        if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
            die("pipe");
        }
        let pipe = (owned(p[0], "pipe"), owned(p[1], "pipe"));
        // SAFETY: writes one byte from a live buffer.
        if unsafe { libc::write(pipe.1.as_raw_fd(), b"x".as_ptr().cast(), 1) } != 1 {
            die("pipe write");
        }
        let inn = libc::EPOLLIN as u32;
        epoll_add(inner.as_raw_fd(), event.as_raw_fd(), inn, 0xe2);
        epoll_add(outer.as_raw_fd(), pipe.0.as_raw_fd(), inn, 0xb1);
        epoll_add(
            outer.as_raw_fd(),
            event.as_raw_fd(),
            inn | libc::EPOLLRDHUP as u32,
            0xe1,
        );
        epoll_add(outer.as_raw_fd(), inner.as_raw_fd(), inn, 0xa1);
        Epoll {
            outer,
            _inner: inner,
            event,
            _pipe: pipe,
        }
    }

    fn report(&self, name: &str) -> String {
        let before = ready(self.outer.as_raw_fd());
        if !write_u64(self.event.as_raw_fd(), 1) {
            die("eventfd write");
        }
        let after = ready(self.outer.as_raw_fd());
        let _ = read_u64(self.event.as_raw_fd());
        format!("{name} idle={before} ready={after}")
    }
}

/// An epoll whose eventfd target lives on under another number only.
struct Moved {
    ep: OwnedFd,
    event: OwnedFd,
}

impl Moved {
    fn new() -> Self {
        // SAFETY: epoll_create1 takes an integer.
        let ep = owned(unsafe { libc::epoll_create1(0) }, "epoll");
        // SAFETY: eventfd takes integers.
        let first = owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) }, "eventfd");
        epoll_add(
            ep.as_raw_fd(),
            first.as_raw_fd(),
            libc::EPOLLIN as u32,
            0xd1,
        );
        // SAFETY: F_DUPFD takes an integer.
        let event = owned(
            unsafe { libc::fcntl(first.as_raw_fd(), libc::F_DUPFD, 40) },
            "dup",
        );
        drop(first);
        Moved { ep, event }
    }

    fn report(&self) -> String {
        if !write_u64(self.event.as_raw_fd(), 1) {
            die("eventfd write");
        }
        let r = ready(self.ep.as_raw_fd());
        let _ = read_u64(self.event.as_raw_fd());
        format!("moved ready={r}")
    }
}

struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    fn new(dir: &Path) -> Self {
        let watched = dir.join("watched");
        std::fs::write(&watched, b"0").unwrap_or_else(|_| die("create watched"));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap_or_else(|_| die("create sub"));
        // SAFETY: inotify_init1 takes an integer.
        let fd = owned(unsafe { libc::inotify_init1(libc::IN_NONBLOCK) }, "inotify");
        for (path, mask) in [(watched, libc::IN_MODIFY), (sub, libc::IN_CREATE)] {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a live NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
                die("inotify_add_watch");
            }
        }
        Inotify { fd }
    }

    fn report(&self) -> String {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live buffer of that size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut events = Vec::new();
        let mut at = 0usize;
        let n = usize::try_from(n).unwrap_or(0);
        while at + 16 <= n {
            let word = |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap());
            events.push(format!("{:x}:{:x}", word(0), word(4)));
            at += 16 + word(12) as usize;
        }
        if events.is_empty() {
            events.push("none".into());
        }
        format!("inotify events={}", events.join(","))
    }
}

struct Fanotify {
    fd: OwnedFd,
}

fn mark(fd: RawFd, flags: u32, mask: u64, path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a live NUL-terminated path.
    if unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) } != 0 {
        die("fanotify_mark");
    }
}

fn fanotify_fd() -> OwnedFd {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC;
    let ev = (libc::O_RDONLY | libc::O_LARGEFILE) as u32;
    // SAFETY: fanotify_init takes integers.
    owned(unsafe { libc::fanotify_init(flags, ev) }, "fanotify_init")
}

impl Fanotify {
    fn new(dir: &Path) -> Self {
        let watched = dir.join("watched");
        std::fs::write(&watched, b"0").unwrap_or_else(|_| die("create watched"));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap_or_else(|_| die("create sub"));
        let fd = fanotify_fd();
        let raw = fd.as_raw_fd();
        let add = libc::FAN_MARK_ADD;
        mark(raw, add, libc::FAN_MODIFY, &watched);
        let ignore = libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY;
        mark(raw, add | ignore, libc::FAN_CLOSE_WRITE, &watched);
        mark(
            raw,
            add,
            libc::FAN_CLOSE_WRITE | libc::FAN_EVENT_ON_CHILD,
            &sub,
        );
        Fanotify { fd }
    }

    fn report(&self) -> String {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live buffer of that size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = usize::try_from(n).unwrap_or(0);
        let mut events = std::collections::BTreeSet::new();
        let mut at = 0usize;
        while at + 24 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let mask = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
            let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap());
            if fd >= 0 {
                let name = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .ok()
                    .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                events.insert(format!("{name}:{mask:x}"));
                drop(owned(fd, "event fd"));
            }
            at += len.max(24);
        }
        let list: Vec<String> = events.into_iter().collect();
        let list = if list.is_empty() {
            "none".into()
        } else {
            list.join(",")
        };
        format!("fanotify events={list}")
    }
}

/// A child that only sleeps, holding what it inherited.
fn sleeping_child() {
    // SAFETY: single-threaded; the child only sleeps.
    match unsafe { libc::fork() } {
        -1 => die("fork"),
        0 => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: criu-wl-anonfd DIR KIND...");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let has = |k: &str| args[2..].iter().any(|a| a == k);
    // Start from stdio only, whoever launched us.
    // SAFETY: close_range takes integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };

    criu_tests::daemonize();

    let eventfd = has("eventfd").then(Eventfd::new);
    let signalfd = has("signalfd").then(Signalfd::new);
    let timerfd = has("timerfd").then(Timerfd::new);
    let epoll = has("epoll").then(Epoll::new);
    let moved = has("epoll-moved").then(Moved::new);
    let inotify = has("inotify").then(|| Inotify::new(&dir));
    let fanotify = has("fanotify").then(|| Fanotify::new(&dir));
    let _fanotify_fs = has("fanotify-fs").then(|| {
        let fd = fanotify_fd();
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM | libc::FAN_MARK_IGNORED_MASK;
        mark(fd.as_raw_fd(), flags, libc::FAN_MODIFY, &dir);
        fd
    });
    if has("fork") {
        sleeping_child();
    }
    let _gone = has("epoll-gone").then(|| {
        // SAFETY: as above.
        let ep = owned(unsafe { libc::epoll_create1(0) }, "epoll");
        // SAFETY: eventfd takes integers.
        let target = owned(unsafe { libc::eventfd(0, 0) }, "eventfd");
        epoll_add(ep.as_raw_fd(), target.as_raw_fd(), libc::EPOLLIN as u32, 1);
        sleeping_child();
        drop(target);
        ep
    });

    let mut n = 1u64;
    loop {
        if dir.join(format!("go-{n}")).exists() {
            let mut lines = Vec::new();
            lines.extend(eventfd.as_ref().map(Eventfd::report));
            lines.extend(signalfd.as_ref().map(Signalfd::report));
            lines.extend(timerfd.as_ref().map(Timerfd::report));
            lines.extend(epoll.as_ref().map(|e| e.report("epoll")));
            lines.extend(moved.as_ref().map(Moved::report));
            lines.extend(inotify.as_ref().map(Inotify::report));
            lines.extend(fanotify.as_ref().map(Fanotify::report));
            let tmp = dir.join(format!("out-{n}.tmp"));
            let mut f = std::fs::File::create(&tmp).unwrap_or_else(|_| die("report"));
            for l in lines {
                let _ = writeln!(f, "{l}");
            }
            drop(f);
            std::fs::rename(&tmp, dir.join(format!("out-{n}"))).unwrap_or_else(|_| die("rename"));
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
