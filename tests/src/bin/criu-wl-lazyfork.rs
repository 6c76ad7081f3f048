//! A lazy-restore target that forks all the time: `criu-wl-lazyfork LOG MIB`.
//!
//! It fills `MIB` MiB of private anonymous memory with a known pattern,
//! forks (the parent prints the child's pid and exits; the child calls
//! `setsid` and points stdio at `/dev/null`), then every 20 ms forks a
//! checker that verifies every word of the memory and exits 0 (right) or 1
//! (wrong), and appends `N ok` or `N bad` to the log. Forks while pages are
//! still missing exercise the lazy daemon's handling of `fork`: the child
//! must see the same memory.

use std::io::Write;
use std::time::Duration;

/// Multiplier of the memory pattern (word `i` holds `i * PATTERN`).
const PATTERN: u64 = 0x9e37_79b9_7f4a_7c15;

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-lazyfork: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(log), Some(mib)) = (
        args.get(1),
        args.get(2).and_then(|m| m.parse::<usize>().ok()),
    ) else {
        die("usage: criu-wl-lazyfork LOG MIB");
    };
    let mut mem = vec![0u64; mib << 17];
    for (i, w) in mem.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(PATTERN);
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|_| die("open the log"));
    criu_tests::daemonize();
    for n in 0u64.. {
        // SAFETY: single-threaded; the checker only reads memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let right = mem
                .iter()
                .enumerate()
                .all(|(i, w)| *w == (i as u64).wrapping_mul(PATTERN));
            // SAFETY: leaves the checker without running any destructor.
            unsafe { libc::_exit(i32::from(!right)) };
        }
        if pid < 0 {
            die("fork a checker");
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let line = format!("{n} {}\n", if ok { "ok" } else { "bad" });
        let _ = log.write_all(line.as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
}
