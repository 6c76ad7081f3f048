//! CRIU-RPC through every front-end, in swrk mode and through the service:
//! what a CRIU client sees on the wire and in the worker's exit status.

use std::os::fd::AsRawFd;

use criu_proto::rpc::{CriuFeatures, CriuOpts, CriuReqType as T, CriuResp};
use criu_proto::Message;
use criu_tests::{
    bin, exit_code, opts_with_dir, req, require_root, Connect, Service, TempDir, FRONTENDS,
};

/// Every front-end reached both ways: as a swrk worker and as a service.
fn each_connection(mut scenario: impl FnMut(&Connect)) {
    require_root();
    for name in FRONTENDS {
        let path = bin(name);
        scenario(&Connect::Swrk(path.clone()));
        let service = Service::start(&path);
        scenario(&Connect::Service(service.socket.clone()));
    }
}

fn finish(client: criu_transport::client::Client, connect: &Connect, expected: i32) {
    if connect.is_swrk() {
        let status = client.wait().expect("wait for worker");
        assert_eq!(
            exit_code(status),
            expected,
            "worker exit status via {connect:?}"
        );
    }
}

fn assert_ok(resp: &CriuResp, ty: T) {
    assert_eq!(resp.r#type, ty as i32, "response type: {resp:?}");
    assert!(resp.success, "request {ty:?} failed: {resp:?}");
}

#[test]
fn version_reports_criu_4_2_and_our_name() {
    each_connection(|c| {
        let client = c.open();
        let resp = client.call(&req(T::Version)).unwrap();
        assert_ok(&resp, T::Version);
        let v = resp.version.expect("version present");
        assert_eq!((v.major_number, v.minor_number), (4, 2));
        assert_eq!(v.gitid, None, "a release build sends no gitid");
        assert_eq!(v.sublevel, None);
        assert!(v.name.unwrap_or_default().starts_with("criu-rs"));
        finish(client, c, 0);
    });
}

#[test]
fn check_succeeds_on_this_kernel_without_a_log() {
    each_connection(|c| {
        let client = c.open();
        let resp = client.call(&req(T::Check)).unwrap();
        assert_ok(&resp, T::Check);
        assert_eq!(resp.cr_errno, None);
        finish(client, c, 0);
    });
}

#[test]
fn check_log_file_rules() {
    each_connection(|c| {
        // A log file with a directory part is refused with CRIU's phrase.
        let client = c.open();
        let mut r = req(T::Check);
        r.opts = Some(CriuOpts {
            log_file: Some("/foo/bar.log".into()),
            ..Default::default()
        });
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, T::Check as i32);
        assert!(!resp.success);
        let msg = resp.cr_errmsg.unwrap_or_default();
        assert!(
            msg.contains("No subdirs are allowed in log_file name"),
            "{msg}"
        );
        finish(client, c, 0);

        // With a work directory the log lands there and is not empty.
        let dir = TempDir::new("check-log");
        let client = c.open();
        let mut opts = opts_with_dir(dir.path());
        opts.log_file = Some("check.log".into());
        opts.log_level = Some(4);
        let mut r = req(T::Check);
        r.opts = Some(opts);
        assert_ok(&client.call(&r).unwrap(), T::Check);
        finish(client, c, 0);
        let log = std::fs::metadata(dir.path().join("check.log")).expect("check.log written");
        assert!(log.len() > 0);
    });
}

