//! The service under load: many concurrent clients mixing cheap requests and
//! real dumps, and many sequential dump/restore cycles of one process. Every
//! request must be answered correctly and the daemon must not grow: no
//! leftover workers, no leaked descriptors, flat memory.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{
    alive, become_subreaper, bin, kill_and_reap, req, require_root, Service, TempDir, Workload,
};
use criu_transport::client::Client;

/// What the daemon holds: children, open descriptors, resident memory (KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    children: usize,
    fds: usize,
    rss_kib: u64,
}

fn footprint(pid: u32) -> Footprint {
    let children: usize = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            std::fs::read_to_string(t.join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    Footprint {
        children,
        fds,
        rss_kib,
    }
}

/// Waits (up to 20 s) until the daemon holds no more children and
/// descriptors than `before`, and returns what it holds then.
fn settled(pid: u32, before: Footprint) -> Footprint {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = footprint(pid);
        if (now.children <= before.children && now.fds <= before.fds) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Resident memory may move a little (allocator caches, the spare-worker
/// channel); it must not grow with the number of requests.
const RSS_MARGIN_KIB: u64 = 4096;

fn dump_opts(dir: &std::fs::File, pid: i32) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        leave_running: Some(true),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    }
}

#[test]
fn two_hundred_concurrent_clients_with_real_dumps() {
    require_root();
    become_subreaper();
    let service = Service::start(&bin("criu-serviced"));
    // A first round trip so that the spare workers exist before measuring.
    let resp = Client::connect(&service.socket)
        .unwrap()
        .call(&req(T::Version))
        .unwrap();
    assert!(resp.success);
    std::thread::sleep(Duration::from_millis(500));
    let before = footprint(service.pid());

    let workloads: Vec<Workload> = (0..20).map(|_| Workload::start(1, None)).collect();
    let dirs: Vec<TempDir> = (0..20).map(|_| TempDir::new("load-dump")).collect();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..200usize {
            let socket = service.socket.clone();
            let target = (i % 10 == 0).then(|| (&workloads[i / 10], dirs[i / 10].path()));
            handles.push(s.spawn(move || {
                let client = Client::connect(&socket).expect("connect");
                match target {
                    Some((w, dir)) => {
                        let handle = std::fs::File::open(dir).unwrap();
                        let mut r = req(T::Dump);
                        r.opts = Some(dump_opts(&handle, w.pid));
                        let resp = client.call(&r).expect("DUMP answered");
                        assert!(
                            resp.success,
                            "dump of {}: {resp:?}\n{}",
                            w.pid,
                            std::fs::read_to_string(dir.join("dump.log")).unwrap_or_default()
                        );
                        assert!(dir.join("inventory.img").exists());
                    }
                    None if i % 2 == 0 => {
                        let resp = client.call(&req(T::Version)).expect("VERSION answered");
                        assert!(resp.success);
                        assert_eq!(resp.version.map(|v| v.major_number), Some(4));
                    }
                    None => {
                        let resp = client.call(&req(T::Check)).expect("CHECK answered");
                        assert!(resp.success, "CHECK: {resp:?}");
                    }
                }
            }));
        }
        for h in handles {
            h.join().expect("client thread");
        }
    });
    for w in &workloads {
        let line = w.wait_for_line_after(None);
        w.wait_for_line_after(Some(line.n));
    }
    let after = settled(service.pid(), before);
    assert!(
        after.children <= before.children,
        "workers left: {before:?} -> {after:?}"
    );
    assert!(
        after.fds <= before.fds,
        "fds leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + RSS_MARGIN_KIB,
        "daemon memory grew: {before:?} -> {after:?}"
    );
}

/// Sequential dump (killing the target) and restore cycles of one process
/// through the service. `criu-soak` runs the same loop 1,000 times and
/// prints figures.
#[test]
fn one_hundred_dump_restore_cycles_keep_the_process_and_the_daemon_intact() {
    require_root();
    become_subreaper();
    let service = Service::start(&bin("criu-serviced"));
    let w = Workload::start(1, None);
    let first = w.wait_for_line_after(None);
    let dir = TempDir::new("load-cycles");
    let mut before = None;
    for cycle in 0..100 {
        let handle = std::fs::File::open(dir.path()).unwrap();
        let mut opts = dump_opts(&handle, w.pid);
        opts.leave_running = None;
        let mut r = req(T::Dump);
        r.opts = Some(opts);
        let resp = Client::connect(&service.socket).unwrap().call(&r).unwrap();
        assert!(resp.success, "cycle {cycle} dump: {resp:?}");
        kill_and_reap(w.pid);
        let mut r = req(T::Restore);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            log_file: Some("restore.log".into()),
            ..Default::default()
        });
        let resp = Client::connect(&service.socket).unwrap().call(&r).unwrap();
        assert!(
            resp.success,
            "cycle {cycle} restore: {resp:?}\n{}",
            std::fs::read_to_string(dir.path().join("restore.log")).unwrap_or_default()
        );
        assert!(alive(w.pid));
        if cycle == 4 {
            // Measured once the daemon has served a few cycles.
            std::thread::sleep(Duration::from_millis(300));
            before = Some(footprint(service.pid()));
        }
    }
    let last = w.wait_for_line_after(None);
    assert_eq!(
        last.checksum, first.checksum,
        "memory intact after 100 cycles"
    );
    let before = before.expect("measured");
    let after = settled(service.pid(), before);
    assert!(
        after.children <= before.children && after.fds <= before.fds,
        "daemon grew: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + RSS_MARGIN_KIB,
        "daemon memory grew: {before:?} -> {after:?}"
    );
}
