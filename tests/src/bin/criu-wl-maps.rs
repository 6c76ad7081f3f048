//! Benchmark target with many small mappings: `criu-wl-maps LOGPATH COUNT`
//! maps COUNT private anonymous regions of two pages each, one page apart
//! and with alternating protections (so the kernel cannot merge them),
//! writes a known word into each page, then forks: the parent prints the
//! child's pid and exits; the child calls `setsid`, points stdio at
//! `/dev/null` and appends `n checksum ok|bad` to the log every 100 ms (the
//! checksum of every region recomputed against the one expected).

use std::io::Write;
use std::time::Duration;

const PAGE: usize = 4096;
/// Bytes of one region.
const REGION: usize = 2 * PAGE;
/// Multiplier of the pattern.
const PATTERN: u64 = 0x9e37_79b9_7f4a_7c15;

fn die(what: &str) -> ! {
    eprintln!("criu-wl-maps: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

fn checksum(regions: &[usize]) -> u64 {
    regions.iter().fold(0u64, |acc, &base| {
        (0..REGION / PAGE).fold(acc, |acc, p| {
            // SAFETY: every region is mapped readable for the life of the
            // process, `base + p * PAGE` is inside it and page aligned.
            let w = unsafe { std::ptr::read_volatile((base + p * PAGE) as *const u64) };
            acc.rotate_left(5) ^ w
        })
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: criu-wl-maps LOGPATH COUNT");
        std::process::exit(2);
    }
    let count: usize = args[2].parse().unwrap_or_else(|_| die("COUNT"));
    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };

    // One reservation, then every region mapped over it with a hole page
    // after each: nothing else can land in between.
    let stride = REGION + PAGE;
    // SAFETY: a fresh anonymous reservation; nothing refers to it yet.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            stride * count,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        die("reserve");
    }
    let mut regions = Vec::with_capacity(count);
    for i in 0..count {
        let at = base as usize + i * stride;
        // SAFETY: `at` lies inside our own reservation; MAP_FIXED replaces
        // only that part of it.
        let got = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                REGION,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            die("map a region");
        }
        for p in 0..REGION / PAGE {
            // SAFETY: the page was just mapped read-write.
            unsafe {
                std::ptr::write_volatile(
                    (at + p * PAGE) as *mut u64,
                    ((i * 2 + p) as u64).wrapping_mul(PATTERN),
                )
            };
        }
        if i % 2 == 1 {
            // SAFETY: our own region; read-only from now on.
            if unsafe { libc::mprotect(at as *mut libc::c_void, REGION, libc::PROT_READ) } != 0 {
                die("mprotect");
            }
        }
        regions.push(at);
    }
    let expected = checksum(&regions);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[1])
        .unwrap_or_else(|_| die("open log"));

    criu_tests::daemonize();
    for n in 0u64.. {
        let ok = if checksum(&regions) == expected {
            "ok"
        } else {
            "bad"
        };
        let _ = writeln!(log, "{n} {expected} {ok}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
