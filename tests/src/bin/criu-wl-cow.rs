//! Test target for memory that a process tree shares copy-on-write.
//!
//! `criu-wl-cow DIR`
//!
//! It forks: the parent prints the child's pid and exits. The child leads
//! its own session, maps a private anonymous region of [`PAGES`] pages,
//! fills it with a known pattern and forks three children; then each of
//! the four makes its own changes (see [`change`]): some pages rewritten,
//! some dropped with `MADV_DONTNEED` (zero again), some left shared. Each
//! appends `NAME pid PID` to `DIR/log` once, then every 20 ms
//! `NAME N ok`, or `NAME N bad PAGE` naming the first page that differs
//! from what it should hold.

use std::io::Write;
use std::time::Duration;

/// Pages of the shared region.
const PAGES: usize = 64;
const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;
/// The four processes: the root, then its children.
const NAMES: [&str; 4] = ["root", "same", "rewrite", "drop"];

/// What page `p` of process `role` holds: `None` for a zero page,
/// `Some(salt)` for the pattern with `salt`.
fn change(role: usize, p: usize) -> Option<u64> {
    match (role, p) {
        // The root rewrites a page its children keep and drops some.
        (0, 5) => Some(0x1111),
        (0, 50..=52) => None,
        (1, _) => Some(0),
        (2, 3 | 10..=12) => Some(0x2222),
        (3, 20..=29) => None,
        (3, 40) => Some(0x3333),
        _ => Some(0),
    }
}

fn word(p: usize, w: usize, salt: u64) -> u64 {
    ((p as u64) << 32 | w as u64) ^ 0x5eed_0000_0000 ^ salt
}

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-cow: {what} failed: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(2)
}

fn fork() -> bool {
    // SAFETY: the process is single-threaded.
    match unsafe { libc::fork() } {
        -1 => die("fork"),
        0 => true,
        _ => false,
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| die("usage"));
    if !fork() {
        return;
    }
    // SAFETY: plain syscalls without pointers.
    if unsafe { libc::setsid() } < 0 {
        die("setsid");
    }
    println!("{}", std::process::id());
    let _ = std::io::stdout().flush();
    let devnull = std::fs::File::open("/dev/null").unwrap_or_else(|_| die("open /dev/null"));
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(devnull.as_raw_fd(), 1);
        libc::dup2(devnull.as_raw_fd(), 2);
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(format!("{dir}/log"))
        .unwrap_or_else(|_| die("open the log"));
    // SAFETY: a fresh private anonymous mapping; only used through `mem`.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        die("mmap");
    }
    // SAFETY: the mapping above is PAGES * PAGE bytes, readable and writable.
    let mem = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u64>(), PAGES * WORDS) };
    for p in 0..PAGES {
        for w in 0..WORDS {
            mem[p * WORDS + w] = word(p, w, 0);
        }
    }
    let mut role = 0;
    for r in 1..NAMES.len() {
        if fork() {
            role = r;
            break;
        }
    }
    for p in 0..PAGES {
        match change(role, p) {
            Some(0) => {}
            Some(salt) => {
                for w in 0..WORDS {
                    mem[p * WORDS + w] = word(p, w, salt);
                }
            }
            None => {
                // SAFETY: one page inside the mapping; `mem` reads zero
                // there afterwards, as it should.
                if unsafe {
                    libc::madvise(
                        addr.cast::<u8>().add(p * PAGE).cast(),
                        PAGE,
                        libc::MADV_DONTNEED,
                    )
                } != 0
                {
                    die("madvise");
                }
            }
        }
    }
    let name = NAMES[role];
    let _ = log.write_all(format!("{name} pid {}\n", std::process::id()).as_bytes());
    for n in 0u64.. {
        let bad = (0..PAGES).find(|&p| {
            let want = change(role, p);
            (0..WORDS).any(|w| mem[p * WORDS + w] != want.map_or(0, |s| word(p, w, s)))
        });
        let line = match bad {
            None => format!("{name} {n} ok\n"),
            Some(p) => format!("{name} {n} bad {p}\n"),
        };
        if log.write_all(line.as_bytes()).is_err() {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
