//! DUMP of a real process (`criu-workload` from the tests crate): images
//! valid for our reader and for Debian's `crit`, the final states, and the
//! failure paths that must leave the target untouched.
//!
//! Needs: root (ptrace, `/proc/<pid>/pagemap` PFNs, `pidfd_getfd`), the
//! workload binary built with `cargo build -p criu-tests --bin
//! criu-workload`, and `/usr/bin/crit` for the crit checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criu_engine::dump::{self, DumpError};
use criu_engine::notify::{NoNotify, Notify};
use criu_proto::images::{
    CoreEntry, FdTypes, FdinfoEntry, FileEntry, InventoryEntry, MmEntry, PstreeEntry, StatsEntry,
};
use criu_proto::img::{ImageKind, ImagesDir};

const PAGE: u64 = 4096;
const PATTERN: u64 = 0x9e37_79b9_7f4a_7c15;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: they ptrace processes and read PFNs from pagemap"
    );
}

fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("tests live in target/<profile>/deps");
    let bin = target.join("debug").join("criu-workload");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p criu-tests --bin criu-workload` first",
        bin.display()
    );
    bin
}

/// Makes this test process the reaper of the workloads (their parent exits
/// right after forking them).
fn subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "criu-dump-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("images")).unwrap();
        Scratch(p)
    }
    fn images(&self) -> PathBuf {
        self.0.join("images")
    }
    fn log(&self) -> PathBuf {
        self.0.join("workload.log")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running workload, killed and reaped on drop.
struct Workload {
    pid: i32,
    log: PathBuf,
}

impl Workload {
    fn start(s: &Scratch, mib: u32, extra: &[&str]) -> Workload {
        require_root();
        subreaper();
        let out = Command::new(workload_bin())
            .arg(s.log())
            .arg(mib.to_string())
            .args(extra)
            .output()
            .expect("run criu-workload");
        assert!(out.status.success(), "workload failed: {out:?}");
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let w = Workload { pid, log: s.log() };
        w.wait_lines(2);
        w
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_lines(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lines().len() < n {
            assert!(
                Instant::now() < deadline,
                "workload {} stopped logging",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap()
    }

    fn alive(&self) -> bool {
        matches!(
            nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(self.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG)
            ),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        )
    }

    /// Asserts the workload runs on, untraced, with the same mappings.
    fn assert_untouched(&self, maps_before: &str) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        assert!(status.contains("TracerPid:\t0\n"), "still traced: {status}");
        assert_eq!(
            self.maps(),
            maps_before,
            "mappings changed (leftover stub?)"
        );
        let n = self.lines().len();
        self.wait_lines(n + 2);
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

fn dump_with(
    pid: i32,
    dir: &Path,
    extra: &[&str],
    notify: &mut dyn Notify,
) -> Result<dump::DumpOutcome, DumpError> {
    let mut args: Vec<String> = ["dump", "-t", &pid.to_string(), "-D"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = criu_engine::config::parse_args(args).expect("arguments");
    let opts = criu_engine::opts::from_config(&cfg).expect("options");
    dump::run(&opts, notify)
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn crit(args: &[&str]) -> String {
    assert!(
        Path::new("/usr/bin/crit").exists(),
        "these checks need Debian's crit"
    );
    let out = Command::new("/usr/bin/python3")
        .arg("/usr/bin/crit")
        .args(args)
        .output()
        .expect("run crit");
    assert!(out.status.success(), "crit {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Default)]
struct Recorder {
    seen: Vec<&'static str>,
    refuse: Option<&'static str>,
}

impl Notify for Recorder {
    fn notify(&mut self, script: &'static str, _pid: Option<i32>) -> bool {
        self.seen.push(script);
        self.refuse != Some(script)
    }
}

#[test]
fn leave_running_writes_valid_images() {
    let s = Scratch::new("running");
    let w = Workload::start(&s, 16, &[]);
    let maps = w.maps();
    let out = dump_with(w.pid, &s.images(), &["-R"], &mut NoNotify).expect("dump");
    w.assert_untouched(&maps);

    let dir = ImagesDir::open(s.images()).unwrap();
    let pid = w.pid as u64;
    let inv: InventoryEntry = dir.inventory().unwrap();
    assert_eq!(inv.img_version, 2);
    let tree: Vec<PstreeEntry> = dir.pstree().unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!(
        (tree[0].pid, tree[0].ppid, tree[0].sid),
        (pid as u32, 0, pid as u32)
    );
    let core: CoreEntry = dir.core(pid as u32).unwrap();
    let tc = core.tc.as_ref().unwrap();
    assert_eq!(tc.task_state, 1);
    assert_eq!(tc.comm, "criu-workload");
    assert_eq!(tc.sigactions.len(), 62);
    assert_ne!(tc.sigactions[8].sigaction, 0, "SIGUSR1 handler recorded");
    assert_eq!(tc.blk_sigset & (1 << 11), 1 << 11, "SIGUSR2 blocked");
    assert_eq!(tc.rlimits.as_ref().unwrap().rlimits.len(), 16);
    let ti = core.thread_info.as_ref().unwrap();
    assert_eq!(ti.fpregs.st_space.len(), 32);
    assert_eq!(ti.tls.len(), 3);
    assert_ne!(ti.gpregs.fs_base, 0);

    // Memory: the pagemap covers exactly the pages file, and the pattern
    // is where the anonymous VMA was.
    let mm: MmEntry = dir.mm(pid as u32).unwrap().unwrap();
    let pm = dir.pagemap(pid as u32).unwrap().unwrap();
    let pages = std::fs::metadata(s.images().join("pages-1.img"))
        .unwrap()
        .len();
    assert_eq!(pm.present_bytes(), pages);
    let stats: StatsEntry = dir.read_single(ImageKind::StatsDump, 0).unwrap().unwrap();
    let d = stats.dump.unwrap();
    assert_eq!(d.pages_written * PAGE, pages);
    assert_eq!(out.stats.mem.pages_written * PAGE, pages);
    let big = mm
        .vmas
        .iter()
        .find(|v| v.end - v.start == 16 << 20)
        .expect("the 16 MiB anonymous VMA");
    assert_eq!(big.status, 0x201);
    let reader = dir.open_pages(1).unwrap();
    let run = pm
        .runs()
        .find(|r| r.vaddr <= big.start && big.start < r.vaddr + r.nr_pages * PAGE)
        .expect("pattern pages saved");
    let mut word = [0u8; 16];
    reader
        .read_at(
            run.pages_offset.unwrap() + (big.start - run.vaddr),
            &mut word,
        )
        .unwrap();
    assert_eq!(u64::from_le_bytes(word[8..].try_into().unwrap()), PATTERN);
    assert!(pages >= 16 << 20);
    let exe = std::fs::read_link(format!("/proc/{}/exe", w.pid)).unwrap();
    let files: Vec<FileEntry> = dir.files().unwrap();
    let reg = |id: u32| {
        files
            .iter()
            .find(|f| f.id == id)
            .and_then(|f| f.reg.clone())
            .unwrap()
    };
    assert_eq!(reg(mm.exe_file_id).name, exe.to_str().unwrap());

    // Descriptors: stdio on /dev/null (one shared file), the log appended
    // to, the executable read at 1234.
    let fdinfo: Vec<FdinfoEntry> = dir.fdinfo(2).unwrap();
    let fds: Vec<u32> = fdinfo.iter().map(|f| f.fd).collect();
    assert_eq!(fds, vec![0, 1, 2, 3, 4]);
    assert!(fdinfo.iter().all(|f| f.r#type == FdTypes::Reg as i32));
    assert_eq!(fdinfo[0].id, fdinfo[1].id);
    assert_eq!(reg(fdinfo[0].id).name, "/dev/null");
    let log = reg(fdinfo[3].id);
    assert_eq!(log.name, s.log().to_str().unwrap());
    assert_eq!(log.flags & libc::O_APPEND as u32, libc::O_APPEND as u32);
    assert_eq!(log.size, None);
    let exe_fd = reg(fdinfo[4].id);
    assert_eq!(exe_fd.pos, 1234);
    assert!(!exe_fd.build_id.is_empty());

    // Every image decodes with our reader and with crit.
    for name in names(&s.images()) {
        if name.starts_with("pages-") {
            continue;
        }
        dir.decode_any(&name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        crit(&["decode", "-i", s.images().join(&name).to_str().unwrap()]);
    }
    let images = s.images();
    let images = images.to_str().unwrap();
    let ps = crit(&["x", images, "ps"]);
    assert!(
        ps.contains(&w.pid.to_string()) && ps.contains("criu-workload"),
        "{ps}"
    );
    let fds = crit(&["x", images, "fds"]);
    assert!(
        fds.contains(s.log().to_str().unwrap()) && fds.contains("/dev/null"),
        "{fds}"
    );
    let mems = crit(&["x", images, "mems"]);
    assert!(
        mems.contains("[vdso]") && mems.contains(exe.to_str().unwrap()),
        "{mems}"
    );
}

#[test]
fn default_final_state_kills_the_task() {
    let s = Scratch::new("kill");
    let w = Workload::start(&s, 4, &[]);
    dump_with(w.pid, &s.images(), &[], &mut NoNotify).expect("dump");
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.alive() {
        assert!(Instant::now() < deadline, "task {} still alive", w.pid);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.images().join("inventory.img").exists());
}

#[test]
fn leave_stopped_leaves_it_stopped() {
    let s = Scratch::new("stopped");
    let w = Workload::start(&s, 4, &[]);
    dump_with(w.pid, &s.images(), &["-s"], &mut NoNotify).expect("dump");
    // The SIGSTOP sent before the detach takes effect right after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
        if status.contains("State:\tT") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.contains("State:\tT"), "{status}");
    assert!(status.contains("TracerPid:\t0\n"), "{status}");
}

#[test]
fn vanished_pid_is_esrch() {
    require_root();
    let s = Scratch::new("vanished");
    // A pid just reaped cannot be reused this fast in practice.
    let child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id() as i32;
    drop(child.wait_with_output());
    let err = dump_with(pid, &s.images(), &[], &mut NoNotify).unwrap_err();
    assert_eq!(err.cr_errno(), Some(libc::ESRCH), "{err}");
    assert!(err.to_string().contains(&pid.to_string()), "{err}");
    assert!(names(&s.images()).is_empty());
}

#[test]
fn unsupported_fd_fails_cleanly() {
    let s = Scratch::new("eventfd");
    let w = Workload::start(&s, 4, &["eventfd"]);
    let maps = w.maps();
    let err = dump_with(w.pid, &s.images(), &["-R"], &mut NoNotify).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fd 5") && msg.contains("socket"), "{msg}");
    assert!(msg.contains(&w.pid.to_string()), "{msg}");
    w.assert_untouched(&maps);
    assert!(!s.images().join("inventory.img").exists());
}

#[test]
fn notifications_in_criu_order() {
    let s = Scratch::new("notify");
    let w = Workload::start(&s, 4, &[]);
    let mut rec = Recorder::default();
    dump_with(w.pid, &s.images(), &["-R"], &mut rec).expect("dump");
    assert_eq!(rec.seen, vec!["pre-dump", "query-ext-files", "post-dump"]);
}

#[test]
fn pre_dump_refusal_leaves_task_untouched() {
    let s = Scratch::new("predump");
    let w = Workload::start(&s, 4, &[]);
    let maps = w.maps();
    let mut rec = Recorder {
        refuse: Some("pre-dump"),
        ..Default::default()
    };
    let err = dump_with(w.pid, &s.images(), &[], &mut rec).unwrap_err();
    assert!(err.to_string().contains("pre-dump"), "{err}");
    assert_eq!(rec.seen, vec!["pre-dump"]);
    w.assert_untouched(&maps);
    assert!(names(&s.images()).is_empty());
}

#[test]
fn post_dump_refusal_resumes_and_leaves_no_inventory() {
    let s = Scratch::new("postdump");
    let w = Workload::start(&s, 4, &[]);
    let maps = w.maps();
    let mut rec = Recorder {
        refuse: Some("post-dump"),
        ..Default::default()
    };
    let err = dump_with(w.pid, &s.images(), &[], &mut rec).unwrap_err();
    assert!(err.to_string().contains("post-dump"), "{err}");
    w.assert_untouched(&maps);
    assert!(!s.images().join("inventory.img").exists());
}

#[test]
fn query_ext_files_refusal_resumes_the_frozen_task() {
    let s = Scratch::new("queryext");
    let w = Workload::start(&s, 4, &[]);
    let maps = w.maps();
    let mut rec = Recorder {
        refuse: Some("query-ext-files"),
        ..Default::default()
    };
    let err = dump_with(w.pid, &s.images(), &[], &mut rec).unwrap_err();
    assert!(err.to_string().contains("query-ext-files"), "{err}");
    assert_eq!(rec.seen, vec!["pre-dump", "query-ext-files"]);
    w.assert_untouched(&maps);
    assert!(!s.images().join("inventory.img").exists());
}

/// Asserts two dumps of the (stopped) task `pid` hold the same pagemap and
/// the same pages.
fn assert_same_pages(a: &Path, b: &Path, pid: i32) {
    let pa = std::fs::read(a.join("pages-1.img")).unwrap();
    let pb = std::fs::read(b.join("pages-1.img")).unwrap();
    assert_eq!(pa.len(), pb.len());
    let da = ImagesDir::open(a).unwrap();
    let map_a = da.pagemap(pid as u32).unwrap().unwrap();
    let map_b = ImagesDir::open(b)
        .unwrap()
        .pagemap(pid as u32)
        .unwrap()
        .unwrap();
    assert_eq!(map_a.entries, map_b.entries);
    // The kernel rewrites the rseq area (cpu id) whenever the task returns
    // to user space, which injected syscalls make it do: that page may
    // differ between two dumps; every other page must not.
    let rseq = da
        .core(pid as u32)
        .unwrap()
        .thread_core
        .unwrap()
        .rseq_entry
        .unwrap();
    let rseq_page = rseq.rseq_abi_pointer & !(PAGE - 1);
    for run in map_a.runs() {
        let off = run.pages_offset.unwrap() as usize;
        for i in 0..run.nr_pages as usize {
            let addr = run.vaddr + (i as u64) * PAGE;
            let at = off + i * PAGE as usize;
            if addr != rseq_page {
                assert!(
                    pa[at..at + PAGE as usize] == pb[at..at + PAGE as usize],
                    "page {addr:#x} differs between {} and {}",
                    a.display(),
                    b.display()
                );
            }
        }
    }
}

/// 48 MiB take several sets of page pipes, one filled while the other is
/// drained; a task that can open only a few descriptors gets fewer pipes
/// and no second set. Both write the pages `process_vm_readv` reads.
#[test]
fn page_pipe_sets_write_the_same_pages() {
    let s = Scratch::new("pipesets");
    let w = Workload::start(&s, 48, &[]);
    let dirs: Vec<PathBuf> = ["splice", "few-fds", "read"]
        .iter()
        .map(|d| s.0.join(d))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let pid = nix::unistd::Pid::from_raw(w.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    dump_with(w.pid, &dirs[0], &["-s"], &mut NoNotify).expect("splice dump");
    // Room for the stub's work and a handful of pipes only.
    let top = std::fs::read_dir(format!("/proc/{}/fd", w.pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let limit = top + 1 + 8;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit.max(4096),
    };
    // SAFETY: prlimit on a child of ours with valid pointers.
    let rc = unsafe { libc::prlimit(w.pid, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    dump_with(w.pid, &dirs[1], &["-s"], &mut NoNotify).expect("dump with few descriptors");
    dump_with(
        w.pid,
        &dirs[2],
        &["-s", "--pre-dump-mode", "read"],
        &mut NoNotify,
    )
    .expect("read dump");
    let pipes = |d: &Path| {
        let stats: StatsEntry = ImagesDir::open(d)
            .unwrap()
            .read_single(ImageKind::StatsDump, 0)
            .unwrap()
            .unwrap();
        stats.dump.unwrap().page_pipes.unwrap_or(0)
    };
    assert!(pipes(&dirs[0]) > 16, "a second set of pipes was used");
    let few = pipes(&dirs[1]);
    assert!(
        (1..=8).contains(&few),
        "{few} page pipes with 8 free descriptors"
    );
    assert_same_pages(&dirs[0], &dirs[1], w.pid);
    assert_same_pages(&dirs[0], &dirs[2], w.pid);
}

#[test]
fn read_mode_writes_the_same_pages() {
    let s = Scratch::new("readmode");
    let w = Workload::start(&s, 4, &[]);
    let a = s.0.join("a");
    let b = s.0.join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // SIGSTOP so both dumps see the same memory.
    let pid = nix::unistd::Pid::from_raw(w.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    dump_with(w.pid, &a, &["-s"], &mut NoNotify).expect("splice dump");
    dump_with(w.pid, &b, &["-s", "--pre-dump-mode", "read"], &mut NoNotify).expect("read dump");
    assert_same_pages(&a, &b, w.pid);
    let da = ImagesDir::open(&a).unwrap();
    let core: CoreEntry = da.core(w.pid as u32).unwrap();
    assert_eq!(
        core.tc.unwrap().task_state,
        3,
        "stopped task recorded as stopped"
    );
}

#[test]
fn image_set_matches_criu_loop() {
    let s = Scratch::new("layout");
    let w = Workload::start(&s, 4, &[]);
    dump_with(w.pid, &s.images(), &["-R"], &mut NoNotify).expect("dump");
    let norm = |set: BTreeSet<String>, pid: &str| -> BTreeSet<String> {
        set.into_iter()
            .filter(|n| n != "dump.log")
            .map(|n| n.replace(pid, "PID"))
            .collect()
    };
    let ours = norm(names(&s.images()), &w.pid.to_string());
    let root = std::env::var_os("CRIU_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/testdata/criu-4.2"));
    let loop_dir = root.join("loop/images");
    assert!(
        loop_dir.join("inventory.img").is_file(),
        "CRIU 4.2 reference images not found under {} (set CRIU_TESTDATA)",
        root.display()
    );
    let theirs = norm(names(&loop_dir), "24125");
    assert_eq!(ours, theirs);
}

#[test]
fn optional_fields_match_criu_loop() {
    let s = Scratch::new("fields");
    let w = Workload::start(&s, 4, &[]);
    dump_with(w.pid, &s.images(), &["-R"], &mut NoNotify).expect("dump");
    let root = std::env::var_os("CRIU_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/testdata/criu-4.2"));
    let theirs_dir = ImagesDir::open(root.join("loop/images")).expect("CRIU 4.2 loop images");
    let ours_dir = ImagesDir::open(s.images()).unwrap();

    let presence = |c: &CoreEntry| {
        let tc = c.tc.as_ref().unwrap();
        let th = c.thread_core.as_ref().unwrap();
        let x = c.thread_info.as_ref().unwrap();
        vec![
            ("gpregs.mode", x.gpregs.mode.is_some()),
            ("fpregs.xsave", x.fpregs.xsave.is_some()),
            ("tc.timers", tc.timers.is_some()),
            ("tc.rlimits", tc.rlimits.is_some()),
            ("tc.cg_set", tc.cg_set.is_some()),
            ("tc.signals_s", tc.signals_s.is_some()),
            ("tc.loginuid", tc.loginuid.is_some()),
            ("tc.oom_score_adj", tc.oom_score_adj.is_some()),
            ("tc.child_subreaper", tc.child_subreaper.is_some()),
            ("tc.stop_signo", tc.stop_signo.is_some()),
            ("thread.sched_nice", th.sched_nice.is_some()),
            ("thread.sched_policy", th.sched_policy.is_some()),
            ("thread.sched_prio", th.sched_prio.is_some()),
            ("thread.blk_sigset", th.blk_sigset.is_some()),
            ("thread.sas", th.sas.is_some()),
            ("thread.signals_p", th.signals_p.is_some()),
            ("thread.creds", th.creds.is_some()),
            ("thread.seccomp_mode", th.seccomp_mode.is_some()),
            ("thread.comm", th.comm.is_some()),
            ("thread.rseq_entry", th.rseq_entry.is_some()),
            ("thread.cg_set", th.cg_set.is_some()),
            ("core.ids", c.ids.is_some()),
        ]
    };
    let ours = ours_dir.core(w.pid as u32).unwrap();
    let theirs = theirs_dir.core(24125).unwrap();
    assert_eq!(presence(&ours), presence(&theirs));

    let mm_presence = |m: &MmEntry| {
        let file = m.vmas.iter().find(|v| v.status & 0x40 != 0).unwrap();
        let anon = m.vmas.iter().find(|v| v.status == 0x201).unwrap();
        let vvar = m.vmas.iter().find(|v| v.status & 0x1000 != 0).unwrap();
        vec![
            ("dumpable", m.dumpable.is_some()),
            ("thp_disabled", m.thp_disabled.is_some()),
            ("file.fdflags", file.fdflags.is_some()),
            ("anon.fdflags", anon.fdflags.is_some()),
            ("anon.madv", anon.madv.is_some()),
            ("vvar.madv", vvar.madv.is_some()),
            ("auxv 44 words", m.mm_saved_auxv.len() == 44),
        ]
    };
    let ours_mm = ours_dir.mm(w.pid as u32).unwrap().unwrap();
    let theirs_mm = theirs_dir.mm(24125).unwrap().unwrap();
    assert_eq!(mm_presence(&ours_mm), mm_presence(&theirs_mm));
    let statuses = |m: &MmEntry| m.vmas.iter().map(|v| v.status).collect::<BTreeSet<_>>();
    assert_eq!(statuses(&ours_mm), statuses(&theirs_mm));

    let inv_presence = |i: &InventoryEntry| {
        vec![
            ("root_cg_set", i.root_cg_set.is_some()),
            ("lsmtype", i.lsmtype.is_some()),
            ("network_lock_method", i.network_lock_method.is_some()),
            ("plugins_entry", i.plugins_entry.is_some()),
            ("dump_criu_run_id", i.dump_criu_run_id.is_some()),
            ("dump_uptime", i.dump_uptime.is_some()),
            (
                "root_ids",
                i.root_ids == theirs_dir.inventory().unwrap().root_ids,
            ),
        ]
    };
    assert_eq!(
        inv_presence(&ours_dir.inventory().unwrap()),
        inv_presence(&theirs_dir.inventory().unwrap())
    );
    let stats: StatsEntry = ours_dir
        .read_single(ImageKind::StatsDump, 0)
        .unwrap()
        .unwrap();
    let criu_stats: StatsEntry = theirs_dir
        .read_single(ImageKind::StatsDump, 0)
        .unwrap()
        .unwrap();
    let d = stats.dump.unwrap();
    let c = criu_stats.dump.unwrap();
    assert_eq!(
        (
            d.irmap_resolve.is_some(),
            d.page_pipes.is_some(),
            d.shpages_written.is_some()
        ),
        (
            c.irmap_resolve.is_some(),
            c.page_pipes.is_some(),
            c.shpages_written.is_some()
        )
    );
}

/// Locked memory (`lo` in smaps' `VmFlags`) keeps `MAP_LOCKED` in
/// `mm.img`, and its pages are never lazy (CRIU's `vma_entry_can_be_lazy`).
#[test]
fn locked_memory_pages_are_not_lazy() {
    use criu_engine::mem::pagemap::PE_PRESENT;
    let s = Scratch::new("mlock");
    let w = Workload::start(&s, 4, &["mlock"]);
    dump_with(w.pid, &s.images(), &["-R"], &mut NoNotify).expect("dump");
    let dir = ImagesDir::open(s.images()).unwrap();
    let mm: MmEntry = dir.mm(w.pid as u32).unwrap().unwrap();
    let locked: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .filter(|v| v.flags & libc::MAP_LOCKED as u32 != 0)
        .map(|v| (v.start, v.end))
        .collect();
    assert_eq!(locked.len(), 1, "one locked VMA: {locked:x?}");
    let (start, end) = locked[0];
    assert_eq!(end - start, 1 << 20);
    let pagemap = dir.pagemap(w.pid as u32).unwrap().unwrap();
    let in_locked: Vec<_> = pagemap
        .runs()
        .filter(|r| r.vaddr >= start && r.vaddr < end)
        .collect();
    assert!(!in_locked.is_empty(), "the locked pages are saved");
    for r in in_locked {
        assert_eq!(r.flags, PE_PRESENT, "run at {:#x}", r.vaddr);
    }
    w.assert_untouched(&w.maps());
}
