//! Lazy-restore benchmark: the time until a restored `criu-workload` runs
//! again (the restore has resumed it and returned) after a full restore and
//! after a lazy one (`restore --lazy-pages` with `criu lazy-pages` serving
//! the images), and how long the lazy daemon then takes until every page
//! has arrived. Images go to `/dev/shm`.
//!
//! `criu-lazy-bench [MiB ...]` (default: 1024).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start_workload(log: &Path, mib: usize) -> i32 {
    let out = Command::new(criu_tests::bin("criu-workload"))
        .arg(log)
        .arg(mib.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("start criu-workload");
    assert!(out.status.success(), "criu-workload failed");
    let pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("workload prints its pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(log).map_or(0, |t| t.lines().count()) < 2 {
        assert!(Instant::now() < deadline, "workload never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

fn criu(args: &[&str], dir: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(criu_tests::bin("criu"))
        .args(args)
        .args(["-D", dir.to_str().unwrap(), "-o", "log", "-v2"])
        .status()
        .expect("run criu");
    let took = started.elapsed();
    assert!(
        status.success(),
        "criu {args:?} failed (see {}/log)",
        dir.display()
    );
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(work: &Path, mib: usize) {
    let log = work.join("workload.log");
    let _ = std::fs::remove_file(&log);
    let pid = start_workload(&log, mib);
    let dir = work.join(format!("images-{mib}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    criu(&["dump", "-t", &pid.to_string()], &dir);
    criu_tests::kill_and_reap(pid);

    let full = criu(&["restore", "-d"], &dir);
    criu_tests::kill_and_reap(pid);

    let mut daemon = Command::new(criu_tests::bin("criu"))
        .args(["lazy-pages", "-D", dir.to_str().unwrap(), "-o", "lazy.log"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    while !dir.join("lazy-pages.socket").exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let lazy = criu(&["restore", "-d", "--lazy-pages"], &dir);
    assert!(daemon.wait().unwrap().success(), "lazy-pages failed");
    let all_in = started.elapsed();
    let mut stats = String::new();
    daemon
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stats)
        .unwrap();
    criu_tests::kill_and_reap(pid);
    println!(
        "{mib:>5} MiB   full restore runs after {:>7.1} ms   lazy restore runs after {:>7.1} ms \
         (ratio {:>5.1} %), every page in after {:>7.1} ms\n            daemon: {}",
        ms(full),
        ms(lazy),
        100.0 * lazy.as_secs_f64() / full.as_secs_f64(),
        ms(all_in),
        stats.trim()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    criu_tests::become_subreaper();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("MiB"))
        .collect();
    let sizes = if sizes.is_empty() { vec![1024] } else { sizes };
    let work = Path::new("/dev/shm").join(format!("criu-lazy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    for mib in sizes {
        bench(&work, mib);
    }
    let _ = std::fs::remove_dir_all(&work);
}
