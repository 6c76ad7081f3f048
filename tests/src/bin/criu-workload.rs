//! The checkpoint/restore test target: a single-threaded process with state
//! that a faithful dump and restore must preserve.
//!
//! `criu-workload LOGPATH MEM_MIB [eventfd] [threads N] [tree] [dirty=PERCENT] [remap] [mlock]`
//!
//! * `MEM_MIB` MiB of private anonymous memory filled with a known pattern;
//! * its own executable mapped privately (two pages; the second one written,
//!   so it holds an anonymous copy-on-write page);
//! * the log opened `O_WRONLY | O_APPEND` and a read fd on its executable at
//!   offset 1234 (fd numbers are printed on the first log line);
//! * a `SIGUSR1` handler counting deliveries, `SIGUSR2` blocked;
//! * with `eventfd` (a historical name), an extra netlink socket: a kind of
//!   fd the dump refuses (eventfds are supported now);
//! * with `threads N`, N extra threads (at most 64), thread `i` adding one
//!   to its own counter every `i + 1` ms;
//! * with `children N`, N children (copies of it, memory included) each
//!   appending `cI N` lines;
//! * with `clone-files`, one child sharing its descriptor table
//!   (`CLONE_FILES`), appending `f N` lines;
//! * with `pidns`, the process that runs (and whose pid is printed) is the
//!   init of a new pid namespace;
//! * with `tree`, children sharing the log fd: workers `w0`..`w2` in a
//!   process group led by `w0`, each appending `wI N` lines; a zombie child
//!   (exit status 7) never reaped; and a child of `w0` leading its own
//!   session, appending `g N` lines. Their pids are logged first as
//!   `tree W0 W1 W2 ZOMBIE` and `grand G`. Before forking, the root makes a
//!   pipe holding `PIPE_MESSAGE`, never read; all of the tree inherits both
//!   ends (logged as `pipe READ_FD WRITE_FD`). Worker `wI` also stores its
//!   `N` in slot `I` of a shared anonymous page, which the root logs as
//!   `shm A B C` after each of its own lines;
//! * with `dirty=PERCENT` (a decimal), every 100 ms it rewrites the first
//!   word of PERCENT % of the pages of its memory (a window moving through
//!   it);
//! * with `remap`, every 5th report it unmaps a 1 MiB region and maps a
//!   fresh one (often at the same address) filled with new values;
//! * with `mlock`, the first MiB of its memory is locked (`mlock`, in the
//!   process that runs: locks do not survive `fork`), which splits it into
//!   its own VMA;
//! * every descriptor inherited beyond stdio is closed first.
//!
//! It forks: the parent prints the child's pid on stdout and exits; the child
//! calls `setsid`, points stdio at `/dev/null` and appends
//! `n checksum sigusr1_count read_fd_offset [counter...]` to the log every
//! 100 ms (one counter per extra thread). With `dirty=` or `remap` the line
//! ends with `ok` or `bad`: the checksum recomputed from memory against the
//! one kept up to date with every write (so memory restored from stale
//! pages shows as `bad`).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{open, OFlag};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, Whence};

/// Offset the read fd on the executable is left at.
const READ_FD_OFFSET: i64 = 1234;
/// Multiplier of the memory pattern (word `i` holds `i * PATTERN`).
const PATTERN: u64 = 0x9e37_79b9_7f4a_7c15;

static SIGUSR1_COUNT: AtomicU64 = AtomicU64::new(0);
/// Most extra threads.
const MAX_THREADS: usize = 64;
/// One counter per extra thread.
static COUNTERS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGUSR1_COUNT.fetch_add(1, Ordering::Relaxed);
}

