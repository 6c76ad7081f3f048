//! Pre-dumps of a real process with the userfaultfd memory tracker:
//! unchanged pages go to the parent images, the tracker survives between
//! invocations, and the final dump leaves nothing of it in the task.
//!
//! Needs root and the workload binary (`cargo build -p criu-tests --bin
//! criu-workload`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criu_engine::dump::{self, DumpOutcome};
use criu_engine::mem::dirty::TRACK_FD_MIN;
use criu_engine::notify::NoNotify;
use criu_proto::img::pages::{PE_PARENT, PE_PRESENT};
use criu_proto::img::{ImagesDir, PageRun};

fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps");
    let bin = target.join("debug").join("criu-workload");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p criu-tests --bin criu-workload` first",
        bin.display()
    );
    bin
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("criu-pre-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Workload {
    pid: i32,
    log: PathBuf,
}

impl Workload {
    fn start(s: &Scratch, mib: u32) -> Workload {
        assert!(nix::unistd::geteuid().is_root(), "needs root");
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let log = s.0.join("workload.log");
        let out = Command::new(workload_bin())
            .arg(&log)
            .arg(mib.to_string())
            .output()
            .unwrap();
        assert!(out.status.success());
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let w = Workload { pid, log };
        w.wait_lines(2);
        w
    }

    fn wait_lines(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "workload stopped logging");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Descriptors of the task that are userfaultfds.
    fn uffds(&self) -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let link = std::fs::read_link(e.path()).ok()?;
                (link.to_string_lossy() == "anon_inode:[userfaultfd]")
                    .then(|| e.file_name().to_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    fn uffd_wp_vmas(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/smaps", self.pid))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
            .count()
    }

    /// The `[start, end)` of its big anonymous buffer (`mib` MiB).
    fn buffer(&self, mib: u64) -> (u64, u64) {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap();
        maps.lines()
            .filter_map(|l| {
                let range = l.split_whitespace().next()?;
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                (b - a >= mib << 20 && l.split_whitespace().count() == 5).then_some((a, b))
            })
            .next()
            .expect("the workload's buffer")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

fn run(action: &str, pid: i32, dir: &Path, extra: &[&str]) -> DumpOutcome {
    let mut args: Vec<String> = vec![
        action.into(),
        "-t".into(),
        pid.to_string(),
        "-D".into(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = criu_engine::config::parse_args(args).expect("arguments");
    let opts = criu_engine::opts::from_config(&cfg).expect("options");
    match action {
        "pre-dump" => dump::pre_dump::run(&opts),
        _ => dump::run(&opts, &mut NoNotify),
    }
    .unwrap_or_else(|e| panic!("{action}: {}", criu_engine::worker::error_chain(&e)))
}

fn runs(dir: &Path, pid: i32) -> Vec<PageRun> {
    ImagesDir::open(dir)
        .unwrap()
        .pagemap(pid as u32)
        .unwrap()
        .expect("pagemap")
        .runs()
        .collect()
}

fn covered(runs: &[PageRun], start: u64, end: u64, flag: u32) -> bool {
    let mut at = start;
    for r in runs.iter().filter(|r| r.flags & flag != 0) {
        if r.vaddr <= at && r.vaddr + r.len_bytes() > at {
            at = r.vaddr + r.len_bytes();
        }
    }
    at >= end
}

#[test]
fn unchanged_memory_goes_to_the_parent_and_the_tracker_is_removed_at_the_end() {
    let s = Scratch::new("chain");
    let w = Workload::start(&s, 16);
    let (a, b, c) = (s.0.join("a"), s.0.join("b"), s.0.join("c"));

    let first = run("pre-dump", w.pid, &a, &[]);
    assert_eq!(first.stats.mem.pages_parent, 0, "no parent yet");
    assert!(
        first.stats.mem.pages_written >= 4096,
        "the whole 16 MiB buffer"
    );
    // Between invocations the task carries exactly one tracker descriptor.
    assert_eq!(w.uffds().len(), 1);
    assert!(w.uffds()[0] >= TRACK_FD_MIN);
    assert!(w.uffd_wp_vmas() > 0);
    assert!(std::fs::symlink_metadata(a.join("parent")).is_err());
    let n = w.lines();
    w.wait_lines(n + 1);

    // A second, separate invocation finds the tracker.
    let second = run("pre-dump", w.pid, &b, &["--prev-images-dir", "../a"]);
    assert_eq!(
        std::fs::read_link(b.join("parent")).unwrap(),
        Path::new("../a")
    );
    let m = second.stats.mem;
    assert!(m.pages_parent >= 4096, "{m:?}");
    assert!(
        m.pages_written < first.stats.mem.pages_written / 10,
        "{m:?}"
    );
    assert_eq!(w.uffds().len(), 1, "still one tracker");
    // The mapping holding the buffer (it may have merged with neighbours
    // whose pages are not all present): whatever of it the first pre-dump
    // saved, the second leaves to the parent.
    let (start, end) = w.buffer(16);
    let rb = runs(&b, w.pid);
    let ra = runs(&a, w.pid);
    let mut in_buffer = 0;
    for r in ra.iter().filter(|r| r.flags & PE_PRESENT != 0) {
        let (s, e) = (r.vaddr.max(start), (r.vaddr + r.len_bytes()).min(end));
        if s < e {
            in_buffer += (e - s) / 4096;
            assert!(
                covered(&rb, s, e, PE_PARENT),
                "the untouched buffer {s:#x}-{e:#x} is left to the parent"
            );
        }
    }
    assert!(in_buffer >= 4096, "{in_buffer} buffer pages saved first");
    // Every PE_PARENT range is in the parent.
    for r in rb.iter().filter(|r| r.flags & PE_PARENT != 0) {
        assert!(
            covered(
                &ra,
                r.vaddr,
                r.vaddr + r.len_bytes(),
                PE_PARENT | PE_PRESENT
            ),
            "{r:?}"
        );
    }

    // The final dump leaves the task running without any trace of tracking.
    let last = run(
        "dump",
        w.pid,
        &c,
        &["--prev-images-dir", "../b", "--leave-running"],
    );
    assert!(last.stats.mem.pages_parent >= 4096);
    assert!(w.uffds().is_empty(), "tracker closed at the final dump");
    assert_eq!(w.uffd_wp_vmas(), 0, "no registered range left");
    let n = w.lines();
    w.wait_lines(n + 2);
}

#[test]
fn read_mode_pre_dump_and_track_mem_dump_keep_tracking() {
    let s = Scratch::new("read");
    let w = Workload::start(&s, 8);
    let (a, b, c) = (s.0.join("a"), s.0.join("b"), s.0.join("c"));
    let first = run("pre-dump", w.pid, &a, &["--pre-dump-mode", "read"]);
    assert!(first.stats.mem.pages_written >= 2048);
    // `dump --track-mem --leave-running` is one more iteration: the tracker
    // stays, and is not dumped as a descriptor of the task.
    let mid = run(
        "dump",
        w.pid,
        &b,
        &[
            "--prev-images-dir",
            "../a",
            "--track-mem",
            "--leave-running",
        ],
    );
    assert!(mid.stats.mem.pages_parent >= 2048);
    assert_eq!(w.uffds().len(), 1);
    let fdinfo = ImagesDir::open(&b).unwrap().fdinfo(2).unwrap();
    assert!(fdinfo.iter().all(|f| (f.fd as i32) < TRACK_FD_MIN));
    let last = run(
        "dump",
        w.pid,
        &c,
        &["--prev-images-dir", "../b", "--leave-running"],
    );
    assert!(last.stats.mem.pages_parent >= 2048);
    assert!(w.uffds().is_empty());
}
