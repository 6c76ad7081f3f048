use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuReq, CriuReqType};
use nix::fcntl::OFlag;

use super::{
    run, signal_ready, write_pidfile, Listener, ServiceConfig, ServiceError, SocketAccess,
};
use crate::client::Client;
use crate::test_util::{example_bin, TempDir};

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// Connects, retrying while the service thread is still binding.
fn connect(path: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(path) {
            Ok(client) => return client,
            Err(err) if Instant::now() > deadline => panic!("cannot connect: {err}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn bind_replaces_a_stale_file_with_a_0666_socket() {
    let dir = TempDir::new("svc-bind");
    let path = dir.path().join("criu_service.socket");
    std::fs::write(&path, b"stale").expect("stale file");
    let listener = Listener::bind(&path, SocketAccess::Everyone).expect("bind");
    let meta = std::fs::metadata(&path).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(mode_of(&path), 0o666);
    assert_eq!(listener.path(), path);
    // A second service on the same path replaces the first one's file.
    drop(listener);
    Listener::bind(&path, SocketAccess::Group(4243)).expect("rebind over the old socket file");
    assert_eq!(mode_of(&path), 0o660);
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&path).expect("stat")),
        4243
    );
    assert!(std::fs::metadata(&path)
        .expect("stat")
        .file_type()
        .is_socket());
}

#[test]
fn bind_rejects_paths_of_108_bytes_or_more() {
    let dir = TempDir::new("svc-long");
    let prefix = dir
        .path()
        .join("s")
        .into_os_string()
        .into_string()
        .expect("utf-8 path");
    let pad = |len: usize| PathBuf::from(format!("{prefix}{}", "x".repeat(len - prefix.len())));
    match Listener::bind(&pad(108), SocketAccess::Everyone) {
        Err(ServiceError::PathTooLong { len, .. }) => assert_eq!(len, 108),
        other => panic!("expected PathTooLong, got {other:?}"),
    }
    let longest = pad(107);
    Listener::bind(&longest, SocketAccess::Everyone).expect("107 bytes fit");
    assert!(std::fs::metadata(&longest)
        .expect("stat")
        .file_type()
        .is_socket());
}

#[test]
fn bind_in_a_missing_directory_fails() {
    let dir = TempDir::new("svc-missing");
    let path = dir.path().join("no/such/dir/sock");
    assert!(matches!(
        Listener::bind(&path, SocketAccess::Everyone),
        Err(ServiceError::Bind { .. })
    ));
}

#[test]
fn pidfile_is_exclusive_0600_and_has_no_newline() {
    let dir = TempDir::new("svc-pid");
    let path = dir.path().join("pidfile");
    write_pidfile(&path, 4321).expect("first write");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "4321");
    assert_eq!(mode_of(&path), 0o600);
    match write_pidfile(&path, 1) {
        Err(ServiceError::Pidfile { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AlreadyExists)
        }
        other => panic!("expected Pidfile error, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "4321");
}

#[test]
fn readiness_is_one_nul_byte_then_close() {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    signal_ready(w).expect("signal");
    let mut got = Vec::new();
    File::from(r).read_to_end(&mut got).expect("read to EOF");
    assert_eq!(got, vec![0u8]);
}

/// Starts `run()` on a thread (not daemonized) and waits for readiness.
fn start_service(dir: &TempDir, worker_exe: PathBuf) -> PathBuf {
    start_service_with_spares(dir, worker_exe, 0)
}

/// [`start_service`] with `spares` workers started ahead of time.
fn start_service_with_spares(dir: &TempDir, worker_exe: PathBuf, spares: usize) -> PathBuf {
    let address = dir.path().join("svc.sock");
    let pidfile = dir.path().join("svc.pid");
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let config = ServiceConfig {
        address: address.clone(),
        access: SocketAccess::Everyone,
        daemon: false,
        pidfile: Some(pidfile.clone()),
        status_fd: Some(w),
        worker_exe,
        spare_workers: spares,
    };
    // The accept loop runs until the test process exits.
    thread::spawn(move || run(config));
    let mut ready = Vec::new();
    File::from(r).read_to_end(&mut ready).expect("readiness");
    assert_eq!(ready, vec![0u8], "service signalled readiness");
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("pidfile"),
        std::process::id().to_string()
    );
    assert_eq!(mode_of(&address), 0o666);
    address
}

