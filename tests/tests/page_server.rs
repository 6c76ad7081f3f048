//! Pages over TCP in CRIU's page-server protocol: our dump and pre-dumps
//! into our page server (CLI and RPC), then a restore from what the server
//! wrote plus the dump's other images.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuPageServerInfo, CriuReqType as T};
use criu_tests::{
    alive, bin, criu_ok, kill_and_reap, log_of, req, require_root, Connect, TempDir, Workload,
};

/// `criu page-server --port 0` in the foreground; returns it and its port.
fn start_server(dir: &Path, extra: &[&str]) -> (Child, u16) {
    let mut child = Command::new(bin("criu"))
        .args(["page-server", "-D", dir.to_str().unwrap(), "--port", "0"])
        .args(["-o", "ps.log", "-v4"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("page server printed {line:?}\n{}", log_of(dir, "ps.log")));
    assert_ne!(port, 0);
    (child, port)
}

fn finish_server(mut child: Child, dir: &Path) {
    let status = child.wait().unwrap();
    assert!(status.success(), "page server: {}", log_of(dir, "ps.log"));
}

#[test]
fn cli_pre_dump_and_dump_through_page_servers_then_restore() {
    require_root();
    let w = Workload::start(32, Some("dirty=5"));
    let top = TempDir::new("ps-cli");
    let (a, b) = (top.path().join("a"), top.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let pid = w.pid.to_string();

    let (server, port) = start_server(&a, &[]);
    let p = port.to_string();
    let d = a.to_str().unwrap();
    criu_ok(
        &[
            "pre-dump",
            "-t",
            &pid,
            "-D",
            d,
            "-o",
            "pre.log",
            "-v4",
            "--page-server",
            "--address",
            "127.0.0.1",
            "--port",
            &p,
        ],
        &a,
        "pre.log",
    );
    finish_server(server, &a);
    assert!(
        a.join("pages-65537.img").exists(),
        "server pages ids start at 0x10001"
    );
    let line = w.wait_for_line_after(None);
    w.wait_for_line_after(Some(line.n));

    // The second server has the first as parent.
    let (server, port) = start_server(&b, &["--prev-images-dir", "../a"]);
    let p = port.to_string();
    let d = b.to_str().unwrap();
    criu_ok(
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            d,
            "-o",
            "dump.log",
            "-v4",
            "--page-server",
            "--address",
            "127.0.0.1",
            "--port",
            &p,
            "--prev-images-dir",
            "../a",
        ],
        &b,
        "dump.log",
    );
    finish_server(server, &b);
    let last = w.last_line().unwrap().n;
    kill_and_reap(w.pid);
    // Most pages stayed in the first server's images.
    let size = |p: &Path| std::fs::metadata(p.join("pages-65537.img")).unwrap().len();
    assert!(size(&b) < size(&a) / 2);
    criu_ok(
        &["restore", "-d", "-D", d, "-o", "restore.log", "-v4"],
        &b,
        "restore.log",
    );
    assert!(alive(w.pid));
    let mut line = w.wait_for_line_after(Some(last));
    for _ in 0..2 {
        assert_eq!(line.consistent, Some(true), "{line:?}");
        line = w.wait_for_line_after(Some(line.n));
    }
}

#[test]
fn rpc_page_server_reports_pid_and_port_and_receives_a_dump() {
    require_root();
    let w = Workload::start(16, None);
    let before = w.wait_for_line_after(None);
    let dir = TempDir::new("ps-rpc");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let c = Connect::Swrk(bin("criu-swrk"));

    for ty in [T::PageServerChld, T::PageServer] {
        let mut r = req(ty);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            log_file: Some("ps.log".into()),
            log_level: Some(4),
            ps: Some(CriuPageServerInfo {
                address: Some("127.0.0.1".into()),
                port: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        });
        let client = c.open();
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, ty as i32);
        assert!(resp.success, "{resp:?}\n{}", log_of(dir.path(), "ps.log"));
        let ps = resp.ps.expect("ps in the answer");
        let (server, port) = (ps.pid.unwrap(), ps.port.unwrap());
        assert!(server > 0 && port > 0, "{ps:?}");
        assert!(ps.address.is_none() && ps.fd.is_none());
        assert!(alive(server), "the server runs after the answer");
        let _ = client.wait();

        // Dump into it (final state: left running for the first round).
        let mut r = req(T::Dump);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            pid: Some(w.pid),
            log_file: Some("dump.log".into()),
            log_level: Some(4),
            leave_running: Some(ty == T::PageServerChld),
            ps: Some(CriuPageServerInfo {
                address: Some("127.0.0.1".into()),
                port: Some(port),
                ..Default::default()
            }),
            ..Default::default()
        });
        let client = c.open();
        let resp = client.call(&r).unwrap();
        let _ = client.wait();
        assert!(resp.success, "{resp:?}\n{}", log_of(dir.path(), "dump.log"));
        // The server ends with its session.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{server}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                Instant::now() < deadline,
                "page server {server} still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    kill_and_reap(w.pid);
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let client = c.open();
    let resp = client.call(&r).unwrap();
    let _ = client.wait();
    assert!(
        resp.success,
        "{resp:?}\n{}",
        log_of(dir.path(), "restore.log")
    );
    let after = w.wait_for_line_after(Some(before.n));
    assert_eq!(
        after.checksum, before.checksum,
        "memory from the page server"
    );
}

#[test]
fn tls_is_refused_clearly() {
    require_root();
    let dir = TempDir::new("ps-tls");
    let out = Command::new(bin("criu"))
        .args([
            "page-server",
            "-D",
            dir.path().to_str().unwrap(),
            "--port",
            "0",
            "--tls",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls"), "{err}");
}
