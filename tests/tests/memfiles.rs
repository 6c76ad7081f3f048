//! memfds, shared file mappings, ghost files, link remaps, SysV shared
//! memory and file locks, end to end through the `criu` CLI: the target
//! (`criu-wl-memfiles`) is dumped, killed and restored, then checks its
//! objects from the inside (`DIR/go` -> `DIR/result`); locks are checked
//! from this process, a second one. Each is also dumped with
//! `--leave-running`. Kinds the dump refuses are checked for their message.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use criu_proto::rpc::CriuOpts;
use criu_tests::{alive, become_subreaper, bin, kill_and_reap, require_root, Connect, TempDir};

/// A running `criu-wl-memfiles` with its directory.
struct Target {
    pid: i32,
    /// Its children, when it has some (reaped with it).
    children: Vec<i32>,
    dir: TempDir,
}

impl Target {
    fn start(mode: &str) -> Target {
        require_root();
        become_subreaper();
        let dir = TempDir::new(&format!("memfiles-{mode}"));
        std::fs::create_dir(dir.path().join("img")).unwrap();
        let out = Command::new(bin("criu-wl-memfiles"))
            .arg(mode)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "criu-wl-memfiles {mode} did not start"
        );
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Target {
            pid,
            children: Vec::new(),
            dir,
        }
    }

    fn img(&self) -> String {
        self.dir.path().join("img").to_str().unwrap().to_owned()
    }

    /// Asks the target to check itself and returns its verdict.
    fn verdict(&self) -> String {
        self.verdict_of("")
    }

    /// The verdict of the process answering `go<suffix>`.
    fn verdict_of(&self, suffix: &str) -> String {
        let result = self.dir.path().join(format!("result{suffix}"));
        let _ = std::fs::remove_file(&result);
        std::fs::write(self.dir.path().join(format!("go{suffix}")), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = std::fs::read_to_string(&result) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "target {} never answered",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn criu(&self, args: &[&str]) -> Output {
        Command::new(bin("criu")).args(args).output().unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("img").join(name)).unwrap_or_default()
    }

    /// Dumps with `extra` options; panics with the log on failure.
    fn dump(&self, extra: &[&str]) {
        let pid = self.pid.to_string();
        let img = self.img();
        let mut args = vec!["dump", "-t", &pid, "-D", &img, "-o", "dump.log", "-v4"];
        args.extend_from_slice(extra);
        let out = self.criu(&args);
        assert!(
            out.status.success(),
            "dump failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("dump.log")
        );
    }

    /// Dumps with `extra` options expecting a failure; returns its message.
    fn dump_fails(&self, extra: &[&str]) -> String {
        let pid = self.pid.to_string();
        let img = self.img();
        let mut args = vec!["dump", "-t", &pid, "-D", &img, "-o", "dump.log", "-v4"];
        args.extend_from_slice(extra);
        let out = self.criu(&args);
        assert!(!out.status.success(), "dump should fail");
        assert!(alive(self.pid), "a refused dump leaves the target running");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("dump.log")
        )
    }

    fn restore(&self, extra: &[&str]) {
        let img = self.img();
        let mut args = vec!["restore", "-d", "-D", &img, "-o", "restore.log", "-v4"];
        args.extend_from_slice(extra);
        let out = self.criu(&args);
        assert!(
            out.status.success(),
            "restore failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("restore.log")
        );
        assert!(alive(self.pid));
    }

    /// Dump (leaving it running, checked), then dump, kill, restore, check.
    fn round_trip(&self, dump_opts: &[&str], restore_opts: &[&str]) {
        assert_eq!(self.verdict(), "ok", "before the dump");
        let mut opts = dump_opts.to_vec();
        opts.push("--leave-running");
        self.dump(&opts);
        assert_eq!(self.verdict(), "ok", "after a dump with --leave-running");
        self.dump(dump_opts);
        assert!(!alive(self.pid), "the dumped target is gone");
        kill_and_reap(self.pid);
        for &c in &self.children {
            kill_and_reap(c);
        }
        self.restore(restore_opts);
        assert_eq!(self.verdict(), "ok", "after the restore");
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The root first: its children are then reparented to us.
        for &pid in [&self.pid].into_iter().chain(&self.children) {
            if alive(pid) {
                kill_and_reap(pid);
            }
        }
    }
}

#[test]
fn memfd_fd_mapping_and_seals_survive() {
    let t = Target::start("memfd");
    t.round_trip(&[], &[]);
    let names: Vec<String> = std::fs::read_dir(t.dir.path().join("img"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "memfd.img"), "{names:?}");
    assert!(
        names
            .iter()
            .filter(|n| n.starts_with("pagemap-shmem-"))
            .count()
            >= 3,
        "{names:?}"
    );
}

#[test]
fn shared_file_mapping_writes_reach_the_file() {
    let t = Target::start("shared");
    t.round_trip(&[], &[]);
    // Also seen from outside: the mapping is the file's page cache.
    let before = std::fs::read(t.dir.path().join("shared.dat")).unwrap();
    assert_eq!(before.len(), 8192);
}

#[test]
fn ghost_files_keep_content_offset_and_stay_unlinked() {
    let t = Target::start("ghost");
    t.round_trip(&[], &[]);
    let left: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ghost"))
        .collect();
    assert!(left.is_empty(), "ghost files left behind: {left:?}");
    assert!(t.dir.path().join("img/ghost-file-1.img").exists());
    assert!(t.dir.path().join("img/remap-fpath.img").exists());
}

#[test]
fn unlinked_executable_is_a_ghost_file() {
    let t = Target::start("ghost-exe");
    t.round_trip(&["--ghost-limit", "64M"], &[]);
    assert!(!t.dir.path().join("exe-copy").exists());
    let left: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ghost"))
        .collect();
    assert!(left.is_empty(), "ghost files left behind: {left:?}");
}

