//! Threads and process trees: CRIU 4.2's `threads` and `tree` images
//! restored by us, and our own dump and restore of `criu-workload threads N`
//! and of process trees.
//!
//! Restore forks without exec and must run on a single-threaded process, so
//! this file has its own `main` (`harness = false`) running the cases one
//! after another, as a child subreaper.
//!
//! Needs: root with `CAP_CHECKPOINT_RESTORE`, `clone3` with `set_tid`, pids
//! 24148-24152 and 24175-24178 free, `/work/shared/testdata/criu-4.2` and the workload
//! binary (`cargo build -p criu-tests --bin criu-workload`).

mod harness;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criu_engine::notify::NoNotify;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

const TESTDATA: &str = "/work/shared/testdata/criu-4.2";
const RUN_DIR: &str = "/tmp/criu-testdata";
const THREADS_PID: i32 = 24148;
const THREADS_TIDS: [i32; 5] = [24148, 24149, 24150, 24151, 24152];

fn copy_dir(from: &Path, to: &Path, mode: u32) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if dst.exists() && fs::read(&dst).unwrap() == fs::read(entry.path()).unwrap() {
            continue;
        }
        let _ = fs::remove_file(&dst);
        fs::copy(entry.path(), &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn kill_and_reap(pid: i32) {
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Waits (up to 20 s) until none of `pids` exists: a task killed by an
/// earlier run may linger as a zombie until init reaps it.
fn wait_free(pids: impl IntoIterator<Item = i32> + Clone) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids
        .clone()
        .into_iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "the pids of the images stay taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tids(pid: i32) -> Vec<i32> {
    let mut t: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    t.sort_unstable();
    t
}

/// Runs a dump or restore; a restore returns the root's pid.
fn run(args: &[&str]) -> Result<i32, String> {
    let cfg = criu_engine::config::parse_args(args.iter().map(|s| s.to_string())).unwrap();
    let opts = criu_engine::opts::from_config(&cfg).unwrap();
    match args[0] {
        "dump" => criu_engine::dump::run(&opts, &mut NoNotify)
            .map(|_| 0)
            .map_err(|e| format!("{e:?}")),
        _ => criu_engine::restore::run(&opts, &mut NoNotify)
            .map(|o| o.root_pid)
            .map_err(|e| format!("{e:?}")),
    }
}

fn lines(log: &Path) -> Vec<Vec<u64>> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .map(|w| w.parse().ok().or_else(|| u64::from_str_radix(w, 16).ok()))
                .collect()
        })
        .collect()
}

/// Waits until the log has `n` numeric lines (up to 10 s).
fn wait_lines(log: &Path, n: usize) -> Vec<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = lines(log);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CRIU 4.2's `threads` images: all five threads come back with their
/// tids and every counter keeps growing.
fn criu_threads_scenario() {
    copy_dir(
        &Path::new(TESTDATA).join("bin"),
        &Path::new(RUN_DIR).join("bin"),
        0o755,
    );
    copy_dir(
        &Path::new(TESTDATA).join("threads/files"),
        &Path::new(RUN_DIR).join("threads"),
        0o644,
    );
    let images = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(TESTDATA).join("threads/images"),
        images.path(),
        0o644,
    );
    let log = Path::new(RUN_DIR).join("threads/threads.log");
    let dumped = lines(&log);
    wait_free(THREADS_TIDS);
    run(&["restore", "-D", images.path().to_str().unwrap()]).expect("restore");
    let after = wait_lines(&log, dumped.len() + 3);
    let restored_tids = tids(THREADS_PID);
    let still_alive = alive(THREADS_PID);
    kill_and_reap(THREADS_PID);
    assert!(still_alive, "restored process died: {after:?}");
    assert_eq!(restored_tids, THREADS_TIDS);
    assert!(after.len() >= dumped.len() + 3, "{after:?}");
    let last_dumped = dumped.last().unwrap();
    let last = after.last().unwrap();
    for i in 0..4 {
        assert!(last[i] > last_dumped[i], "counter {i} stuck: {after:?}");
    }
}

/// `(ppid, pgid, sid, state)` of `pid` from `/proc/<pid>/stat` (`R` and `D`
/// read as `S`).
fn ids(pid: i32) -> Option<(i32, i32, i32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some((
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        // Running, sleeping and disk sleep are one "alive" state here: which
        // one a live task shows depends on the moment it is looked at.
        match f[0].chars().next()? {
            'R' | 'D' => 'S',
            c => c,
        },
    ))
}

