//! The dump/restore benchmark of `scripts/bench-dump`: checkpoints and
//! restores `criu-workload` processes of growing memory size into tmpfs with
//! our `criu`, and prints wall time, frozen time and GiB/s next to the
//! machine's limit measured in the same run (this process vmsplice-ing the
//! same amount of its own memory into a pipe and splicing it to a tmpfs file)
//! and, when `CRIU_REF` names a reference `criu`, that binary's figures.
//! Then one process with 2,000 small mappings (`criu-wl-maps`). Each `criu`
//! run also reports its peak RSS (`ru_maxrss` of the `criu` process and what
//! it waited for), which shows the engine's memory does not grow with the
//! dumped size.
//!
//! `criu-dump-bench [--4g] [--rounds N] [MiB ...]` (default: 64 1024, plus
//! 4096 with `--4g`; the 4 GiB case needs about 12 GiB of RAM and tmpfs
//! with a reference, 8 without). Each figure is the median of N rounds
//! (default 3), the limit, the reference and ours taking turns, since
//! timings on shared machines swing from one run to the next.

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

/// [`machine_limit`] run in a child process (`--limit-child BYTES DIR`).
fn limit_in_child(bytes: usize, dir: &Path) -> Duration {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .arg("--limit-child")
        .arg(bytes.to_string())
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the limit measurement");
    assert!(out.status.success(), "limit measurement failed");
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("nanoseconds");
    Duration::from_nanos(nanos)
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
    /// Peak RSS of `criu dump` and `criu restore`, in KiB.
    rss_kib: (i64, i64),
}

impl Run {
    /// Each figure's median over `runs` (the largest RSS).
    fn median(runs: &[Run]) -> Run {
        let frozen: Vec<Duration> = runs.iter().filter_map(|r| r.frozen).collect();
        Run {
            dump: criu_tests::median(runs.iter().map(|r| r.dump).collect()),
            frozen: (!frozen.is_empty()).then(|| criu_tests::median(frozen)),
            restore: criu_tests::median(runs.iter().map(|r| r.restore).collect()),
            rss_kib: (
                runs.iter().map(|r| r.rss_kib.0).max().unwrap_or(0),
                runs.iter().map(|r| r.rss_kib.1).max().unwrap_or(0),
            ),
        }
    }
}

/// What is dumped.
#[derive(Clone, Copy)]
enum Target {
    /// `criu-workload` with this many MiB of anonymous memory.
    Memory(usize),
    /// `criu-wl-maps` with this many small mappings.
    Maps(usize),
}

impl Target {
    fn label(self) -> String {
        match self {
            Target::Memory(mib) => format!("{mib} MiB"),
            Target::Maps(n) => format!("{n} maps"),
        }
    }
}

fn start_workload(bin_dir: &Path, log: &Path, target: Target) -> i32 {
    let mut cmd = match target {
        Target::Memory(mib) => {
            let mut c = Command::new(bin_dir.join("criu-workload"));
            c.arg(log).arg(mib.to_string());
            c
        }
        Target::Maps(n) => {
            let mut c = Command::new(bin_dir.join("criu-wl-maps"));
            c.arg(log).arg(n.to_string());
            c
        }
    };
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("start the workload");
    assert!(out.status.success(), "the workload failed");
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

/// Runs `cmd`, returning its exit status, wall time and peak RSS in KiB
/// (`wait4`'s `ru_maxrss`: the process and the descendants it waited for).
#[allow(
    clippy::zombie_processes,
    reason = "reaped by the wait4 that also gives its rusage"
)]
fn run_measured(cmd: &mut Command) -> (bool, Duration, i64) {
    let start = Instant::now();
    let child = cmd.spawn().expect("run criu");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let got = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(got, child.id() as i32, "wait4 on criu");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, wall, usage.ru_maxrss)
}

fn frozen_time(dir: &Path) -> Option<Duration> {
    criu_tests::dump_stats(dir).map(|d| Duration::from_micros(u64::from(d.frozen_time)))
}

