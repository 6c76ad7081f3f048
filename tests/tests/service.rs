//! The service daemon under many clients and misbehaving ones.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use criu_proto::rpc::{CriuFeatures, CriuReqType as T};
use criu_tests::{bin, req, require_root, Service, TempDir, FRONTENDS};
use criu_transport::client::Client;

fn version_ok(client: &Client) {
    let resp = client.call(&req(T::Version)).expect("VERSION answered");
    assert!(resp.success);
    assert_eq!(
        resp.version.map(|v| (v.major_number, v.minor_number)),
        Some((4, 2))
    );
}

#[test]
fn fifty_concurrent_clients_are_all_answered() {
    require_root();
    for name in FRONTENDS {
        let service = Service::start(&bin(name));
        let socket = service.socket.clone();
        let workers: Vec<_> = (0..50)
            .map(|i| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let client = Client::connect(&socket).expect("connect");
                    if i % 2 == 0 {
                        version_ok(&client);
                    } else {
                        let mut r = req(T::FeatureCheck);
                        r.features = Some(CriuFeatures {
                            pidfd_store: Some(true),
                            ..Default::default()
                        });
                        let resp = client.call(&r).expect("FEATURE_CHECK answered");
                        assert!(resp.success);
                        assert!(resp.features.is_some());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("client thread");
        }
    }
}

#[test]
fn service_keeps_answering_after_garbage_and_vanished_clients() {
    require_root();
    for name in FRONTENDS {
        let service = Service::start(&bin(name));
        for round in 0..10 {
            // Garbage.
            let client = Client::connect(&service.socket).unwrap();
            client
                .send_raw(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
                .unwrap();
            let _ = client.recv();
            // A client that connects and vanishes without a word.
            drop(Client::connect(&service.socket).unwrap());
            // One that vanishes in the middle of a notification exchange.
            let dir = TempDir::new("vanish");
            let mut opts = criu_tests::opts_with_dir(dir.path());
            opts.notify_scripts = Some(true);
            opts.pid = Some(i32::try_from(std::process::id()).unwrap());
            opts.leave_running = Some(true);
            let mut r = req(T::Dump);
            r.opts = Some(opts);
            let client = Client::connect(&service.socket).unwrap();
            client.send(&r).unwrap();
            let _ = client.recv();
            drop(client);
            // A well-behaved client is still served.
            version_ok(&Client::connect(&service.socket).unwrap());
            assert!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(service.pid() as i32), None)
                    .is_ok(),
                "daemon alive after round {round}"
            );
        }
    }
}

#[test]
fn service_socket_is_open_to_all_and_a_stale_file_is_replaced() {
    require_root();
    for name in FRONTENDS {
        let dir = TempDir::new("stale");
        let socket = dir.path().join("criu.sock");
        std::fs::write(&socket, b"stale").unwrap();
        let mut child = std::process::Command::new(bin(name))
            .args(["service", "--address"])
            .arg(&socket)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let client = loop {
            if let Ok(c) = Client::connect(&socket) {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "service never listened"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        version_ok(&client);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666, "socket mode of {name}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn daemon_mode_writes_pidfile_and_signals_readiness() {
    require_root();
    for name in FRONTENDS {
        let dir = TempDir::new("daemon");
        let socket = dir.path().join("criu.sock");
        let pidfile = dir.path().join("pidfile");
        // Readiness comes through --status-fd: one NUL byte once the
        // pidfile is written and the socket listens, then EOF.
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        let status = std::process::Command::new(bin(name))
            .args(["service", "--daemon", "--address"])
            .arg(&socket)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--status-fd")
            .arg(ready_w.as_raw_fd().to_string())
            .status()
            .unwrap();
        drop(ready_w);
        let mut ready = Vec::new();
        std::fs::File::from(ready_r)
            .read_to_end(&mut ready)
            .unwrap();
        assert_eq!(ready, [0], "exactly one NUL byte, then EOF");
        assert!(
            status.success(),
            "{name} service --daemon exits 0 once listening"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pidfile written")
            .parse()
            .expect("pidfile holds a bare decimal pid");
        version_ok(&Client::connect(&socket).unwrap());
        // A second daemon with the same pidfile refuses to start.
        let second = std::process::Command::new(bin(name))
            .args(["service", "--daemon", "--address"])
            .arg(dir.path().join("other.sock"))
            .arg("--pidfile")
            .arg(&pidfile)
            .status()
            .unwrap();
        assert!(!second.success(), "an existing pidfile is fatal");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
}