/// CRIU 4.2's `tree` images: a session leader and three children, pipes
/// from the parent to each; all four come back with their pids, parent,
/// group and session, and the children keep logging what the parent sends.
fn criu_tree_scenario() {
    copy_dir(
        &Path::new(TESTDATA).join("bin"),
        &Path::new(RUN_DIR).join("bin"),
        0o755,
    );
    copy_dir(
        &Path::new(TESTDATA).join("tree/files"),
        &Path::new(RUN_DIR).join("tree"),
        0o644,
    );
    let images = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(TESTDATA).join("tree/images"),
        images.path(),
        0o644,
    );
    let root = 24175;
    let logs: Vec<PathBuf> = (0..3)
        .map(|c| Path::new(RUN_DIR).join(format!("tree/tree-child{c}.log")))
        .collect();
    let dumped: Vec<usize> = logs.iter().map(|l| lines(l).len()).collect();
    wait_free(root..root + 4);
    run(&["restore", "-D", images.path().to_str().unwrap()]).expect("restore");
    let after: Vec<Vec<Vec<u64>>> = logs
        .iter()
        .zip(&dumped)
        .map(|(l, n)| wait_lines(l, n + 3))
        .collect();
    let states: Vec<_> = (root..root + 4).map(ids).collect();
    // The root first: its children come to us (subreaper) and are reaped.
    for pid in root..root + 4 {
        kill_and_reap(pid);
    }
    let me = std::process::id() as i32;
    assert_eq!(states[0], Some((me, root, root, 'S')), "{states:?}");
    for s in &states[1..] {
        assert_eq!(*s, Some((root, root, root, 'S')), "{states:?}");
    }
    for (c, (a, n)) in after.iter().zip(&dumped).enumerate() {
        assert!(a.len() >= n + 3, "child {c} logged nothing new: {a:?}");
        let tail: Vec<u64> = a[*n..].iter().map(|l| l[0]).collect();
        assert!(
            tail.windows(2).all(|w| w[1] == w[0] + 1),
            "child {c}: {tail:?}"
        );
        assert_eq!(
            tail[0],
            a[n - 1][0] + 1,
            "child {c} lost or repeated a number"
        );
    }
}

/// CRIU 4.2's `pidns` images: the init of a pid namespace comes back as
/// pid 1 of a new pid namespace and keeps logging `N pid=1`.
fn criu_pidns_scenario() {
    copy_dir(
        &Path::new(TESTDATA).join("bin"),
        &Path::new(RUN_DIR).join("bin"),
        0o755,
    );
    copy_dir(
        &Path::new(TESTDATA).join("pidns/files"),
        &Path::new(RUN_DIR).join("pidns"),
        0o644,
    );
    let images = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(TESTDATA).join("pidns/images"),
        images.path(),
        0o644,
    );
    let log = Path::new(RUN_DIR).join("pidns/pidns.log");
    let dumped = fs::read_to_string(&log).unwrap();
    let host = run(&["restore", "-D", images.path().to_str().unwrap()]).expect("restore");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = String::new();
    while Instant::now() < deadline {
        now = fs::read_to_string(&log).unwrap_or_default();
        if now.lines().count() >= dumped.lines().count() + 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = fs::read_to_string(format!("/proc/{host}/status")).unwrap_or_default();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    kill_and_reap(host);
    assert_eq!(nspid, Some(vec![host.to_string(), "1".to_owned()]));
    let new: Vec<&str> = now.lines().skip(dumped.lines().count()).collect();
    assert!(new.len() >= 2, "nothing new in the log: {now}");
    let last_dumped: u64 = dumped
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for (i, l) in new.iter().enumerate() {
        assert_eq!(*l, format!("{} pid=1", last_dumped + 1 + i as u64));
    }
}

