//! Soak run: `criu-soak [CYCLES] [MIB]` (default 1000 cycles of a 1 MiB
//! workload) dumps a `criu-workload` through a `criu-serviced` service
//! (killing it), restores it, and repeats; then prints the time per cycle
//! and the daemon's children, descriptors and resident memory before and
//! after. Exits 1 on the first failed request or if the workload's memory
//! checksum changed. Needs root; build the workspace's binaries first.

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReqType as T};
use criu_tests::{kill_and_reap, req, Service, TempDir, Workload};
use criu_transport::client::Client;

fn footprint(pid: u32) -> (usize, usize, String) {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .count();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (children, fds, rss)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let service = Service::start(&criu_tests::bin("criu-serviced"));
    let w = Workload::start(mib, None);
    let first = w.wait_for_line_after(None);
    let dir = TempDir::new("soak");
    let mut start = None;
    let mut durations: Vec<Duration> = Vec::with_capacity(cycles as usize);
    for cycle in 0..cycles {
        let t0 = Instant::now();
        let handle = std::fs::File::open(dir.path()).expect("images dir");
        let mut r = req(T::Dump);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            pid: Some(w.pid),
            ..Default::default()
        });
        let resp = Client::connect(&service.socket).and_then(|c| c.call(&r));
        if !resp.as_ref().is_ok_and(|r| r.success) {
            eprintln!("cycle {cycle}: dump failed: {resp:?}");
            return ExitCode::from(1);
        }
        kill_and_reap(w.pid);
        let mut r = req(T::Restore);
        r.opts = Some(CriuOpts {
            images_dir_fd: handle.as_raw_fd(),
            ..Default::default()
        });
        let resp = Client::connect(&service.socket).and_then(|c| c.call(&r));
        if !resp.as_ref().is_ok_and(|r| r.success) {
            eprintln!("cycle {cycle}: restore failed: {resp:?}");
            return ExitCode::from(1);
        }
        durations.push(t0.elapsed());
        if cycle == 4 {
            std::thread::sleep(Duration::from_millis(300));
            start = Some(footprint(service.pid()));
        }
    }
    let last = w.wait_for_line_after(None);
    std::thread::sleep(Duration::from_secs(2));
    let end = footprint(service.pid());
    durations.sort_unstable();
    let total: Duration = durations.iter().sum();
    let n = durations.len().max(1);
    println!(
        "cycles {cycles} ({mib} MiB): mean {:?}, median {:?}, max {:?} per dump+restore",
        total / u32::try_from(n).unwrap_or(1),
        durations[n / 2],
        durations[n - 1]
    );
    println!("daemon after 5 cycles (children, fds, VmRSS): {start:?}");
    println!("daemon at the end      (children, fds, VmRSS): {end:?}");
    println!(
        "workload checksum {} -> {} (iteration {} -> {})",
        first.checksum, last.checksum, first.n, last.n
    );
    if first.checksum != last.checksum {
        eprintln!("workload memory changed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
