//! The dump/restore benchmark of `scripts/bench-dump`: checkpoints and
//! restores `criu-workload` processes of growing memory size into tmpfs with
//! our `criu`, and prints wall time, frozen time and GiB/s next to the
//! machine's limit measured in the same run (this process vmsplice-ing the
//! same amount of its own memory into a pipe and splicing it to a tmpfs file)
//! and, when `CRIU_REF` names a reference `criu`, that binary's figures.
//!
//! `criu-dump-bench [MiB ...]` (default: 64 1024 4096).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu_tests::TempDir;
use nix::fcntl::{splice, vmsplice, SpliceFFlags};

const MIB: usize = 1 << 20;

fn gibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / d.as_secs_f64()
}

/// The machine's limit: vmsplice our own (touched) memory into a pipe and
/// splice it into a tmpfs file, in pipe-sized batches.
fn machine_limit(bytes: usize, dir: &Path) -> Duration {
    // Page-aligned memory, touched page by page, as a dumped task's would be.
    let mut buf = vec![0u8; bytes + 4096];
    let skew = (4096 - buf.as_ptr() as usize % 4096) % 4096;
    let mem = &mut buf[skew..skew + bytes];
    for (i, page) in mem.chunks_mut(4096).enumerate() {
        page[0] = i as u8;
    }
    let file = std::fs::File::create(dir.join("limit.img")).expect("tmpfs file");
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let cap = grow_pipe(&w);
    let start = Instant::now();
    let mut done = 0;
    while done < bytes {
        let end = (done + cap).min(bytes);
        let iov = [std::io::IoSlice::new(&mem[done..end])];
        let mut left = vmsplice(&w, &iov, SpliceFFlags::empty()).expect("vmsplice");
        done += left;
        while left > 0 {
            left -= splice(
                &r,
                None,
                file.as_fd(),
                None,
                left,
                SpliceFFlags::SPLICE_F_MOVE,
            )
            .expect("splice");
        }
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(dir.join("limit.img"));
    elapsed
}

/// Grows a pipe to the largest size allowed (`/proc/sys/fs/pipe-max-size`).
fn grow_pipe(fd: &impl AsFd) -> usize {
    let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(max))
        .map(|n| n as usize)
        .unwrap_or(65536)
}

struct Run {
    dump: Duration,
    frozen: Option<Duration>,
    restore: Duration,
}

fn start_workload(bin_dir: &Path, log: &Path, mib: usize) -> i32 {
    let out = Command::new(bin_dir.join("criu-workload"))
        .arg(log)
        .arg(mib.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("start criu-workload");
    assert!(out.status.success(), "criu-workload failed");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("workload prints its pid");
    // Wait until it has filled its memory and logged once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "workload never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

fn frozen_time(dir: &Path) -> Option<Duration> {
    criu_tests::dump_stats(dir).map(|d| Duration::from_micros(u64::from(d.frozen_time)))
}

fn run_one(criu: &Path, bin_dir: &Path, work: &Path, mib: usize) -> Run {
    let log = work.join(format!("workload-{mib}.log"));
    let images = work.join(format!("images-{mib}"));
    let _ = std::fs::remove_dir_all(&images);
    std::fs::create_dir_all(&images).unwrap();
    let pid = start_workload(bin_dir, &log, mib);

    let start = Instant::now();
    let status = Command::new(criu)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .args(["-o", "dump.log", "-v2"])
        .status()
        .expect("run criu dump");
    let dump = start.elapsed();
    assert!(
        status.success(),
        "{} dump failed (see {}/dump.log)",
        criu.display(),
        images.display()
    );
    criu_tests::kill_and_reap(pid);
    let frozen = frozen_time(&images);

    let start = Instant::now();
    let status = Command::new(criu)
        .args(["restore", "-d", "-D"])
        .arg(&images)
        .args(["-o", "restore.log", "-v2"])
        .status()
        .expect("run criu restore");
    let restore = start.elapsed();
    assert!(
        status.success(),
        "{} restore failed (see {}/restore.log)",
        criu.display(),
        images.display()
    );
    criu_tests::kill_and_reap(pid);
    let _ = std::fs::remove_dir_all(&images);
    let _ = std::fs::remove_file(&log);
    Run {
        dump,
        frozen,
        restore,
    }
}

fn main() {
    // Restored and detached workloads end up as our children: reap them.
    criu_tests::become_subreaper();
    let bin_dir: PathBuf = std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("binary directory")
        .to_owned();
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("sizes in MiB"))
            .collect();
        if args.is_empty() {
            vec![64, 1024, 4096]
        } else {
            args
        }
    };
    let tmpfs = Path::new("/dev/shm");
    let work = TempDir::new("dump-bench");
    let work_dir = if tmpfs.exists() {
        let d = tmpfs.join(format!("criu-dump-bench-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        work.path().to_owned()
    };
    let reference = std::env::var_os("CRIU_REF").map(PathBuf::from);
    let ours = bin_dir.join("criu");
    println!(
        "{:>6}  {:<9} {:>9} {:>9} {:>8} {:>9} {:>8}  vs limit / vs reference",
        "MiB", "who", "dump ms", "frozen ms", "GiB/s", "restore ms", "GiB/s",
    );
    for mib in sizes {
        let bytes = mib * MIB;
        let limit = machine_limit(bytes, &work_dir);
        println!(
            "{mib:>6}  {:<9} {:>9.1} {:>9} {:>8.2}",
            "limit",
            limit.as_secs_f64() * 1e3,
            "-",
            gibs(bytes, limit)
        );
        let reference_run = reference
            .as_deref()
            .map(|r| (r, run_one(r, &bin_dir, &work_dir, mib)));
        let run = run_one(&ours, &bin_dir, &work_dir, mib);
        let show = |who: &str, r: &Run, extra: String| {
            println!(
                "{mib:>6}  {who:<9} {:>9.1} {:>9} {:>8.2} {:>10.1} {:>8.2}  {extra}",
                r.dump.as_secs_f64() * 1e3,
                r.frozen
                    .map_or("-".to_owned(), |f| format!("{:.1}", f.as_secs_f64() * 1e3)),
                gibs(bytes, r.dump),
                r.restore.as_secs_f64() * 1e3,
                gibs(bytes, r.restore),
            );
        };
        if let Some((_, r)) = &reference_run {
            show("reference", r, String::new());
        }
        let mut extra = format!(
            "dump at {:.0}% of the limit",
            100.0 * limit.as_secs_f64() / run.dump.as_secs_f64()
        );
        if let Some((_, r)) = &reference_run {
            extra += &format!(
                ", dump {:.2}x and restore {:.2}x the reference's speed",
                r.dump.as_secs_f64() / run.dump.as_secs_f64(),
                r.restore.as_secs_f64() / run.restore.as_secs_f64()
            );
        }
        show("criu-rs", &run, extra);
    }
    let _ = std::fs::remove_dir_all(&work_dir);
}