/// Our dump of the init of a pid namespace (CRIU's `pidns` program started
/// afresh) restored into a new pid namespace: pid 1 again, log goes on.
fn own_pidns_round_trip() {
    copy_dir(
        &Path::new(TESTDATA).join("bin"),
        &Path::new(RUN_DIR).join("bin"),
        0o755,
    );
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("pidns.log");
    // Only stdio: whatever else the harness leaked (pipes...) would be
    // dumped too.
    let close_and_run = r#"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec "$0" "$1""#;
    let out = std::process::Command::new("bash")
        .args(["-c", close_and_run])
        .arg(Path::new(RUN_DIR).join("bin/pidns"))
        .arg(&log)
        .output()
        .expect("run pidns");
    assert!(out.status.success(), "{out:?}");
    let host: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    while fs::read_to_string(&log).unwrap_or_default().lines().count() < 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dumped = run(&[
        "dump",
        "-t",
        &host.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]);
    kill_and_reap(host);
    dumped.expect("dump");
    let pstree = criu_proto::img::ImagesDir::open(&images)
        .unwrap()
        .pstree()
        .unwrap();
    assert_eq!(pstree.len(), 1);
    assert_eq!(
        (pstree[0].pid, pstree[0].sid, &pstree[0].threads),
        (1, 1, &vec![1])
    );
    let n = fs::read_to_string(&log).unwrap().lines().count();
    let restored = run(&["restore", "-D", images.to_str().unwrap()]).expect("restore");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = String::new();
    while Instant::now() < deadline {
        now = fs::read_to_string(&log).unwrap_or_default();
        if now.lines().count() >= n + 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive_after = alive(restored);
    kill_and_reap(restored);
    assert!(alive_after);
    let new: Vec<&str> = now.lines().skip(n).collect();
    assert!(new.len() >= 2, "{now}");
    for (i, l) in new.iter().enumerate() {
        assert_eq!(*l, format!("{} pid=1", n + i), "{now}");
    }
}

/// A shell forking short-lived children all the time is dumped (leaving it
/// running) again and again: every dump succeeds and its tree is
/// consistent (every parent is in it, before its children).
fn forking_tree_is_frozen_consistently() {
    let scratch = tempfile::tempdir().unwrap();
    let script = r#"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
setsid bash -c 'while :; do (sleep 0.01 &) ; sleep 0.002 & wait; done' </dev/null >/dev/null 2>&1 &
echo $!"#;
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("run bash");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut sizes = Vec::new();
    let mut failure = None;
    for round in 0..5 {
        let images = scratch.path().join(format!("r{round}"));
        fs::create_dir(&images).unwrap();
        let args = [
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            images.to_str().unwrap(),
            "-R",
        ];
        if let Err(e) = run(&args) {
            failure = Some(e);
            break;
        }
        let tree = criu_proto::img::ImagesDir::open(&images)
            .unwrap()
            .pstree()
            .unwrap();
        for (i, t) in tree.iter().enumerate().skip(1) {
            assert!(
                tree[..i].iter().any(|p| p.pid == t.ppid),
                "round {round}: parent of {} missing: {tree:?}",
                t.pid
            );
        }
        sizes.push(tree.len());
    }
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    kill_and_reap(pid);
    assert!(failure.is_none(), "{failure:?}");
    assert!(sizes.iter().all(|&n| n >= 1), "{sizes:?}");
}

/// `kcmp(a, b, KCMP_FILES)`: 0 when both share one descriptor table.
fn same_fd_table(a: i32, b: i32) -> bool {
    // SAFETY: kcmp takes two pids, a type and two integers by value.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, a, b, 2, 0, 0) };
    ret == 0
}

/// A child sharing its parent's descriptor table (`CLONE_FILES`): dumped
/// as CRIU does (its `files_id` is the parent's, one `fdinfo` image for
/// both), restored with `CLONE_FILES` again, and both carry on.
fn shared_fd_table_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("workload.log");
    let pid = start_workload(&log, &["1", "clone-files"]);
    wait_lines(&log, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_tagged(&log, "f").is_none() {
        assert!(Instant::now() < deadline, "the child does not log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let child: i32 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(same_fd_table(pid, child));
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let dumped = run(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]);
    kill_and_reap(pid);
    kill_and_reap(child);
    dumped.expect("dump");
    let dir = criu_proto::img::ImagesDir::open(&images).unwrap();
    let files_id = |p: i32| {
        dir.read_single::<criu_proto::images::TaskKobjIdsEntry>(
            criu_proto::img::ImageKind::Ids,
            p as u64,
        )
        .unwrap()
        .unwrap()
        .files_id
    };
    assert_eq!(files_id(pid), files_id(child));
    let f_dumped = last_tagged(&log, "f").unwrap();
    let n = lines(&log).len();
    let restored = run(&["restore", "-D", images.to_str().unwrap()]);
    let after = wait_lines(&log, n + 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_tagged(&log, "f").unwrap() <= f_dumped + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let f_after = last_tagged(&log, "f").unwrap();
    let shared = same_fd_table(pid, child);
    let both_alive = alive(pid) && alive(child);
    kill_and_reap(pid);
    kill_and_reap(child);
    assert_eq!(restored.expect("restore"), pid);
    assert!(both_alive);
    assert!(shared, "the restored child has a table of its own");
    assert!(after.len() >= n + 2, "the root stopped logging");
    assert!(f_after > f_dumped + 1, "the child stopped at {f_after}");
}

/// A tree with a nested pid namespace (a child that is the init of its
/// own) is refused with a clear error, and the tree carries on.
fn nested_pidns_refused() {
    let script = r#"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
setsid bash -c 'unshare --pid --fork sleep 1000 & wait' </dev/null >/dev/null 2>&1 &
echo $!"#;
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("run bash");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // Wait for the grandchild (the inner init) to exist.
    let deadline = Instant::now() + Duration::from_secs(30);
    let inner = loop {
        let unshare = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|c| c.parse::<i32>().ok());
        let sleep = unshare.and_then(|u| {
            fs::read_to_string(format!("/proc/{u}/task/{u}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<i32>()
                .ok()
        });
        if let Some(s) = sleep {
            break s;
        }
        assert!(Instant::now() < deadline, "no nested pid namespace came up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let scratch = tempfile::tempdir().unwrap();
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let err = run(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]);
    let inner_state = fs::read_to_string(format!("/proc/{inner}/stat"))
        .unwrap_or_default()
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    let root_alive = alive(pid);
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    kill_and_reap(pid);
    let err = err.unwrap_err();
    assert!(err.contains("nested pid namespace"), "{err}");
    assert!(root_alive);
    // Running or sleeping: neither stopped, traced, nor gone.
    assert!(
        matches!(inner_state, Some('R' | 'S')),
        "inner init {inner}: {inner_state:?}"
    );
    assert!(!images.join("inventory.img").exists());
}

/// A tree whose session and group leaders are gone, a child of the root in
/// the session of a live leader that is not its parent, and a child left
/// in the root's session by a parent that called `setsid` after making it
/// (`criu-wl-orphans`): restored through helper tasks and a late `setsid`,
/// every task has its pid, parent, group and session again, no helper is
/// left, and all carry on.
fn orphaned_session_and_group_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("orphans.log");
    let bin = workload_bin().with_file_name("criu-wl-orphans");
    let out = std::process::Command::new(&bin)
        .arg(&log)
        .output()
        .expect("run criu-wl-orphans");
    assert!(out.status.success(), "{out:?}");
    let root: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids: Vec<i32> = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find_map(|l| l.strip_prefix("pids ")) {
            break l.split(' ').map(|w| w.parse().unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "no pids logged");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (b, d, a, c, p, q) = (pids[0], pids[1], pids[2], pids[3], pids[4], pids[5]);
    let (l, x) = (pids[6], pids[7]);
    let tasks = [root, b, d, p, q, l, x];
    let tags = ["b", "d", "p", "q", "l", "x", "r"];
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags.iter().any(|t| last_tagged(&log, t).is_none()) {
        assert!(Instant::now() < deadline, "not every task logs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let children_of = |p: i32| {
        let mut c: Vec<i32> = fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        c.sort_unstable();
        c
    };
    let before: Vec<_> = tasks.iter().map(|&p| ids(p)).collect();
    let children_before: Vec<_> = tasks.iter().map(|&p| children_of(p)).collect();
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let dumped = run(&[
        "dump",
        "-t",
        &root.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]);
    for t in tasks {
        kill_and_reap(t);
    }
    dumped.expect("dump");
    wait_free([root, b, d, a, c, p, q, l, x]);
    let counters = |tag: &str| last_tagged(&log, tag).unwrap();
    let dumped_at = tags.map(counters);
    let restored = run(&["restore", "-D", images.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags
        .iter()
        .zip(dumped_at)
        .any(|(t, n)| last_tagged(&log, t).unwrap() <= n + 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after: Vec<_> = tasks.iter().map(|&p| ids(p)).collect();
    let children_after: Vec<_> = tasks.iter().map(|&p| children_of(p)).collect();
    let helpers_left = [a, c].map(|p| Path::new(&format!("/proc/{p}")).exists());
    let now = tags.map(counters);
    for t in tasks {
        kill_and_reap(t);
    }
    assert_eq!(restored.expect("restore"), root);
    let me = std::process::id() as i32;
    assert_eq!(after[0].map(|a| (a.0, a.1, a.2)), Some((me, root, root)));
    for i in 1..tasks.len() {
        let (bf, af) = (before[i].unwrap(), after[i].unwrap());
        assert_eq!(
            (af.0, af.1, af.2),
            (bf.0, bf.1, bf.2),
            "{before:?} {after:?}"
        );
    }
    assert_eq!(before[1].unwrap().1, a, "B's group is A's");
    assert_eq!(before[1].unwrap().2, a, "B's session is A's");
    assert_eq!(before[2].unwrap().1, c, "D's group is C's");
    let q_ids = before[4].map(|t| (t.0, t.1, t.2));
    assert_eq!(q_ids, Some((p, root, root)), "Q: P's child in R's session");
    let x_ids = before[6].map(|t| (t.0, t.1, t.2));
    assert_eq!(x_ids, Some((root, l, l)), "X: R's child in L's session");
    assert_eq!(helpers_left, [false, false], "a helper is left");
    assert_eq!(children_after, children_before, "a helper is left");
    for (i, (n, d)) in now.iter().zip(dumped_at).enumerate() {
        assert!(*n > d + 1, "counter {i} stuck at {n} (dumped at {d})");
    }
}

/// A child sharing its parent's fs information (`CLONE_FS`), which CRIU
/// refuses to dump too, is refused with a clear error, and both carry on.
fn shared_fs_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("clone-fs.log");
    let bin = workload_bin().with_file_name("criu-wl-clone-fs");
    let out = std::process::Command::new(&bin)
        .arg(&log)
        .output()
        .expect("run criu-wl-clone-fs");
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_tagged(&log, "s").is_none() || last_tagged(&log, "r").is_none() {
        assert!(Instant::now() < deadline, "the workload does not log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let child: i32 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let err = run(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        images.to_str().unwrap(),
    ]);
    let at = [
        last_tagged(&log, "r").unwrap(),
        last_tagged(&log, "s").unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while (last_tagged(&log, "r").unwrap() <= at[0] + 1
        || last_tagged(&log, "s").unwrap() <= at[1] + 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = [
        last_tagged(&log, "r").unwrap(),
        last_tagged(&log, "s").unwrap(),
    ];
    kill_and_reap(pid);
    kill_and_reap(child);
    let err = err.unwrap_err();
    assert!(err.contains("SharedObject"), "{err}");
    assert!(err.contains("fs (cwd, root, umask)"), "{err}");
    assert!(
        now[0] > at[0] + 1 && now[1] > at[1] + 1,
        "stopped after the refusal"
    );
    assert!(!images.join("inventory.img").exists());
}

fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe.ancestors().nth(3).unwrap().join("debug/criu-workload");
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// Our dump of a workload with 16 extra threads (leave-running first, then
/// the final dump), restored: same tids, every thread counter continues from
/// where it was dumped.
fn own_threads_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("workload.log");
    let pid = start_workload(&log, &["4", "threads", "16"]);
    wait_lines(&log, 2);
    let before_tids = tids(pid);
    let pid_s = pid.to_string();
    for (name, extra) in [("running", Some("-R")), ("images", None)] {
        let images = scratch.path().join(name);
        fs::create_dir(&images).unwrap();
        let mut args = vec!["dump", "-t", &pid_s, "-D", images.to_str().unwrap()];
        args.extend(extra);
        if let Err(e) = run(&args) {
            kill_and_reap(pid);
            panic!("dump failed: {e}");
        }
    }
    // The final dump killed it; we are its reaper.
    kill_and_reap(pid);
    let dumped = lines(&log);
    let images = scratch.path().join("images");
    run(&["restore", "-D", images.to_str().unwrap()]).expect("restore");
    let after = wait_lines(&log, dumped.len() + 3);
    let restored_tids = tids(pid);
    let still_alive = alive(pid);
    kill_and_reap(pid);
    assert!(still_alive, "restored workload died: {after:?}");
    assert_eq!(before_tids.len(), 17);
    assert_eq!(restored_tids, before_tids);
    let last_dumped = dumped.last().unwrap();
    let last = after.last().unwrap();
    assert_eq!(last.len(), 4 + 16, "{last:?}");
    for i in 4..last.len() {
        assert!(
            last[i] > last_dumped[i],
            "thread counter {i} stuck: {after:?}"
        );
    }
    assert_eq!(
        last[0],
        last_dumped[0] + (after.len() - dumped.len()) as u64
    );
}

/// The pids a `criu-workload ... tree` logged: (w0, w1, w2, zombie, grand).
fn tree_pids(log: &Path) -> (i32, i32, i32, i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let find = |tag: &str| -> Option<Vec<i32>> {
            let l = text.lines().find(|l| l.starts_with(tag))?;
            l.split(' ').skip(1).map(|w| w.parse().ok()).collect()
        };
        if let (Some(t), Some(g)) = (find("tree "), find("grand ")) {
            return (t[0], t[1], t[2], t[3], g[0]);
        }
        assert!(Instant::now() < deadline, "no tree pids logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `shm A B C` line of `log`.
fn last_shm(log: &Path) -> Option<Vec<u64>> {
    fs::read_to_string(log)
        .ok()?
        .lines()
        .filter_map(|l| {
            l.strip_prefix("shm ")?
                .split(' ')
                .map(|w| w.parse().ok())
                .collect::<Option<Vec<u64>>>()
        })
        .next_back()
}

/// The `pipe R W` descriptors a `criu-workload ... tree` logged.
fn tree_pipe(log: &Path) -> (i32, i32) {
    let text = fs::read_to_string(log).unwrap();
    let l = text.lines().find(|l| l.starts_with("pipe ")).unwrap();
    let v: Vec<i32> = l.split(' ').skip(1).map(|w| w.parse().unwrap()).collect();
    (v[0], v[1])
}

/// Starts `criu-workload LOG ARGS...` (it daemonizes) and returns the pid
/// it prints.
fn start_workload(log: &Path, args: &[&str]) -> i32 {
    let out = std::process::Command::new(workload_bin())
        .arg(log)
        .args(args)
        .output()
        .expect("run criu-workload");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Last `N` of the `TAG N` lines of `log`.
fn last_tagged(log: &Path, tag: &str) -> Option<u64> {
    fs::read_to_string(log)
        .ok()?
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .next_back()
}

/// Our dump (leave-running first, then the final one) and restore of a
/// tree: a session leader with 16 threads, a process group of three
/// workers, a zombie, and a grandchild leading its own session, all
/// sharing the log descriptor, a pipe holding unread data and a shared
/// anonymous page the workers write and the root reads. Pids, tids,
/// parents, groups, sessions, the zombie's status and every counter come
/// back, the log descriptor is one file description (one `files.img`
/// entry), and the pipe, the same in every task, still holds its data.
fn own_tree_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("workload.log");
    let root = start_workload(&log, &["4", "tree", "threads", "16"]);
    let (w0, w1, w2, zombie, grand) = tree_pids(&log);
    let all = [root, w0, w1, w2, zombie, grand];
    wait_lines(&log, 2);
    let before: Vec<_> = all.iter().map(|&p| ids(p)).collect();
    let before_tids = tids(root);
    let root_s = root.to_string();
    for (name, extra) in [("running", Some("-R")), ("images", None)] {
        let images = scratch.path().join(name);
        fs::create_dir(&images).unwrap();
        let mut args = vec!["dump", "-t", &root_s, "-D", images.to_str().unwrap()];
        args.extend(extra);
        if let Err(e) = run(&args) {
            for p in all {
                kill_and_reap(p);
            }
            panic!("dump failed: {e}");
        }
    }
    for p in all {
        kill_and_reap(p);
    }
    let tags = ["w0", "w1", "w2", "g"];
    let dumped: Vec<u64> = tags.iter().map(|t| last_tagged(&log, t).unwrap()).collect();
    let shm_dumped = last_shm(&log).unwrap();
    let dumped_lines = lines(&log).len();
    let images = scratch.path().join("images");
    let fdinfo_ids: Vec<Vec<(u32, u32)>> = (2..=6)
        .map(|id| {
            let dir = criu_proto::img::ImagesDir::open(&images).unwrap();
            dir.fdinfo(id)
                .unwrap()
                .iter()
                .map(|f| (f.fd, f.id))
                .collect()
        })
        .collect();
    run(&["restore", "-D", images.to_str().unwrap()]).expect("restore");
    let after_lines = wait_lines(&log, dumped_lines + 3);
    std::thread::sleep(Duration::from_millis(300));
    let after: Vec<_> = all.iter().map(|&p| ids(p)).collect();
    let after_tids = tids(root);
    let zombie_status = fs::read_to_string(format!("/proc/{zombie}/stat")).unwrap_or_default();
    let (pipe_r, _) = tree_pipe(&log);
    let pipe_links: Vec<String> = [root, w0, w1, w2, grand]
        .iter()
        .map(|p| {
            fs::read_link(format!("/proc/{p}/fd/{pipe_r}"))
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    let mut unread = Vec::new();
    if let Ok(mut f) = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{root}/fd/{pipe_r}"))
    {
        let _ = std::io::Read::read_to_end(&mut f, &mut unread);
    }
    let counters: Vec<Option<u64>> = tags.iter().map(|t| last_tagged(&log, t)).collect();
    let shm_after = last_shm(&log).unwrap();
    for p in all {
        kill_and_reap(p);
    }
    let me = std::process::id() as i32;
    assert_eq!(after[0].map(|a| (a.0, a.1, a.2)), Some((me, root, root)));
    for i in 1..all.len() {
        let (b, a) = (before[i].unwrap(), after[i].unwrap());
        assert_eq!(
            (a.0, a.1, a.2),
            (b.0, b.1, b.2),
            "task {}: {before:?} {after:?}",
            all[i]
        );
    }
    assert_eq!(after[4].unwrap().3, 'Z');
    assert_eq!(zombie_status.trim().rsplit(' ').next(), Some("1792"));
    assert_eq!(after_tids, before_tids);
    assert_eq!(after_tids.len(), 17);
    for (i, (d, a)) in dumped.iter().zip(&counters).enumerate() {
        assert!(a.unwrap() > *d, "{} stuck at {d}", tags[i]);
    }
    assert!(after_lines.len() >= dumped_lines + 3);
    assert_eq!(unread, b"unread pipe data\n");
    // The root sees what the workers write: the page is still shared.
    for i in 0..3 {
        assert!(
            shm_after[i] > shm_dumped[i],
            "slot {i}: {shm_dumped:?} -> {shm_after:?}"
        );
    }
    assert!(pipe_links[0].starts_with("pipe:["), "{pipe_links:?}");
    assert!(
        pipe_links.iter().all(|l| *l == pipe_links[0]),
        "{pipe_links:?}"
    );
    // fd 3 (the log) is one files.img entry in every live task.
    let log_ids: Vec<u32> = fdinfo_ids
        .iter()
        .map(|f| f.iter().find(|(fd, _)| *fd == 3).unwrap().1)
        .collect();
    assert!(log_ids.windows(2).all(|w| w[0] == w[1]), "{fdinfo_ids:?}");
}

/// Values of the `TAG N` lines of `log` from line `from` on.
fn tagged_from(log: &Path, tag: &str, from: usize) -> Vec<u64> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .collect()
}

/// The issue's tree under `leave_running`: the dump leaves every task
/// running untouched (same ids, counters going on, no stub); restored from
/// those images once the tree is killed, every task comes back with its
/// pid, parent, group and session, the zombie as a zombie, all 17 tids,
/// the unread pipe data, the shared page still shared, and every counter
/// resuming from the value it had when frozen.
fn own_tree_leave_running_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("workload.log");
    let root = start_workload(&log, &["4", "tree", "threads", "16"]);
    let (w0, w1, w2, zombie, grand) = tree_pids(&log);
    let all = [root, w0, w1, w2, zombie, grand];
    let tags = ["w0", "w1", "w2", "g"];
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags.iter().any(|t| last_tagged(&log, t).is_none()) {
        assert!(Instant::now() < deadline, "the tree does not log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: Vec<_> = all.iter().map(|&p| ids(p)).collect();
    let before_tids = tids(root);
    let pre: Vec<u64> = tags.iter().map(|t| last_tagged(&log, t).unwrap()).collect();
    let images = scratch.path().join("images");
    fs::create_dir(&images).unwrap();
    let dumped = run(&[
        "dump",
        "-t",
        &root.to_string(),
        "-D",
        images.to_str().unwrap(),
        "-R",
    ]);
    let post: Vec<u64> = tags.iter().map(|t| last_tagged(&log, t).unwrap()).collect();
    // Still running: every counter moves on past what it was after the dump.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags
        .iter()
        .zip(&post)
        .any(|(t, &v)| last_tagged(&log, t).unwrap() <= v + 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let running: Vec<u64> = tags.iter().map(|t| last_tagged(&log, t).unwrap()).collect();
    let kept: Vec<_> = all.iter().map(|&p| ids(p)).collect();
    let stub_free = all[..4].iter().chain(std::iter::once(&grand)).all(|&p| {
        !fs::read_to_string(format!("/proc/{p}/maps"))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 5 && f[1].contains('x')
            })
    });
    for p in all {
        kill_and_reap(p);
    }
    dumped.expect("dump");
    assert_eq!(kept, before, "the dump changed the running tree");
    assert!(stub_free, "a stub is left in the running tree");
    for (i, (r, p)) in running.iter().zip(&post).enumerate() {
        assert!(r > &(p + 1), "{} stopped after the dump", tags[i]);
    }
    wait_free(all);
    let from = lines_total(&log);
    run(&["restore", "-D", images.to_str().unwrap()]).expect("restore");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags.iter().any(|t| tagged_from(&log, t, from).len() < 3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after: Vec<_> = all.iter().map(|&p| ids(p)).collect();
    let after_tids = tids(root);
    let zombie_status = fs::read_to_string(format!("/proc/{zombie}/stat")).unwrap_or_default();
    let (pipe_r, _) = tree_pipe(&log);
    let mut unread = Vec::new();
    if let Ok(mut f) = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{root}/fd/{pipe_r}"))
    {
        let _ = std::io::Read::read_to_end(&mut f, &mut unread);
    }
    let resumed: Vec<Vec<u64>> = tags.iter().map(|t| tagged_from(&log, t, from)).collect();
    let shm: Vec<Vec<u64>> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter_map(|l| {
            l.strip_prefix("shm ")?
                .split(' ')
                .map(|w| w.parse().ok())
                .collect()
        })
        .collect();
    for p in all {
        kill_and_reap(p);
    }
    let me = std::process::id() as i32;
    assert_eq!(after[0].map(|a| (a.0, a.1, a.2)), Some((me, root, root)));
    for i in 1..all.len() {
        let (b, a) = (before[i].unwrap(), after[i].unwrap());
        assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2), "task {}", all[i]);
    }
    assert_eq!(after[4].unwrap().3, 'Z');
    assert_eq!(zombie_status.trim().rsplit(' ').next(), Some("1792"));
    assert_eq!(after_tids, before_tids);
    assert_eq!(unread, b"unread pipe data\n");
    for (i, r) in resumed.iter().enumerate() {
        assert!(r.len() >= 3, "{} did not resume: {r:?}", tags[i]);
        // Frozen somewhere between the values logged before and after the
        // dump, it goes on from there.
        assert!(
            (pre[i] + 1..=post[i] + 1).contains(&r[0]),
            "{} resumed at {} (dumped between {} and {})",
            tags[i],
            r[0],
            pre[i],
            post[i]
        );
        assert!(r.windows(2).all(|w| w[1] == w[0] + 1), "{}: {r:?}", tags[i]);
    }
    let (first, last) = (shm.first().unwrap(), shm.last().unwrap());
    for slot in 0..3 {
        assert!(last[slot] > first[slot], "slot {slot}: {shm:?}");
    }
}

/// Lines in `log` so far.
fn lines_total(log: &Path) -> usize {
    fs::read_to_string(log).unwrap_or_default().lines().count()
}

fn main() {
    let cases: &[(&str, fn())] = &[
        ("criu_threads_scenario", criu_threads_scenario),
        ("own_threads_round_trip", own_threads_round_trip),
        ("criu_tree_scenario", criu_tree_scenario),
        ("own_tree_round_trip", own_tree_round_trip),
        (
            "own_tree_leave_running_round_trip",
            own_tree_leave_running_round_trip,
        ),
        ("criu_pidns_scenario", criu_pidns_scenario),
        ("own_pidns_round_trip", own_pidns_round_trip),
        ("shared_fd_table_round_trip", shared_fd_table_round_trip),
        ("shared_fs_refused", shared_fs_refused),
        ("nested_pidns_refused", nested_pidns_refused),
        (
            "orphaned_session_and_group_round_trip",
            orphaned_session_and_group_round_trip,
        ),
        (
            "forking_tree_is_frozen_consistently",
            forking_tree_is_frozen_consistently,
        ),
    ];
    harness::run(cases, || {});
}