#[test]
fn feature_check_answers_all_three_fields() {
    each_connection(|c| {
        let client = c.open();
        let mut r = req(T::FeatureCheck);
        r.features = Some(CriuFeatures {
            mem_track: Some(true),
            lazy_pages: Some(true),
            pidfd_store: Some(true),
        });
        let resp = client.call(&r).unwrap();
        assert_ok(&resp, T::FeatureCheck);
        let f = resp.features.expect("features present");
        // Memory tracking (uffd-wp async + PAGEMAP_SCAN) and lazy restore
        // (userfaultfd with its non-cooperative events) work here; the
        // engine keeps no pidfds yet: false until its issue lands, whatever
        // the kernel has.
        assert_eq!(f.mem_track, Some(true));
        assert_eq!(f.lazy_pages, Some(true));
        assert_eq!(f.pidfd_store, Some(false));
        finish(client, c, 0);

        let client = c.open();
        let mut r = req(T::FeatureCheck);
        r.features = Some(CriuFeatures::default());
        let f = client.call(&r).unwrap().features.expect("features present");
        assert_eq!(
            (f.mem_track, f.lazy_pages, f.pidfd_store),
            (Some(false), Some(false), Some(false))
        );
        finish(client, c, 0);

        // Without `features` the request fails (as CRIU's probe child does).
        let client = c.open();
        let resp = client.call(&req(T::FeatureCheck)).unwrap();
        assert_eq!(resp.r#type, T::FeatureCheck as i32);
        assert!(!resp.success);
        assert_eq!(resp.features, None);
        finish(client, c, 0);
    });
}

#[test]
fn cpuinfo_dump_then_check_and_a_doctored_image_fails() {
    each_connection(|c| {
        let dir = TempDir::new("cpuinfo");
        // images_dir_fd: a number in the client's table, opened by the worker
        // through /proc/<peer>/fd/<n>.
        let handle = std::fs::File::open(dir.path()).unwrap();
        let opts = CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            log_file: Some("cpuinfo.log".into()),
            ..Default::default()
        };
        let client = c.open();
        let mut r = req(T::CpuinfoDump);
        r.opts = Some(opts.clone());
        assert_ok(&client.call(&r).unwrap(), T::CpuinfoDump);
        finish(client, c, 0);
        let img = dir.path().join("cpuinfo.img");
        let bytes = std::fs::read(&img).expect("cpuinfo.img written");
        assert_eq!(
            &bytes[..8],
            &[0x19, 0x43, 0x56, 0x54, 0x13, 0x40, 0x40, 0x61]
        );
        assert!(
            dir.path().join("cpuinfo.log").exists(),
            "log in the images dir"
        );

        let client = c.open();
        let mut r = req(T::CpuinfoCheck);
        r.opts = Some(opts.clone());
        assert_ok(&client.call(&r).unwrap(), T::CpuinfoCheck);
        finish(client, c, 0);

        // A CPU with every instruction feature this one may lack: the check
        // (FPU|INS by default, as CRIU) must fail.
        let mut entry = criu_proto::images::CpuinfoEntry::decode(&bytes[12..]).unwrap();
        let x86 = &mut entry.x86_entry[0];
        x86.capability.iter_mut().for_each(|word| *word = u32::MAX);
        let payload = entry.encode_to_vec();
        let mut doctored = bytes[..8].to_vec();
        doctored.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        doctored.extend_from_slice(&payload);
        std::fs::write(&img, doctored).unwrap();
        let client = c.open();
        let mut r = req(T::CpuinfoCheck);
        r.opts = Some(opts);
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, T::CpuinfoCheck as i32);
        assert!(
            !resp.success,
            "a doctored cpuinfo.img must not pass: {resp:?}"
        );
        finish(client, c, 0);
    });
}

#[test]
fn keep_open_serves_two_requests_on_one_socket() {
    each_connection(|c| {
        let client = c.open();
        let mut r = req(T::Version);
        r.keep_open = Some(true);
        assert_ok(&client.call(&r).unwrap(), T::Version);
        let mut r = req(T::FeatureCheck);
        r.features = Some(CriuFeatures {
            mem_track: Some(true),
            ..Default::default()
        });
        assert_ok(&client.call(&r).unwrap(), T::FeatureCheck);
        // The second request had no keep_open: the worker ends by itself.
        assert!(
            client.recv().unwrap().is_none(),
            "connection ends after the last reply"
        );
        finish(client, c, 0);

        // A chain the client ends by closing: exit 255.
        let mut client = c.open();
        let mut r = req(T::Version);
        r.keep_open = Some(true);
        assert_ok(&client.call(&r).unwrap(), T::Version);
        client.close();
        finish(client, c, 255);
    });
}

