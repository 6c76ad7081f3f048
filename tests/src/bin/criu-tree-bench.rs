//! Benchmark of whole trees: dump and restore of a tree of 50 processes
//! with 16 MiB each (`criu-workload 16 children 49`) and of one process
//! with 64 threads (`criu-workload 16 threads 64`): wall time of `criu dump`
//! (kill after) and `criu restore -d`, and the frozen time from
//! `stats-dump`; next to a reference `criu` when `CRIU_REF` names one.
//! Images go to tmpfs (`/dev/shm`) when there is one.
//!
//! `criu-tree-bench [ROUNDS]` (default 3; medians are printed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu_tests::TempDir;

struct Run {
    dump: Duration,
    frozen: Duration,
    restore: Duration,
}

/// Kills every process of the session `sid` and reaps what is ours.
fn kill_session(sid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&p| {
                nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p)))
                    .ok()
                    .map(|s| s.as_raw())
                    == Some(sid)
            })
            .collect();
        for &p in &members {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
        }
        while let Ok(s) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if s == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let alive = members.iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z "))
        });
        if !alive || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_one(criu: &Path, bin_dir: &Path, work: &Path, extra: &[&str]) -> Run {
    let log = work.join("workload.log");
    let images = work.join("images");
    let _ = std::fs::remove_dir_all(&images);
    std::fs::create_dir_all(&images).unwrap();
    let out = Command::new(bin_dir.join("criu-workload"))
        .arg(&log)
        .arg("16")
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .expect("start criu-workload");
    assert!(out.status.success());
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let status = Command::new(criu)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .args(["-o", "dump.log", "-v2"])
        .status()
        .expect("criu dump");
    let dump = start.elapsed();
    assert!(
        status.success(),
        "{} dump failed ({})",
        criu.display(),
        images.display()
    );
    kill_session(pid);
    let frozen = criu_tests::dump_stats(&images).map_or(Duration::ZERO, |d| {
        Duration::from_micros(d.frozen_time.into())
    });
    let start = Instant::now();
    let status = Command::new(criu)
        .args(["restore", "-d", "-D"])
        .arg(&images)
        .args(["-o", "restore.log", "-v2"])
        .status()
        .expect("criu restore");
    let restore = start.elapsed();
    assert!(
        status.success(),
        "{} restore failed ({})",
        criu.display(),
        images.display()
    );
    kill_session(pid);
    let _ = std::fs::remove_file(&log);
    Run {
        dump,
        frozen,
        restore,
    }
}

fn main() {
    criu_tests::become_subreaper();
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(3, |a| a.parse().expect("ROUNDS"));
    let bin_dir: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let work = TempDir::in_memory("tree-bench");
    let reference = std::env::var_os("CRIU_REF").map(PathBuf::from);
    let ours = bin_dir.join("criu");
    println!(
        "{:<22} {:<9} {:>9} {:>10} {:>11}",
        "scenario", "who", "dump ms", "frozen ms", "restore ms"
    );
    let scenarios: [(&str, &[&str]); 2] = [
        ("50 tasks x 16 MiB", &["children", "49"]),
        ("1 task x 64 threads", &["threads", "64"]),
    ];
    for (name, extra) in scenarios {
        let mut who: Vec<(&str, &Path)> = vec![("criu-rs", &ours)];
        if let Some(r) = &reference {
            who.push(("reference", r));
        }
        for (label, criu) in who {
            let runs: Vec<Run> = (0..rounds)
                .map(|_| run_one(criu, &bin_dir, work.path(), extra))
                .collect();
            let ms = |f: fn(&Run) -> Duration| {
                criu_tests::median(runs.iter().map(f).collect()).as_secs_f64() * 1e3
            };
            println!(
                "{name:<22} {label:<9} {:>9.1} {:>10.1} {:>11.1}",
                ms(|r| r.dump),
                ms(|r| r.frozen),
                ms(|r| r.restore)
            );
        }
    }
}
