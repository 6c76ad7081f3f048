//! The swrk worker killed with SIGKILL at random points of a dump: the
//! ptrace work runs in an agent process that unwinds the dump when the
//! worker dies, so every time the target ends up running, traced by nobody,
//! without the injection stub, and still reporting.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReq, CriuReqType as T};
use criu_tests::{alive, become_subreaper, bin, req, require_root, task_state, TempDir, Workload};
use criu_transport::client::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn dump_req(dir: &std::fs::File, pid: i32) -> CriuReq {
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        leave_running: Some(true),
        log_level: Some(0),
        ..Default::default()
    });
    r
}

/// `TracerPid:` of `/proc/<pid>/status`.
fn tracer(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Anonymous executable mappings of every thread's address space: the
/// injection stub would be one; the workload has none of its own.
fn anon_exec_mappings(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5 && f[1].contains('x')
        })
        .map(str::to_owned)
        .collect()
}

/// Threads of `pid`.
fn threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A small xorshift generator seeded from the clock: delays differ from
/// run to run, and the seed is printed for a failing run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// One dump through a fresh swrk worker; with `kill_after`, the worker is
/// SIGKILLed that long after the request was sent. Returns how long the
/// call took and whether it answered.
fn dump_once(w: &Workload, kill_after: Option<Duration>) -> (Duration, bool) {
    let dir = TempDir::new("worker-kill");
    let handle = std::fs::File::open(dir.path()).unwrap();
    let client = Client::spawn_swrk(&bin("criu-swrk"), &[]).unwrap();
    let worker = Pid::from_raw(i32::try_from(client.worker_pid().unwrap()).unwrap());
    let request = dump_req(&handle, w.pid);
    let t0 = Instant::now();
    let answered = std::thread::scope(|s| {
        let call = s.spawn(|| client.call(&request));
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            let _ = kill(worker, Signal::SIGKILL);
        }
        call.join().unwrap()
    });
    let took = t0.elapsed();
    let _ = client.wait();
    if kill_after.is_none() {
        let resp = answered.as_ref().expect("DUMP answered");
        assert!(resp.success, "{resp:?}");
    }
    (took, answered.is_ok_and(|r| r.success))
}

/// Waits until no thread of the target is traced or stopped, then checks
/// it has no stub and still reports.
fn assert_intact(w: &Workload, what: &str) {
    assert!(alive(w.pid), "{what}: target {} died", w.pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ts = threads(w.pid);
        let traced = ts.iter().any(|&t| tracer(t) != Some(0));
        let stopped = ts.iter().any(|&t| matches!(task_state(t), Some('t' | 'T')));
        if !traced && !stopped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: target {} left traced={traced} stopped={stopped}",
            w.pid
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        anon_exec_mappings(w.pid),
        Vec::<String>::new(),
        "{what}: stub left"
    );
    let line = w.wait_for_line_after(None);
    let next = w.wait_for_line_after(Some(line.n));
    assert_eq!(next.counters.len(), 4, "{what}: {next:?}");
}

#[test]
fn worker_killed_at_random_points_of_a_dump_leaves_the_target_intact() {
    require_root();
    become_subreaper();
    let w = Workload::start(32, Some("threads 4"));
    let (full, _) = dump_once(&w, None);
    assert_intact(&w, "after a complete dump");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let span = u64::try_from(full.as_micros()).unwrap() + 2_000;
    let mut answered = 0;
    for round in 0..16 {
        let delay = Duration::from_micros(rng.next(span));
        let (_, ok) = dump_once(&w, Some(delay));
        answered += usize::from(ok);
        assert_intact(
            &w,
            &format!("seed {seed} round {round} kill after {delay:?}"),
        );
    }
    // Most kills land before the answer; a late one may find it sent.
    assert!(answered < 16, "no kill hit a running dump (seed {seed})");
}
