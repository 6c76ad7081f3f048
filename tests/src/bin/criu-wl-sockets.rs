//! The unix socket and FIFO test target.
//!
//! `criu-wl-sockets DIR NAME [external=PATH] [external-dgram=NAME2] [scm]`
//!
//! It forks: the parent prints the child's pid on stdout and exits; the
//! child (the root) calls `setsid`, points stdio at `/dev/null` and sets up,
//! each with a message queued and never read before the check:
//!
//! * `stream`: a stream socketpair (`SO_SNDBUF` and `SO_PASSCRED` set on
//!   the end with nothing queued: CRIU refuses credentials in a queue);
//! * `dgram`: a datagram socketpair with two messages queued, the reading
//!   end `O_NONBLOCK`;
//! * `seqpacket`: a seqpacket socketpair whose other end belongs to a child
//!   process, which answers on it at check time;
//! * `accepted`: a connection accepted by a listener bound to
//!   `DIR/listen.sock`, both ends in the root;
//! * `in-flight`: a connection to that listener not accepted yet (accepted
//!   at check time);
//! * `shutdown`: a stream socketpair shut down for writing on one side;
//! * `dgram-server`: a datagram socket bound to the abstract name
//!   `\0NAME-dgram` and an unnamed socket connected to it;
//! * `semi-closed`: a stream socket whose peer wrote then closed;
//! * `fifo`: `DIR/fifo` opened for reading (`O_NONBLOCK`) and writing, with
//!   a 128 KiB pipe size;
//! * listeners on `DIR/listen.sock` and on the abstract name `\0NAME`;
//! * with `external=PATH`, a stream socket connected to the listener at
//!   PATH (outside the tree), its inode reported as `external-ino INO`; it
//!   sends `ext-stream` at check time (`external ok`);
//! * with `external-dgram=NAME2`, a datagram socket connected to the
//!   abstract name `\0NAME2` (outside the tree), which sends `ext-hello`
//!   at check time (`external-dgram ok`);
//! * with `scm`, a stream socketpair with a descriptor in flight
//!   (`SCM_RIGHTS`), which the dump refuses.
//!
//! It then writes `helper PID` (the seqpacket child) and `ready` to
//! `DIR/report` and waits for `DIR/go`. Then it
//! checks each object (the queued message arrives, a new one goes through,
//! boundaries and flags are kept) and appends `NAME ok` or `NAME FAIL why`
//! per object, then accepts one connection on each listener (a client
//! sends `hello`, gets `welcome`), appending `listen-path ok` and
//! `listen-abstract ok`, and finally `done`.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::socket::{
    accept, bind, connect, getsockopt, listen, recv, send, setsockopt, shutdown, socket,
    socketpair, sockopt, AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::Mode;

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-sockets: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

fn pair(ty: SockType) -> (OwnedFd, OwnedFd) {
    socketpair(AddressFamily::Unix, ty, None, SockFlag::empty())
        .unwrap_or_else(|_| die("socketpair"))
}

/// Receives one message within 10 s (polling without blocking).
fn recv_wait(fd: impl AsFd) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        match recv(fd.as_fd().as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

fn expect(fd: impl AsFd, want: &[u8]) -> Result<(), String> {
    let got = recv_wait(fd)?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "got {:?} instead of {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ))
    }
}

fn send_all(fd: impl AsFd, data: &[u8]) -> Result<(), String> {
    match send(fd.as_fd().as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(n) => Err(format!("short send {n}")),
        Err(e) => Err(format!("send: {e}")),
    }
}

/// A new message goes from `from` to `to`.
fn talks(from: impl AsFd, to: impl AsFd, msg: &[u8]) -> Result<(), String> {
    send_all(from, msg)?;
    expect(to, msg)
}

fn nonblocking(fd: impl AsFd) -> bool {
    fcntl(fd, FcntlArg::F_GETFL)
        .map(|f| OFlag::from_bits_retain(f).contains(OFlag::O_NONBLOCK))
        .unwrap_or(false)
}

fn check(ok: bool, why: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why.to_owned())
    }
}

/// Accepts one connection within 10 s on a non-blocking listener and plays
/// `hello` / `welcome`.
fn serve_one(listener: &OwnedFd) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match accept(listener.as_raw_fd()) {
            Ok(fd) => break fd,
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    // SAFETY: accept returned a fresh descriptor nothing else owns.
    let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
    expect(&conn, b"hello")?;
    send_all(&conn, b"welcome")
}