#[test]
fn tree_shares_memfd_ghost_and_flock() {
    let mut t = Target::start("tree");
    assert_eq!(t.verdict_of("-child"), "ok");
    let child = child_of(t.pid);
    t.children.push(child);
    t.round_trip(&["--file-locks"], &["--file-locks"]);
    assert!(alive(child), "the child is restored too");
    assert_eq!(t.verdict_of("-child"), "ok");
    let f = std::fs::File::options()
        .write(true)
        .open(t.dir.path().join("tree-flock"))
        .unwrap();
    // SAFETY: flock on a descriptor this test owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, -1, "the inherited flock is held again");
}

/// The only child of `pid`.
fn child_of(pid: i32) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn ghost_file_over_the_limit_is_refused() {
    let t = Target::start("ghost-huge");
    let msg = t.dump_fails(&[]);
    assert!(msg.contains("ghost_limit"), "{msg}");
    // With a higher limit it dumps.
    t.dump(&["--ghost-limit", "4M", "--leave-running"]);
}

#[test]
fn link_remap_needs_its_option_then_round_trips() {
    let t = Target::start("linked");
    let msg = t.dump_fails(&[]);
    assert!(msg.contains("link_remap"), "{msg}");
    t.round_trip(&["--link-remap"], &[]);
    let other = std::fs::read(t.dir.path().join("other")).unwrap();
    assert_eq!(other, b"hello linked");
    let left: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_remap"))
        .collect();
    assert!(left.is_empty(), "link remaps left behind: {left:?}");
}

#[test]
fn sysv_shared_memory_outside_an_ipc_namespace_is_refused() {
    let t = Target::start("sysv");
    let msg = t.dump_fails(&[]);
    assert!(msg.contains("SysV IPC shared memory"), "{msg}");
    assert!(msg.contains("IPC namespace"), "{msg}");
}

#[test]
fn file_leases_are_refused() {
    let t = Target::start("lease");
    // Taking a lease also makes the process the file's owner (F_SETOWN),
    // which is refused first.
    let msg = t.dump_fails(&["--file-locks"]);
    assert!(msg.contains("cannot be dumped yet"), "{msg}");
    assert!(msg.contains("/lease"), "{msg}");
}

/// What another process sees of the target's locks.
fn locks_held(dir: &Path, pid: i32) {
    let open = |name: &str| {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open(dir.join(name))
            .unwrap()
    };
    let f = open("flock");
    // SAFETY: flock on a descriptor this test owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, -1, "flock lock no longer held");
    let getlk = |name: &str, cmd: i32| {
        let f = open(name);
        // SAFETY: an all-zero struct flock is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = 0;
        fl.l_len = 0;
        // SAFETY: `fl` is a live struct flock the kernel fills in.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) }, 0);
        fl
    };
    let px = getlk("posix", libc::F_GETLK);
    assert_eq!(px.l_type, libc::F_WRLCK as i16, "POSIX lock no longer held");
    assert_eq!((px.l_pid, px.l_start, px.l_len), (pid, 0, 100));
    let ofd = getlk("ofd", libc::F_OFD_GETLK);
    assert_eq!(ofd.l_type, libc::F_RDLCK as i16, "OFD lock no longer held");
    assert_eq!((ofd.l_start, ofd.l_len), (10, 10));
}

#[test]
fn file_locks_need_the_option_then_are_taken_again() {
    let t = Target::start("locks");
    locks_held(t.dir.path(), t.pid);
    let msg = t.dump_fails(&[]);
    assert!(msg.contains("file_locks"), "{msg}");
    t.round_trip(&["--file-locks"], &["--file-locks"]);
    locks_held(t.dir.path(), t.pid);
}

/// DUMP or RESTORE through a `criu-swrk` worker with `set` applied to the
/// options; returns whether it succeeded.
fn swrk(t: &Target, ty: criu_proto::rpc::CriuReqType, set: impl FnOnce(&mut CriuOpts)) -> bool {
    let img = std::fs::File::open(t.dir.path().join("img")).unwrap();
    let mut opts = CriuOpts {
        images_dir_fd: img.as_raw_fd(),
        log_file: Some("rpc.log".into()),
        log_level: Some(4),
        ..Default::default()
    };
    set(&mut opts);
    let mut r = criu_tests::req(ty);
    r.opts = Some(opts);
    let client = Connect::Swrk(bin("criu-swrk")).open();
    let resp = client.call(&r).expect("answered");
    let _ = client.wait();
    resp.success
}

#[test]
fn rpc_options_file_locks_and_link_remap() {
    use criu_proto::rpc::CriuReqType as T;
    let t = Target::start("locks");
    assert!(!swrk(&t, T::Dump, |o| o.pid = Some(t.pid)));
    assert!(
        t.log("rpc.log").contains("file_locks"),
        "{}",
        t.log("rpc.log")
    );
    assert!(alive(t.pid));
    assert!(swrk(&t, T::Dump, |o| {
        o.pid = Some(t.pid);
        o.file_locks = Some(true);
    }));
    kill_and_reap(t.pid);
    assert!(
        swrk(&t, T::Restore, |o| o.file_locks = Some(true)),
        "{}",
        t.log("rpc.log")
    );
    locks_held(t.dir.path(), t.pid);

    let l = Target::start("linked");
    assert!(swrk(&l, T::Dump, |o| {
        o.pid = Some(l.pid);
        o.link_remap = Some(true);
    }));
    kill_and_reap(l.pid);
    assert!(swrk(&l, T::Restore, |_| {}), "{}", l.log("rpc.log"));
    assert_eq!(l.verdict(), "ok");
}