fn die(what: &str) -> ! {
    eprintln!("criu-workload: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

/// Maps `len` bytes; `fd` = None for anonymous memory.
fn map(len: usize, prot: libc::c_int, fd: Option<i32>) -> &'static mut [u64] {
    let (flags, fd) = match fd {
        Some(fd) => (libc::MAP_PRIVATE, fd),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping at an address the kernel picks; nothing else
    // refers to it, so handing out a unique slice over it is sound.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0);
        if p == libc::MAP_FAILED {
            die("mmap");
        }
        std::slice::from_raw_parts_mut(p.cast::<u64>(), len / 8)
    }
}

fn install_handler() {
    // SAFETY: `sigaction` with a zeroed struct plus a handler that only
    // touches an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction");
        }
    }
}

/// Sum of the first word of every page.
fn page_sum(mem: &[u64]) -> u64 {
    mem.iter()
        .step_by(WORDS_PER_PAGE)
        .fold(0u64, |s, w| s.wrapping_add(*w))
}

fn fold_file(sum: u64, file_page: &[u64]) -> u64 {
    file_page
        .iter()
        .fold(sum, |s, w| s.rotate_left(1).wrapping_add(*w))
}

fn checksum(mem: &[u64], file_page: &[u64]) -> u64 {
    fold_file(page_sum(mem), file_page)
}

/// 64-bit words in a page.
const WORDS_PER_PAGE: usize = 512;
/// Size of the region `remap` replaces.
const REMAP_LEN: usize = 1 << 20;

/// Fills a fresh remap region for report `n`; returns its page sum.
fn fill_region(region: &mut [u64], n: u64) -> u64 {
    for (i, w) in region.iter_mut().enumerate() {
        *w = (i as u64 ^ n).wrapping_mul(PATTERN);
    }
    page_sum(region)
}

/// The shared page of the `tree` option (null without it).
static SHARED: std::sync::atomic::AtomicPtr<AtomicU64> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Slot `i` of the shared page, if there is one.
fn shared_slot(i: usize) -> Option<&'static AtomicU64> {
    let p = SHARED.load(Ordering::Relaxed);
    // SAFETY: a non-null `SHARED` points at a page-sized shared mapping that
    // is never unmapped; slots 0..3 lie within it and are only accessed
    // atomically.
    (!p.is_null() && i < 3).then(|| unsafe { &*p.add(i) })
}

