//! rust-criu (the client youki uses, from crates.io) against our `criu`.

use criu_tests::{bin, require_root, TempDir};

#[test]
fn rust_criu_reads_our_version() {
    require_root();
    for name in criu_tests::FRONTENDS {
        let mut criu = rust_criu::Criu::new_with_criu_path(bin(name).display().to_string())
            .expect("rust-criu client");
        let version = criu.get_criu_version().expect("VERSION through rust-criu");
        assert_eq!(version, 40200, "{name}");
    }
}

#[test]
fn rust_criu_dump_of_a_vanished_pid_fails_with_esrch() {
    require_root();
    let dir = TempDir::new("rust-criu");
    let images = std::fs::File::open(dir.path()).unwrap();
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        i32::try_from(pid).unwrap()
    };
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    criu.set_pid(gone);
    criu.set_images_dir_fd(std::os::fd::AsRawFd::as_raw_fd(&images));
    criu.set_log_file("dump.log".into());
    criu.set_log_level(4);
    match criu.dump() {
        Err(rust_criu::CriuError::RpcFailed { cr_errno, .. }) => assert_eq!(cr_errno, 3),
        other => panic!("expected an ESRCH failure, got {other:?}"),
    }
    let log =
        std::fs::read_to_string(dir.path().join("dump.log")).expect("dump.log in the images dir");
    assert!(
        log.contains("Error"),
        "runc greps the log for Error lines: {log}"
    );
}
