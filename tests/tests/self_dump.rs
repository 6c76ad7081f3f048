//! A process that dumps itself through the service (pycriu, as CRIU's own
//! tests do): the dump kills it, the restore brings it back blocked on its
//! RPC socket, and there it reads `{DUMP, success, restored: true}`.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{become_subreaper, bin, req, require_root, Service, TempDir};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

const SELF_DUMP: &str = r#"
import os, sys, pycriu
os.closerange(3, 65536)  # whatever the test harness leaked
os.setsid()
sock, images, report = sys.argv[1:4]
c = pycriu.criu()
c.use_sk(sock)
c.opts.images_dir_fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
c.opts.log_file = "dump.log"
c.opts.log_level = 4
resp = c.dump()
with open(report, "a") as f:
    f.write("restored=%s pid=%d\n" % (resp.restored, os.getpid()))
sys.exit(43 if resp.restored else 41)
"#;

#[test]
fn self_dump_through_the_service_then_restore_sees_restored() {
    require_root();
    become_subreaper();
    let service = Service::start(&bin("criu"));
    let dir = TempDir::new("self-dump");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let report = dir.path().join("report");
    let out = std::fs::File::create(dir.path().join("client.out")).unwrap();
    let mut client = Command::new("/usr/bin/python3")
        .args(["-c", SELF_DUMP])
        .arg(&service.socket)
        .arg(&images)
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("python3");
    let pid = i32::try_from(client.id()).unwrap();
    // Without leave_running the dump kills the requester: no answer is sent.
    let status = client.wait().unwrap();
    let log = std::fs::read_to_string(images.join("dump.log")).unwrap_or_default();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the dumped client is killed; client output: {}\ndump.log: {log}",
        std::fs::read_to_string(dir.path().join("client.out")).unwrap_or_default()
    );
    assert!(!report.exists(), "the original never saw an answer");

    let handle = std::fs::File::open(&images).unwrap();
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: handle.as_raw_fd(),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    let resp = criu_transport::client::Client::connect(&service.socket)
        .unwrap()
        .call(&r)
        .unwrap();
    assert!(
        resp.success,
        "{resp:?}\n{}",
        std::fs::read_to_string(images.join("restore.log")).unwrap_or_default()
    );
    assert_eq!(resp.restore.map(|r| r.pid), Some(pid));
    // The restored client reads the restored answer and exits 43.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(other) => panic!("restored client ended as {other:?}"),
            Err(nix::Error::ECHILD) => {
                // Not reparented to us yet.
                assert!(
                    std::time::Instant::now() < deadline,
                    "restored client never ended"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("waitpid: {e}"),
        }
    };
    assert_eq!(code, 43, "{:?}", std::fs::read_to_string(&report));
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        format!("restored=True pid={pid}\n")
    );
}