/// Appends `TAG N` lines to `log` every 100 ms, forever; with `slot`, also
/// stores `N` in that slot of the shared page.
fn log_forever(log: &mut std::fs::File, tag: &str, slot: Option<usize>) -> ! {
    for n in 0u64.. {
        if let Some(s) = slot.and_then(shared_slot) {
            s.store(n, Ordering::Relaxed);
        }
        if log.write_all(format!("{tag} {n}\n").as_bytes()).is_err() {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!("the counter never ends")
}

fn fork() -> Option<nix::unistd::Pid> {
    // SAFETY: called while single-threaded; the child only runs plain code.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        nix::unistd::ForkResult::Parent { child } => Some(child),
        nix::unistd::ForkResult::Child => None,
    }
}

/// What the `tree` option leaves unread in its pipe.
const PIPE_MESSAGE: &[u8] = b"unread pipe data\n";

/// The `tree` option (see the module docs). Returns in the root only.
fn spawn_tree(log: &mut std::fs::File) {
    use nix::unistd::{setpgid, Pid};
    // SAFETY: a fresh shared anonymous page at an address the kernel picks.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        die("mmap shared");
    }
    SHARED.store(page.cast(), Ordering::Relaxed);
    let (r, w) = nix::unistd::pipe().unwrap_or_else(|_| die("pipe"));
    nix::unistd::write(&w, PIPE_MESSAGE).unwrap_or_else(|_| die("write pipe"));
    let _ = writeln!(log, "pipe {} {}", r.into_raw_fd(), w.into_raw_fd());
    let mut workers = Vec::new();
    for i in 0..3 {
        let leader = workers.first().copied().unwrap_or(Pid::from_raw(0));
        match fork() {
            Some(child) => {
                let _ = setpgid(child, if i == 0 { child } else { leader });
                workers.push(child);
            }
            None => {
                let _ = setpgid(Pid::from_raw(0), leader);
                if i == 0 {
                    match fork() {
                        Some(grand) => {
                            let _ = writeln!(log, "grand {grand}");
                        }
                        None => {
                            nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
                            log_forever(log, "g", None);
                        }
                    }
                }
                log_forever(log, &format!("w{i}"), Some(i));
            }
        }
    }
    let zombie = match fork() {
        Some(z) => z,
        // SAFETY: _exit ends this child at once, without running anything.
        None => unsafe { libc::_exit(7) },
    };
    let _ = writeln!(
        log,
        "tree {} {} {} {zombie}",
        workers[0], workers[1], workers[2]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: criu-workload LOGPATH MEM_MIB [eventfd] [threads N] [tree] [dirty=PERCENT] [remap] [mlock]"
        );
        std::process::exit(2);
    }
    let log_path = &args[1];
    let mib: usize = args[2].parse().unwrap_or_else(|_| die("MEM_MIB"));
    let with_eventfd = args[3..].iter().any(|a| a == "eventfd");
    let with_tree = args[3..].iter().any(|a| a == "tree");
    let with_pidns = args[3..].iter().any(|a| a == "pidns");
    let with_clone_files = args[3..].iter().any(|a| a == "clone-files");
    let children: usize = args[3..]
        .iter()
        .position(|a| a == "children")
        .map(|i| {
            args.get(i + 4)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| die("children N"))
        })
        .unwrap_or(0);
    let threads: usize = args[3..]
        .iter()
        .position(|a| a == "threads")
        .map(|i| {
            args.get(i + 4)
                .and_then(|n| n.parse().ok())
                .filter(|&n| n <= MAX_THREADS)
                .unwrap_or_else(|| die("threads N"))
        })
        .unwrap_or(0);
    let dirty_percent: f64 = args[3..]
        .iter()
        .find_map(|a| a.strip_prefix("dirty="))
        .map_or(0.0, |p| p.parse().unwrap_or_else(|_| die("dirty=PERCENT")));
    let remap = args[3..].iter().any(|a| a == "remap");
    let with_mlock = args[3..].iter().any(|a| a == "mlock");
    let self_check = dirty_percent > 0.0 || remap;

    // Whatever the launcher leaked (pipes of a test harness...) would make
    // the fd table depend on who started us: start from stdio only.
    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };

    let mem = map(mib << 20, libc::PROT_READ | libc::PROT_WRITE, None);
    for (i, w) in mem.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(PATTERN);
    }

    let log = open(
        log_path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap_or_else(|_| die("open log"));
    let exe =
        open("/proc/self/exe", OFlag::O_RDONLY, Mode::empty()).unwrap_or_else(|_| die("open exe"));
    lseek(&exe, READ_FD_OFFSET, Whence::SeekSet).unwrap_or_else(|_| die("lseek"));
    let fmap = map(
        8192,
        libc::PROT_READ | libc::PROT_WRITE,
        Some(exe.as_raw_fd()),
    );
    for (i, w) in fmap[512..].iter_mut().enumerate() {
        *w = (i as u64) ^ PATTERN;
    }
    let efd = with_eventfd.then(|| {
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Netlink,
            nix::sys::socket::SockType::Raw,
            nix::sys::socket::SockFlag::empty(),
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )
        .unwrap_or_else(|_| die("netlink socket"))
    });

    install_handler();
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR2);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
        .unwrap_or_else(|_| die("sigprocmask"));

    if with_pidns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
            .unwrap_or_else(|_| die("unshare(CLONE_NEWPID)"));
    }
    // SAFETY: single-threaded here; the child only continues with plain code.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        nix::unistd::ForkResult::Parent { child } => {
            println!("{child}");
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Child => {}
    }
    nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
    if with_mlock {
        let len = (1 << 20).min(mem.len() * 8);
        // SAFETY: the range lies inside `mem`, which stays mapped for the
        // life of the process.
        if unsafe { libc::mlock(mem.as_ptr().cast(), len) } != 0 {
            die("mlock");
        }
    }
    let null = open("/dev/null", OFlag::O_RDWR, Mode::empty()).unwrap_or_else(|_| die("null"));
    for fd in 0..3 {
        // SAFETY: dup2 onto the stdio numbers, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            die("dup2");
        }
    }
    drop(null);

    // SAFETY: `log` is an fd we own; the File takes it over.
    let mut log = unsafe { std::fs::File::from_raw_fd(log.into_raw_fd()) };
    let efd_no = efd.as_ref().map_or(-1, |e| e.as_raw_fd());
    let _ = writeln!(
        log,
        "fds log={} exe={} eventfd={efd_no}",
        log.as_raw_fd(),
        exe.as_raw_fd()
    );
    if with_tree {
        spawn_tree(&mut log);
    }
    if with_clone_files {
        // SAFETY: a fork-like clone (no new stack, no CLONE_VM) while
        // single-threaded; the child only runs plain code.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_FILES | libc::SIGCHLD,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if ret < 0 {
            die("clone(CLONE_FILES)");
        }
        if ret == 0 {
            log_forever(&mut log, "f", None);
        }
    }
    for i in 0..children {
        if fork().is_none() {
            log_forever(&mut log, &format!("c{i}"), None);
        }
    }
    for (i, counter) in COUNTERS[..threads].iter().enumerate() {
        std::thread::spawn(move || loop {
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(i as u64 + 1));
        });
    }
    let exe: OwnedFd = exe;
    let _eventfd = efd;
    let file_page = &fmap[512..];
    let pages = mem.len() / WORDS_PER_PAGE;
    let per_tick = (pages as f64 * dirty_percent / 100.0) as usize;
    let mut cursor = 0usize;
    // The page sums as they should be, kept up to date with every write.
    let mut expect = page_sum(mem);
    let mut region = remap.then(|| map(REMAP_LEN, libc::PROT_READ | libc::PROT_WRITE, None));
    let mut region_sum = region.as_deref_mut().map_or(0, |r| fill_region(r, 0));
    for n in 0u64.. {
        for _ in 0..per_tick {
            let w = &mut mem[cursor * WORDS_PER_PAGE];
            let new = w.wrapping_add(n | 1).rotate_left(7);
            expect = expect.wrapping_sub(*w).wrapping_add(new);
            *w = new;
            cursor = (cursor + 1) % pages;
        }
        if n > 0 && n % 5 == 0 {
            if let Some(old) = region.take() {
                // SAFETY: `old` is the region mapped above; nothing refers to it after this.
                if unsafe { libc::munmap(old.as_mut_ptr().cast(), REMAP_LEN) } != 0 {
                    die("munmap");
                }
                let fresh = map(REMAP_LEN, libc::PROT_READ | libc::PROT_WRITE, None);
                region_sum = fill_region(fresh, n);
                region = Some(fresh);
            }
        }
        let sum = checksum(mem, file_page);
        let off = lseek(&exe, 0, Whence::SeekCur).unwrap_or(-1);
        let mut line = format!(
            "{n} {sum:x} {} {off}",
            SIGUSR1_COUNT.load(Ordering::Relaxed)
        );
        for c in &COUNTERS[..threads] {
            line.push_str(&format!(" {}", c.load(Ordering::Relaxed)));
        }
        if self_check {
            let region_now = region.as_deref().map_or(0, page_sum);
            let good = sum == fold_file(expect, file_page) && region_now == region_sum;
            line.push_str(if good { " ok" } else { " bad" });
        }
        line.push('\n');
        if let (Some(a), Some(b), Some(c)) = (shared_slot(0), shared_slot(1), shared_slot(2)) {
            let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
            line.push_str(&format!("shm {} {} {}\n", load(a), load(b), load(c)));
        }
        if log.write_all(line.as_bytes()).is_err() {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