#[test]
fn forbidden_keep_open_drops_the_connection_silently() {
    each_connection(|c| {
        for ty in [T::Dump, T::Check, T::Restore, T::WaitPid] {
            let client = c.open();
            let mut r = req(ty);
            r.keep_open = Some(true);
            r.opts = Some(opts_with_dir(std::path::Path::new("/tmp")));
            client.send(&r).unwrap();
            assert!(
                client.recv().unwrap().is_none(),
                "{ty:?} with keep_open gets no reply"
            );
            finish(client, c, 255);
        }
    });
}

#[test]
fn invalid_types_get_empty_failure() {
    each_connection(|c| {
        for ty in [0, T::Notify as i32, 99] {
            let client = c.open();
            let mut r = req(T::Empty);
            r.r#type = ty;
            let resp = client.call(&r).unwrap();
            assert_eq!(resp.r#type, T::Empty as i32, "type {ty}");
            assert!(!resp.success);
            assert!(client.recv().unwrap().is_none(), "connection ends");
            finish(client, c, 255);
        }
    });
}

#[test]
fn garbage_and_oversized_packets_end_the_connection() {
    each_connection(|c| {
        let client = c.open();
        client.send_raw(&[0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        // Either a clean close or {EMPTY, false} then close.
        if let Some((resp, _)) = client.recv().unwrap() {
            assert_eq!(resp.r#type, T::Empty as i32);
            assert!(!resp.success);
            assert!(client.recv().unwrap().is_none());
        }
        finish(client, c, 255);

        let client = c.open();
        // Larger than any request the worker accepts; root may raise the
        // send buffer so that the kernel carries such a packet at all.
        nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::SndBufForce, &(16 << 20))
            .expect("SO_SNDBUFFORCE");
        let big = vec![0x0a_u8; criu_transport::MAX_PACKET + 4096];
        client.send_raw(&big).unwrap();
        if let Some((resp, _)) = client.recv().unwrap() {
            assert_eq!(resp.r#type, T::Empty as i32);
            assert!(!resp.success);
            assert!(resp.encoded_len() <= 1024);
        }
        finish(client, c, 255);

        // Closing before any request: exit 255.
        let mut client = c.open();
        client.close();
        finish(client, c, 255);
    });
}

#[test]
fn wait_pid_of_a_non_child_fails_without_errno() {
    each_connection(|c| {
        let client = c.open();
        let mut r = req(T::WaitPid);
        r.pid = Some(1);
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, T::WaitPid as i32);
        assert!(!resp.success);
        assert_eq!(
            resp.cr_errno, None,
            "CRIU sends no cr_errno on WAIT_PID failures"
        );
        finish(client, c, 0);
    });
}

#[test]
fn wait_pid_returns_the_raw_status_of_a_worker_child() {
    require_root();
    for name in FRONTENDS {
        // The shell forks a child and then execs the worker in its place, so
        // the child belongs to the worker, as a PAGE_SERVER_CHLD page server would.
        let dir = TempDir::new("waitpid");
        let pidfile = dir.path().join("child.pid");
        let script = format!(
            "(sleep 0.2; exit 7) & echo $! > {}; exec {} \"$@\"",
            pidfile.display(),
            bin(name).display()
        );
        let client = criu_transport::client::Client::spawn_swrk(
            std::path::Path::new("/bin/sh"),
            &["-c", &script, "sh"],
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = text.trim().parse::<u32>() {
                    break pid;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child pid never written"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let mut r = req(T::WaitPid);
        r.pid = Some(pid);
        let resp = client.call(&r).unwrap();
        assert_ok(&resp, T::WaitPid);
        let status = resp.status.expect("status present");
        assert_eq!(status & 0x7f, 0, "WIFEXITED");
        assert_eq!((status >> 8) & 0xff, 7, "WEXITSTATUS");
        assert_eq!(exit_code(client.wait().unwrap()), 0);
    }
}

#[test]
fn notify_round_trip_refusal_and_vanishing_client() {
    each_connection(|c| {
        let w = criu_tests::Workload::start(1, None);
        let dir = TempDir::new("notify");
        let mut opts = opts_with_dir(dir.path());
        opts.notify_scripts = Some(true);
        opts.pid = Some(w.pid);
        let mut r = req(T::Dump);
        r.opts = Some(opts);

        // Refused: the dump is aborted at the first notification, before
        // anything is frozen; the target keeps running.
        let client = c.open();
        let mut seen = Vec::new();
        let resp = client
            .call_with_notify(&r, |n, fd| {
                assert!(fd.is_none(), "only orphan-pts-master carries an fd");
                seen.push(n.script.clone().unwrap_or_default());
                false
            })
            .unwrap();
        assert_eq!(seen, ["pre-dump"]);
        assert_eq!(resp.r#type, T::Dump as i32);
        assert!(!resp.success);
        assert_eq!(resp.dump.as_ref().and_then(|d| d.restored), Some(false));
        assert!(resp.cr_errmsg.unwrap_or_default().contains("pre-dump"));
        finish(client, c, 1);
        assert!(criu_tests::alive(w.pid));

        // The client vanishes while the worker waits for the ack.
        let mut client = c.open();
        client.send(&r).unwrap();
        let (first, _) = client.recv().unwrap().expect("a notification");
        assert_eq!(first.r#type, T::Notify as i32);
        client.close();
        finish(client, c, 1);
        let line = w.last_line().unwrap();
        w.wait_for_line_after(Some(line.n));
    });
}

#[test]
fn dumping_an_ancestor_of_the_worker_is_refused() {
    each_connection(|c| {
        // The test process started the worker (or the service): dumping it
        // would dump the worker too.
        let dir = TempDir::new("self");
        let mut opts = opts_with_dir(dir.path());
        opts.pid = Some(i32::try_from(std::process::id()).unwrap());
        opts.leave_running = Some(true);
        let mut r = req(T::Dump);
        r.opts = Some(opts);
        let client = c.open();
        let resp = client.call(&r).unwrap();
        assert!(!resp.success);
        let msg = resp.cr_errmsg.unwrap_or_default();
        assert!(
            msg.contains("The criu itself is within dumped tree"),
            "{msg}"
        );
        finish(client, c, 1);
    });
}

#[test]
fn bad_options_get_ebadrqc_with_the_type_specific_fields() {
    each_connection(|c| {
        let dir = TempDir::new("badopts");
        let mut opts = opts_with_dir(dir.path());
        opts.log_file = Some("../file.log".into());
        let mut r = req(T::Dump);
        r.opts = Some(opts);
        let client = c.open();
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, T::Dump as i32);
        assert!(!resp.success);
        assert_eq!(resp.cr_errno, Some(56));
        assert_eq!(resp.dump.and_then(|d| d.restored), Some(false));
        finish(client, c, 1);

        // Neither images_dir_fd nor images_dir.
        let mut r = req(T::Restore);
        r.opts = Some(CriuOpts {
            images_dir_fd: -1,
            ..Default::default()
        });
        let client = c.open();
        let resp = client.call(&r).unwrap();
        assert_eq!(resp.r#type, T::Restore as i32);
        assert!(!resp.success);
        assert_eq!(resp.cr_errno, Some(56));
        assert!(resp.restore.is_some(), "restore{{pid}} is always present");
        finish(client, c, 1);
    });
}

#[test]
fn page_server_with_tls_fails_clearly() {
    each_connection(|c| {
        let dir = TempDir::new("pending");
        for ty in [T::PageServer, T::PageServerChld] {
            let mut r = req(ty);
            r.opts = Some(CriuOpts {
                tls: Some(true),
                ..opts_with_dir(dir.path())
            });
            let client = c.open();
            let resp = client.call(&r).unwrap();
            assert_eq!(resp.r#type, ty as i32);
            assert!(!resp.success, "{ty:?} must not fake success");
            assert!(resp.ps.is_none());
            let msg = resp.cr_errmsg.unwrap_or_default();
            assert!(msg.contains("tls"), "{ty:?}: {msg}");
            finish(client, c, 0);
        }
    });
}