/// A descriptor on `DIR` to pass around (left open on purpose).
fn dir_fd(dir: &std::path::Path) -> i32 {
    use std::os::fd::IntoRawFd;
    open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
        .unwrap_or_else(|_| die("open dir"))
        .into_raw_fd()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-wl-sockets DIR NAME [external=PATH]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let name = args[2].clone();
    let external = args[3..].iter().find_map(|a| a.strip_prefix("external="));
    let external_dgram = args[3..]
        .iter()
        .find_map(|a| a.strip_prefix("external-dgram="));

    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    criu_tests::daemonize();

    // stream
    let (st_a, st_b) = pair(SockType::Stream);
    setsockopt(&st_a, sockopt::SndBuf, &100_000).unwrap_or_else(|_| die("sndbuf"));
    setsockopt(&st_a, sockopt::PassCred, &true).unwrap_or_else(|_| die("passcred"));
    let st_sndbuf = getsockopt(&st_a, sockopt::SndBuf).unwrap_or_else(|_| die("sndbuf"));
    send_all(&st_a, b"queued-stream").unwrap_or_else(|_| die("send"));

    // dgram
    let (dg_a, dg_b) = pair(SockType::Datagram);
    send_all(&dg_a, b"dg-one").unwrap_or_else(|_| die("send"));
    send_all(&dg_a, b"dg-two-longer").unwrap_or_else(|_| die("send"));
    fcntl(&dg_b, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap_or_else(|_| die("setfl"));

    // seqpacket, other end in a child
    let go = dir.join("go");
    let (sq_a, sq_b) = pair(SockType::SeqPacket);
    // SAFETY: single-threaded; the child runs plain code and exits.
    let helper = match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        nix::unistd::ForkResult::Child => {
            drop(sq_a);
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let r = expect(&sq_b, b"seq-queued").and_then(|()| send_all(&sq_b, b"seq-reply"));
            std::process::exit(i32::from(r.is_err()));
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(sq_b);
    send_all(&sq_a, b"seq-queued").unwrap_or_else(|_| die("send"));

    // listeners and an accepted connection
    let listen_path = dir.join("listen.sock");
    let lp = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    let lp_addr = UnixAddr::new(&listen_path).unwrap_or_else(|_| die("addr"));
    bind(lp.as_raw_fd(), &lp_addr).unwrap_or_else(|_| die("bind path"));
    listen(&lp, Backlog::new(7).unwrap()).unwrap_or_else(|_| die("listen"));
    let client = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    connect(client.as_raw_fd(), &lp_addr).unwrap_or_else(|_| die("connect"));
    let acc = accept(lp.as_raw_fd()).unwrap_or_else(|_| die("accept"));
    // SAFETY: accept returned a fresh descriptor nothing else owns.
    let acc = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(acc) };
    send_all(&client, b"accepted-queued").unwrap_or_else(|_| die("send"));
    let pending = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    connect(pending.as_raw_fd(), &lp_addr).unwrap_or_else(|_| die("connect"));
    fcntl(&lp, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap_or_else(|_| die("setfl"));
    let la = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    let la_addr = UnixAddr::new_abstract(name.as_bytes()).unwrap_or_else(|_| die("addr"));
    bind(la.as_raw_fd(), &la_addr).unwrap_or_else(|_| die("bind abstract"));
    listen(&la, Backlog::new(3).unwrap()).unwrap_or_else(|_| die("listen"));
    fcntl(&la, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap_or_else(|_| die("setfl"));

    // shutdown
    let (sh_a, sh_b) = pair(SockType::Stream);
    shutdown(sh_a.as_raw_fd(), Shutdown::Write).unwrap_or_else(|_| die("shutdown"));

    // dgram server with a connected client
    let srv = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    let srv_addr =
        UnixAddr::new_abstract(format!("{name}-dgram").as_bytes()).unwrap_or_else(|_| die("addr"));
    bind(srv.as_raw_fd(), &srv_addr).unwrap_or_else(|_| die("bind dgram"));
    let cli = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )
    .unwrap_or_else(|_| die("socket"));
    connect(cli.as_raw_fd(), &srv_addr).unwrap_or_else(|_| die("connect dgram"));
    send_all(&cli, b"to-server").unwrap_or_else(|_| die("send"));

    // semi-closed
    let (z_a, z_b) = pair(SockType::Stream);
    send_all(&z_a, b"last words").unwrap_or_else(|_| die("send"));
    drop(z_a);

    // fifo
    let fifo_path = dir.join("fifo");
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|_| die("mkfifo"));
    let fr = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .unwrap_or_else(|_| die("open fifo"));
    let fw = open(&fifo_path, OFlag::O_WRONLY, Mode::empty()).unwrap_or_else(|_| die("open fifo"));
    fcntl(&fw, FcntlArg::F_SETPIPE_SZ(128 * 1024)).unwrap_or_else(|_| die("pipe size"));
    nix::unistd::write(&fw, b"fifo-queued").unwrap_or_else(|_| die("write fifo"));

    let ext = external.map(|path| {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap_or_else(|_| die("socket"));
        let addr = UnixAddr::new(path).unwrap_or_else(|_| die("addr"));
        connect(s.as_raw_fd(), &addr).unwrap_or_else(|_| die("connect external"));
        s
    });

    let scm = args[3..].iter().any(|a| a == "scm").then(|| {
        let (a, b) = pair(SockType::Stream);
        let fds = [dir_fd(&dir)];
        let cm = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<UnixAddr>(
            a.as_raw_fd(),
            &[std::io::IoSlice::new(b"with-fd")],
            &cm,
            MsgFlags::empty(),
            None,
        )
        .unwrap_or_else(|_| die("sendmsg"));
        (a, b)
    });
    let ext_dgram = external_dgram.map(|name| {
        let s = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::empty(),
            None,
        )
        .unwrap_or_else(|_| die("socket"));
        let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap_or_else(|_| die("addr"));
        connect(s.as_raw_fd(), &addr).unwrap_or_else(|_| die("connect external dgram"));
        s
    });

    let report_path = dir.join("report");
    let mut report = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&report_path)
        .unwrap_or_else(|_| die("report"));
    let mut say = |line: String| {
        let _ = report.write_all(format!("{line}\n").as_bytes());
    };
    say(format!("helper {helper}"));
    if let Some(s) = &ext {
        let st = nix::sys::stat::fstat(s).unwrap_or_else(|_| die("fstat"));
        say(format!("external-ino {}", st.st_ino));
    }
    say("ready".into());
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut results: Vec<(&str, Result<(), String>)> = Vec::new();
    results.push((
        "stream",
        expect(&st_b, b"queued-stream")
            .and_then(|()| talks(&st_a, &st_b, b"stream-new"))
            .and_then(|()| talks(&st_b, &st_a, b"stream-back"))
            .and_then(|()| {
                check(
                    getsockopt(&st_a, sockopt::SndBuf) == Ok(st_sndbuf),
                    "SO_SNDBUF changed",
                )
            })
            .and_then(|()| {
                check(
                    getsockopt(&st_a, sockopt::PassCred) == Ok(true),
                    "SO_PASSCRED lost",
                )
            }),
    ));
    results.push((
        "dgram",
        check(nonblocking(&dg_b), "O_NONBLOCK lost")
            .and_then(|()| expect(&dg_b, b"dg-one"))
            .and_then(|()| expect(&dg_b, b"dg-two-longer"))
            .and_then(|()| talks(&dg_a, &dg_b, b"dg-three"))
            .and_then(|()| talks(&dg_b, &dg_a, b"dg-back")),
    ));
    results.push((
        "seqpacket",
        expect(&sq_a, b"seq-reply").and_then(|()| {
            let status = nix::sys::wait::waitpid(helper, None).map_err(|e| e.to_string())?;
            check(
                status == nix::sys::wait::WaitStatus::Exited(helper, 0),
                &format!("helper ended with {status:?}"),
            )
        }),
    ));
    results.push((
        "accepted",
        expect(&acc, b"accepted-queued")
            .and_then(|()| talks(&acc, &client, b"acc-new"))
            .and_then(|()| talks(&client, &acc, b"cli-new")),
    ));
    results.push(("in-flight", {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match accept(lp.as_raw_fd()) {
                Ok(fd) => {
                    // SAFETY: accept returned a fresh descriptor nothing else owns.
                    let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    break talks(&conn, &pending, b"late-accept")
                        .and_then(|()| talks(&pending, &conn, b"late-reply"));
                }
                Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => break Err(format!("accept: {e}")),
            }
        }
    }));
    results.push((
        "shutdown",
        recv_wait(&sh_b)
            .and_then(|d| check(d.is_empty(), "no end of file"))
            .and_then(|()| talks(&sh_b, &sh_a, b"still-open")),
    ));
    results.push((
        "dgram-server",
        expect(&srv, b"to-server").and_then(|()| talks(&cli, &srv, b"again")),
    ));
    results.push((
        "semi-closed",
        expect(&z_b, b"last words")
            .and_then(|()| recv_wait(&z_b))
            .and_then(|d| check(d.is_empty(), "no end of file")),
    ));
    results.push(("fifo", {
        let mut buf = [0u8; 64];
        check(nonblocking(&fr), "O_NONBLOCK lost")
            .and_then(|()| {
                check(
                    fcntl(&fw, FcntlArg::F_GETPIPE_SZ) == Ok(128 * 1024),
                    "pipe size changed",
                )
            })
            .and_then(|()| {
                let n = nix::unistd::read(&fr, &mut buf).map_err(|e| e.to_string())?;
                check(&buf[..n] == b"fifo-queued", "queued data lost")
            })
            .and_then(|()| {
                nix::unistd::write(&fw, b"fifo-new").map_err(|e| e.to_string())?;
                let n = nix::unistd::read(&fr, &mut buf).map_err(|e| e.to_string())?;
                check(&buf[..n] == b"fifo-new", "new data lost")
            })
    }));
    if let Some(s) = &ext {
        results.push(("external", send_all(s, b"ext-stream")));
    }
    if let Some(s) = &ext_dgram {
        results.push(("external-dgram", send_all(s, b"ext-hello")));
    }
    for (what, r) in results {
        match r {
            Ok(()) => say(format!("{what} ok")),
            Err(why) => say(format!("{what} FAIL {why}")),
        }
    }
    for (what, l) in [("listen-path", &lp), ("listen-abstract", &la)] {
        match serve_one(l) {
            Ok(()) => say(format!("{what} ok")),
            Err(why) => say(format!("{what} FAIL {why}")),
        }
    }
    drop(ext);
    drop(scm);
    say("done".into());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
