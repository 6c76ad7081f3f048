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
fn rust_criu_dump_reports_a_failure_not_a_hang() {
    require_root();
    let dir = TempDir::new("rust-criu");
    let images = std::fs::File::open(dir.path()).unwrap();
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    let mut target = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    criu.set_pid(i32::try_from(target.id()).unwrap());
    criu.set_images_dir_fd(std::os::fd::AsRawFd::as_raw_fd(&images));
    criu.set_log_file("dump.log".into());
    criu.set_log_level(4);
    criu.set_leave_running(true);
    let err = criu
        .dump()
        .expect_err("dump is not implemented yet: it must fail, not pretend");
    assert!(format!("{err:?}").contains("RpcFailed") || format!("{err}").contains("failed"));
    // The target was not touched.
    assert!(target.try_wait().unwrap().is_none(), "target still running");
    let log =
        std::fs::read_to_string(dir.path().join("dump.log")).expect("dump.log in the images dir");
    assert!(
        log.contains("Error"),
        "runc greps the log for Error lines: {log}"
    );
    target.kill().unwrap();
    target.wait().unwrap();
}