fn run_one(criu: &Path, bin_dir: &Path, work: &Path, target: Target) -> Run {
    let tag = target.label().replace(' ', "-");
    let log = work.join(format!("workload-{tag}.log"));
    let images = work.join(format!("images-{tag}"));
    let _ = std::fs::remove_dir_all(&images);
    std::fs::create_dir_all(&images).unwrap();
    let pid = start_workload(bin_dir, &log, target);

    let (ok, dump, dump_rss) = run_measured(
        Command::new(criu)
            .args(["dump", "-t", &pid.to_string(), "-D"])
            .arg(&images)
            .args(["-o", "dump.log", "-v2"]),
    );
    assert!(
        ok,
        "{} dump failed (see {}/dump.log)",
        criu.display(),
        images.display()
    );
    criu_tests::kill_and_reap(pid);
    let frozen = frozen_time(&images);

    let (ok, restore, restore_rss) = run_measured(
        Command::new(criu)
            .args(["restore", "-d", "-D"])
            .arg(&images)
            .args(["-o", "restore.log", "-v2"]),
    );
    assert!(
        ok,
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
        rss_kib: (dump_rss, restore_rss),
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--limit-child") {
        // Measured in a child of its own: the memory it touches must not
        // raise this process's RSS high-water mark, which `criu` children
        // would inherit in their `ru_maxrss`.
        let bytes: usize = args[2].parse().expect("bytes");
        let took = machine_limit(bytes, Path::new(&args[3]));
        println!("{}", took.as_nanos());
        return;
    }
    let mut big = false;
    let mut rounds = 3;
    let mut sizes: Vec<usize> = Vec::new();
    let mut args = args.into_iter().skip(1);
    while let Some(a) = args.next() {
        if a == "--4g" {
            big = true;
        } else if a == "--rounds" {
            rounds = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .expect("--rounds N");
        } else {
            sizes.push(a.parse().expect("sizes in MiB, --4g or --rounds N"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![64, 1024];
    }
    if big && !sizes.contains(&4096) {
        sizes.push(4096);
    }
    let work = TempDir::in_memory("dump-bench");
    let work_dir = work.path().to_owned();
    let reference = std::env::var_os("CRIU_REF").map(PathBuf::from);
    let ours = bin_dir.join("criu");
    println!(
        "{:>9}  {:<9} {:>9} {:>9} {:>8} {:>10} {:>8} {:>13}  vs limit / vs reference",
        "target", "who", "dump ms", "frozen ms", "GiB/s", "restore ms", "GiB/s", "RSS MiB d/r",
    );
    let targets = sizes
        .iter()
        .map(|&m| Target::Memory(m))
        .chain([Target::Maps(2000)]);
    for target in targets {
        let label = target.label();
        // The maps case moves little memory: GiB/s and the limit mean
        // nothing there.
        let bytes = match target {
            Target::Memory(mib) => Some(mib * MIB),
            Target::Maps(_) => None,
        };
        let mut limits = Vec::new();
        let mut reference_runs = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..rounds {
            if let Some(b) = bytes {
                limits.push(limit_in_child(b, &work_dir));
            }
            if let Some(r) = reference.as_deref() {
                reference_runs.push(run_one(r, &bin_dir, &work_dir, target));
            }
            runs.push(run_one(&ours, &bin_dir, &work_dir, target));
        }
        let limit = (!limits.is_empty()).then(|| criu_tests::median(limits));
        if let (Some(b), Some(l)) = (bytes, limit) {
            println!(
                "{label:>9}  {:<9} {:>9.1} {:>9} {:>8.2}",
                "limit",
                l.as_secs_f64() * 1e3,
                "-",
                gibs(b, l)
            );
        }
        let reference_run = (!reference_runs.is_empty()).then(|| Run::median(&reference_runs));
        let run = Run::median(&runs);
        let rate = |d: Duration| bytes.map_or("-".to_owned(), |b| format!("{:.2}", gibs(b, d)));
        let show = |who: &str, r: &Run, extra: String| {
            println!(
                "{label:>9}  {who:<9} {:>9.1} {:>9} {:>8} {:>10.1} {:>8} {:>13}  {extra}",
                r.dump.as_secs_f64() * 1e3,
                r.frozen
                    .map_or("-".to_owned(), |f| format!("{:.1}", f.as_secs_f64() * 1e3)),
                rate(r.dump),
                r.restore.as_secs_f64() * 1e3,
                rate(r.restore),
                format!(
                    "{:.1}/{:.1}",
                    r.rss_kib.0 as f64 / 1024.0,
                    r.rss_kib.1 as f64 / 1024.0
                ),
            );
        };
        if let Some(r) = &reference_run {
            show("reference", r, String::new());
        }
        let mut extra = Vec::new();
        if let Some(l) = limit {
            // Wall time also covers starting `criu` and waiting for the
            // killed target to exit (freeing its memory); frozen time is
            // the part the limit measures.
            let frozen = run.frozen.map_or(String::new(), |f| {
                format!(
                    " ({:.0}% by frozen time)",
                    100.0 * l.as_secs_f64() / f.as_secs_f64()
                )
            });
            extra.push(format!(
                "dump at {:.0}% of the limit{frozen}",
                100.0 * l.as_secs_f64() / run.dump.as_secs_f64()
            ));
        }
        if let Some(r) = &reference_run {
            extra.push(format!(
                "dump {:.2}x and restore {:.2}x the reference's speed",
                r.dump.as_secs_f64() / run.dump.as_secs_f64(),
                r.restore.as_secs_f64() / run.restore.as_secs_f64()
            ));
        }
        show("criu-rs", &run, extra.join(", "));
    }
}
