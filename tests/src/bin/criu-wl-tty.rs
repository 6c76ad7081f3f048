//! Terminal workloads for the tty tests (`tests/tests/tty.rs`).
//!
//! - `criu-wl-tty shell`: a job on its terminal (standard input and output).
//!   Every 100 ms without input it writes `tick N`; for each input line
//!   `L` it writes `got L`, and for `who` it writes
//!   `who pid=P pgid=G sid=S fg=F` (F: the terminal's foreground group).
//! - `criu-wl-tty job`: a tiny shell: it leads its session on the terminal,
//!   forks `shell` into a group of its own in the foreground (writing
//!   `job PID` first), reaps it when it ends and waits forever.
//! - `criu-wl-tty pair LOG`: a pty pair inside the tree. The process opens
//!   a pty (no echo, window 33x77) and forks a child that makes the slave
//!   its controlling terminal in a session of its own; the child waits for
//!   the file `LOG.go`, then answers each line `L` read from the slave with
//!   `pong L`. The parent writes `ping 0` at once (it stays queued in the
//!   terminal until the child reads), appends `pong ... ROWSxCOLS` to LOG
//!   for each answer and sends the next ping. The first line of LOG is
//!   `child PID INDEX`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{getpgrp, getpid, getsid, ForkResult};

fn die(what: &str) -> ! {
    eprintln!("criu-wl-tty: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(2)
}

fn foreground(fd: BorrowedFd<'_>) -> i32 {
    nix::unistd::tcgetpgrp(fd).map_or(-1, |p| p.as_raw())
}

fn shell() -> ! {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut n = 0u64;
    let mut line = Vec::new();
    loop {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0);
        if ready == 0 {
            n += 1;
            let _ = writeln!(out, "tick {n}");
            let _ = out.flush();
            continue;
        }
        let mut buf = [0u8; 256];
        let got = match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Ok(got) => got,
        };
        for &b in &buf[..got] {
            if b != b'\n' && b != b'\r' {
                line.push(b);
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            if text == "who" {
                let _ = writeln!(
                    out,
                    "who pid={} pgid={} sid={} fg={}",
                    getpid(),
                    getpgrp(),
                    getsid(None).map_or(-1, |s| s.as_raw()),
                    foreground(stdin.as_fd())
                );
            } else {
                let _ = writeln!(out, "got {text}");
            }
            let _ = out.flush();
        }
    }
}

fn job() -> ! {
    // SAFETY: single-threaded here; the child only calls async-signal-safe
    // functions before it runs `shell`, which allocates in a process of
    // its own.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        ForkResult::Child => {
            nix::unistd::setpgid(getpid(), getpid()).unwrap_or_else(|_| die("setpgid"));
            let stdin = std::io::stdin();
            // As a shell does: a background group taking the terminal
            // would be stopped by SIGTTOU.
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            // SAFETY: ignoring a signal installs no handler.
            let old =
                unsafe { sigaction(Signal::SIGTTOU, &ignore) }.unwrap_or_else(|_| die("sigaction"));
            nix::unistd::tcsetpgrp(stdin.as_fd(), getpgrp()).unwrap_or_else(|_| die("tcsetpgrp"));
            // SAFETY: puts back the action that was there.
            unsafe { sigaction(Signal::SIGTTOU, &old) }.unwrap_or_else(|_| die("sigaction"));
            println!("job {}", getpid());
            shell()
        }
        ForkResult::Parent { child } => {
            let _ = nix::unistd::setpgid(child, child);
            // Reaps the job once it is killed (after its dump), so that its
            // pid is free for the restore.
            let _ = nix::sys::wait::waitpid(child, None);
            loop {
                nix::unistd::pause();
            }
        }
    }
}

fn pair(log: &str) -> ! {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY)
        .unwrap_or_else(|_| die("posix_openpt"));
    nix::pty::grantpt(&master).unwrap_or_else(|_| die("grantpt"));
    nix::pty::unlockpt(&master).unwrap_or_else(|_| die("unlockpt"));
    let name = nix::pty::ptsname_r(&master).unwrap_or_else(|_| die("ptsname"));
    let index: u32 = name
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|_| die("open slave"));
    let mut t = nix::sys::termios::tcgetattr(&slave).unwrap_or_else(|_| die("tcgetattr"));
    t.local_flags
        .remove(nix::sys::termios::LocalFlags::ECHO | nix::sys::termios::LocalFlags::ECHONL);
    t.output_flags.remove(nix::sys::termios::OutputFlags::ONLCR);
    nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
        .unwrap_or_else(|_| die("tcsetattr"));
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a live `winsize`.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        die("TIOCSWINSZ");
    }
    let go = format!("{log}.go");
    // SAFETY: single-threaded; see `job`.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        ForkResult::Child => {
            drop(master);
            nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
            // SAFETY: TIOCSCTTY takes an integer argument.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
                die("TIOCSCTTY");
            }
            while std::fs::metadata(&go).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut reader = BufReader::new(std::fs::File::from(
                slave.try_clone().unwrap_or_else(|_| die("dup")),
            ));
            let mut writer = std::fs::File::from(slave);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let _ = writeln!(writer, "pong {}", line.trim_end());
            }
        }
        ForkResult::Parent { child } => {
            drop(slave);
            let mut out = OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
                .unwrap_or_else(|_| die("open log"));
            let _ = writeln!(out, "child {child} {index}");
            // SAFETY: `dup` of our own master gives a descriptor we own.
            let mut m =
                std::fs::File::from(unsafe { OwnedFd::from_raw_fd(libc::dup(master.as_raw_fd())) });
            let _ = m.write_all(b"ping 0\n");
            let mut n = 0u64;
            let mut pending = Vec::new();
            loop {
                let mut buf = [0u8; 256];
                let got = m.read(&mut buf).unwrap_or(0);
                if got == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                pending.extend_from_slice(&buf[..got]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..=end);
                    let mut w = libc::winsize {
                        ws_row: 0,
                        ws_col: 0,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCGWINSZ fills a live `winsize`.
                    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut w) };
                    let _ = writeln!(out, "{text} {}x{}", w.ws_row, w.ws_col);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = writeln!(m, "ping {n}");
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shell") => shell(),
        Some("job") => job(),
        Some("pair") if args.len() == 3 => pair(&args[2]),
        _ => {
            eprintln!("usage: criu-wl-tty shell | job | pair LOG");
            std::process::exit(2)
        }
    }
}
