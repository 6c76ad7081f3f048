//! A tree whose session and process group leaders are gone, the target of
//! the helper-task restore tests.
//!
//! `criu-wl-orphans LOGPATH`
//!
//! It forks: the parent prints the child's pid on stdout and exits. The
//! child (the root) calls `setsid`, points stdio at `/dev/null`, becomes a
//! child subreaper, then:
//!
//! * forks `A`, which calls `setsid` and forks `B`, then exits: `B` is
//!   reparented to the root, in session `A` and group `A`, both leaderless;
//! * forks `C`, which leads a new group and forks `D`, then exits: `D` is
//!   reparented to the root, in the root's session and in group `C`,
//!   leaderless;
//! * reaps `A` and `C`;
//! * forks `P`, which forks `Q` and only then calls `setsid`: `Q` stays in
//!   the root's session under a parent leading another one.
//!
//! * forks `L`, which calls `setsid` and forks `M`, which forks `X` and
//!   exits; `L` reaps `M`: `X` is reparented to the root, in the session
//!   of `L`, a live leader that is not its ancestor.
//!
//! Then `B`, `D`, `P`, `Q`, `L`, `X` and the root append `b N`, `d N`,
//! `p N`, `q N`, `l N`, `x N` and `r N` lines to the log every 100 ms; the
//! first line is `pids B D A C P Q L X`.

use std::io::Write;
use std::time::Duration;

use nix::unistd::{ForkResult, Pid};

fn die(what: &str) -> ! {
    eprintln!("criu-wl-orphans: {what} failed");
    std::process::exit(1)
}

fn fork() -> Option<Pid> {
    // SAFETY: the process is single-threaded; the child only runs plain code.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        ForkResult::Parent { child } => Some(child),
        ForkResult::Child => None,
    }
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

/// Forks a child that runs `then` in a new session (`session`) or a new
/// group, forks the returned grandchild and exits; returns both pids once
/// the child is reaped.
fn orphan(log: &mut std::fs::File, session: bool, tag: &str) -> (Pid, Pid) {
    let (rd, wr) = nix::unistd::pipe().unwrap_or_else(|_| die("pipe"));
    match fork() {
        Some(child) => {
            drop(wr);
            let mut buf = [0u8; 4];
            let got = nix::unistd::read(&rd, &mut buf).unwrap_or_else(|_| die("read"));
            if got != 4 {
                die("grandchild pid");
            }
            let _ = nix::sys::wait::waitpid(child, None);
            (child, Pid::from_raw(i32::from_ne_bytes(buf)))
        }
        None => {
            drop(rd);
            if session {
                nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
            } else {
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                    .unwrap_or_else(|_| die("setpgid"));
            }
            match fork() {
                Some(grand) => {
                    let _ = nix::unistd::write(&wr, &grand.as_raw().to_ne_bytes());
                    std::process::exit(0)
                }
                None => {
                    drop(wr);
                    log_forever(log, tag)
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(log_path) = args.get(1) else {
        eprintln!("usage: criu-wl-orphans LOGPATH");
        std::process::exit(2);
    };
    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    criu_tests::daemonize();
    nix::sys::prctl::set_child_subreaper(true).unwrap_or_else(|_| die("subreaper"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|_| die("open log"));
    let (a, b) = orphan(&mut log, true, "b");
    let (c, d) = orphan(&mut log, false, "d");
    let (rd, wr) = nix::unistd::pipe().unwrap_or_else(|_| die("pipe"));
    let p = match fork() {
        Some(p) => p,
        None => {
            drop(rd);
            match fork() {
                Some(q) => {
                    let _ = nix::unistd::write(&wr, &q.as_raw().to_ne_bytes());
                    drop(wr);
                    nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
                    log_forever(&mut log, "p")
                }
                None => {
                    drop(wr);
                    log_forever(&mut log, "q")
                }
            }
        }
    };
    drop(wr);
    let mut buf = [0u8; 4];
    if nix::unistd::read(&rd, &mut buf).ok() != Some(4) {
        die("Q's pid");
    }
    drop(rd);
    let q = i32::from_ne_bytes(buf);
    let (rd, wr) = nix::unistd::pipe().unwrap_or_else(|_| die("pipe"));
    let l = match fork() {
        Some(l) => l,
        None => {
            drop(rd);
            nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
            match fork() {
                Some(m) => {
                    drop(wr);
                    let _ = nix::sys::wait::waitpid(m, None);
                    log_forever(&mut log, "l")
                }
                None => match fork() {
                    Some(x) => {
                        let _ = nix::unistd::write(&wr, &x.as_raw().to_ne_bytes());
                        std::process::exit(0)
                    }
                    None => {
                        drop(wr);
                        log_forever(&mut log, "x")
                    }
                },
            }
        }
    };
    drop(wr);
    if nix::unistd::read(&rd, &mut buf).ok() != Some(4) {
        die("X's pid");
    }
    drop(rd);
    let x = i32::from_ne_bytes(buf);
    // One write, so the other tasks' lines cannot land inside it.
    let line = format!("pids {b} {d} {a} {c} {p} {q} {l} {x}\n");
    let _ = log.write_all(line.as_bytes());
    log_forever(&mut log, "r")
}