#[test]
fn service_hands_each_connection_to_a_fresh_worker() {
    let dir = TempDir::new("svc-run");
    let script = dir.path().join("worker.sh");
    // Written by a shell of its own: a descriptor open for writing in this
    // process could be inherited by a child another test thread forks, and
    // exec of the script would then fail with ETXTBSY.
    let written = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"")
        .arg("sh")
        .arg("#!/bin/bash\nprintf '%s %s %s' \"$1\" \"${CRIU_SERVICE_WORKER:-unset}\" \"$#\" >&\"$2\" 2>/dev/null\n")
        .arg(&script)
        .status()
        .expect("write script");
    assert!(written.success(), "write script");
    let address = start_service(&dir, script);

    // A client that vanishes at once, and one that sends garbage, do not
    // disturb the daemon.
    drop(connect(&address));
    let garbage = connect(&address);
    garbage.send_raw(&[0xff; 16]).ok();
    drop(garbage);

    // Without spare workers every connection gets a freshly started
    // worker, which here is a script reporting its arguments.
    for _ in 0..3 {
        let client = connect(&address);
        assert_eq!(client_packet(&client), "swrk 1 2");
    }
}

fn client_packet(client: &Client) -> String {
    // The script writes plain text, not a protobuf: read it raw.
    let bytes = client.recv_raw().expect("recv").expect("one packet");
    assert!(client.recv_raw().expect("recv").is_none(), "then EOF");
    String::from_utf8(bytes).expect("text")
}

#[test]
fn service_workers_speak_criu_rpc_in_service_mode() {
    let dir = TempDir::new("svc-rpc");
    // Spare workers take their connection over a control socket; with
    // several requests some are served by spares, some by fresh workers.
    let address = start_service_with_spares(&dir, example_bin("version_worker"), 2);
    for _ in 0..6 {
        let client = connect(&address);
        let r = client
            .call(&CriuReq {
                r#type: CriuReqType::Version as i32,
                ..Default::default()
            })
            .expect("version");
        assert!(r.success);
        let version = r.version.expect("version");
        assert_eq!(version.name.as_deref(), Some("service"));
        assert!(version.gitid.expect("fd report").ends_with("env=false"));
        assert!(
            client.recv().expect("recv").is_none(),
            "worker closed the connection"
        );
    }
}

/// Kills the daemon when the test ends, however it ends.
struct KillOnDrop(nix::unistd::Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Err(err) = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL) {
            eprintln!("cannot kill daemon {}: {err}", self.0);
        }
    }
}

#[test]
fn daemonized_service_detaches_then_serves() {
    let dir = TempDir::new("svc-daemon");
    let address = dir.path().join("svc.sock");
    let pidfile = dir.path().join("svc.pid");
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let mut cmd = std::process::Command::new(example_bin("service_daemon"));
    cmd.arg(&address).arg(&pidfile);
    let status_fd = crate::fds::pass_across_exec(&mut cmd, w);
    cmd.arg(status_fd.to_string())
        .arg(example_bin("version_worker"));
    let mut starter = cmd.spawn().expect("spawn service_daemon");
    drop(cmd);
    // daemon(3) forks; the process we started exits 0 at once.
    assert!(starter.wait().expect("wait").success());
    let mut ready = Vec::new();
    File::from(r).read_to_end(&mut ready).expect("readiness");
    assert_eq!(ready, vec![0u8]);

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .parse()
        .expect("decimal pid");
    let daemon = nix::unistd::Pid::from_raw(pid);
    let _guard = KillOnDrop(daemon);
    assert_ne!(u32::try_from(pid).expect("positive pid"), starter.id());
    assert_eq!(nix::unistd::getsid(Some(daemon)).expect("getsid"), daemon);

    let client = Client::connect(&address).expect("connect");
    let r = client
        .call(&CriuReq {
            r#type: CriuReqType::Version as i32,
            ..Default::default()
        })
        .expect("version");
    assert_eq!(r.version.and_then(|v| v.name).as_deref(), Some("service"));
}
