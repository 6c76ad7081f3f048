//! A parent and a child sharing their fs information (`CLONE_FS`: cwd,
//! root, umask), which CRIU refuses to dump.
//!
//! `criu-wl-clone-fs LOGPATH`
//!
//! It forks: the parent prints the child's pid on stdout and exits. The
//! child (the root) calls `setsid`, points stdio at `/dev/null`, creates a
//! child with `clone(CLONE_FS)`, and both append `r N` and `s N` lines to
//! the log every 100 ms.

use std::io::Write;
use std::time::Duration;

fn die(what: &str) -> ! {
    eprintln!("criu-wl-clone-fs: {what} failed");
    std::process::exit(1)
}

fn log_forever(log: &mut std::fs::File, tag: &str) -> ! {
    for n in 0u64.. {
        if log.write_all(format!("{tag} {n}\n").as_bytes()).is_err() {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!("the counter never ends")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(log_path) = args.get(1) else {
        eprintln!("usage: criu-wl-clone-fs LOGPATH");
        std::process::exit(2);
    };
    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    criu_tests::daemonize();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|_| die("open log"));
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM) while
    // single-threaded; the child only runs plain code.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_FS | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        0 => log_forever(&mut log, "s"),
        r if r < 0 => die("clone(CLONE_FS)"),
        _ => log_forever(&mut log, "r"),
    }
}
