//! rust-criu (the client youki uses, from crates.io) against our `criu`.

use criu_tests::{bin, kill_and_reap, require_root, TempDir, Workload};

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

/// The pid a task has inside its own pid namespace (last `NSpid:` value).
fn inner_pid(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().next_back().map(str::to_owned)
}

/// Our children that are the init of a pid namespace and run the workload.
fn namespace_inits() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"));
            ppid.map(str::trim) == Some(me.as_str())
                && status
                    .lines()
                    .any(|l| l.trim_end() == "Name:\tcriu-workload")
                && inner_pid(p).as_deref() == Some("1")
        })
        .collect()
}

/// rust-criu dumps the init of a pid namespace (as container runtimes
/// have it) and restores it into a new pid namespace, where it is pid 1
/// again and carries on.
#[test]
fn rust_criu_dumps_and_restores_a_pid_namespace_init() {
    require_root();
    let w = Workload::start(4, Some("pidns"));
    assert_eq!(inner_pid(w.pid).as_deref(), Some("1"));
    let dir = TempDir::new("rust-criu-pidns");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    criu.set_pid(w.pid);
    criu.set_images_dir_fd(std::os::fd::AsRawFd::as_raw_fd(&handle));
    criu.set_log_file("dump.log".into());
    criu.set_log_level(4);
    criu.dump()
        .unwrap_or_else(|e| panic!("rust-criu dump: {e:?}\n{}", log("dump.log")));
    kill_and_reap(w.pid);
    let dumped = w.last_line().unwrap();
    let mut criu = rust_criu::Criu::new_with_criu_path(bin("criu").display().to_string()).unwrap();
    criu.set_images_dir_fd(std::os::fd::AsRawFd::as_raw_fd(&handle));
    criu.set_log_file("restore.log".into());
    criu.set_log_level(4);
    criu.restore()
        .unwrap_or_else(|e| panic!("rust-criu restore: {e:?}\n{}", log("restore.log")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let restored = loop {
        if let Some(&p) = namespace_inits().first() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no restored init");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let next = w.wait_for_line_after(Some(dumped.n));
    kill_and_reap(restored);
    assert_ne!(
        restored, w.pid,
        "restored in a new pid namespace, with a new outer pid"
    );
    assert_eq!(next.checksum, dumped.checksum);
    assert_eq!(next.n, dumped.n + 1);
}
