//! Who may do what through the service: an unprivileged client (a uid with
//! no passwd entry, no groups, no capabilities) checkpoints and restores its
//! own process, and every request that would reach beyond its own lane is
//! refused with EPERM before any task is touched.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use criu_proto::rpc::{CriuOpts, CriuReq, CriuReqType as T, CriuResp};
use criu_tests::{
    alive, become_subreaper, bin, call_as, kill_and_reap, req, require_root, task_state, user_dir,
    Service, TempDir, Workload, OTHER_USER, USER,
};
use criu_transport::client::Client;

fn dump_req(pid: i32, dir: Option<&Path>) -> CriuReq {
    let mut r = req(T::Dump);
    r.opts = Some(CriuOpts {
        images_dir_fd: -1,
        images_dir: dir.map(|d| d.display().to_string()),
        pid: Some(pid),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    r
}

fn restore_req() -> CriuReq {
    let mut r = req(T::Restore);
    r.opts = Some(CriuOpts {
        images_dir_fd: -1,
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    r
}

fn uid_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The answer was a refusal naming `what`, with `cr_errno = EPERM`.
fn assert_refused(resp: &CriuResp, what: &str) {
    assert!(!resp.success, "refused: {resp:?}");
    assert_eq!(resp.cr_errno, Some(libc::EPERM), "{resp:?}");
    let msg = resp.cr_errmsg.clone().unwrap_or_default();
    assert!(
        msg.contains("not permitted for uid 4242") && msg.contains(what),
        "message names the rule ({what}): {msg}"
    );
}

/// The workload is alive, not stopped, and still reports.
fn assert_untouched(w: &Workload) {
    assert!(alive(w.pid), "{} alive", w.pid);
    assert!(
        !matches!(task_state(w.pid), Some('t' | 'T')),
        "{} not left stopped",
        w.pid
    );
    let line = w.wait_for_line_after(None);
    w.wait_for_line_after(Some(line.n));
}

#[test]
fn an_unprivileged_user_dumps_and_restores_its_own_process() {
    require_root();
    become_subreaper();
    let service = Service::start(&bin("criu-serviced"));
    let w = Workload::start_as(USER, USER, 1);
    let before = w.wait_for_line_after(None);
    let dir = user_dir("authz-own", USER);

    // Dump, naming the directory by path: it is opened as the user.
    let resp = call_as(
        USER,
        USER,
        &service.socket,
        &dump_req(w.pid, Some(dir.path())),
        None,
    )
    .expect("DUMP answered");
    assert!(
        resp.success,
        "dump as uid {USER}: {resp:?}\n{}",
        std::fs::read_to_string(dir.path().join("dump.log")).unwrap_or_default()
    );
    assert!(!alive(w.pid), "the dump killed the target");
    let inventory = std::fs::metadata(dir.path().join("inventory.img")).expect("inventory.img");
    assert_eq!(inventory.uid(), USER, "images are written as the user");
    kill_and_reap(w.pid);

    // Restore, naming the directory by a descriptor of the client's own.
    let resp = call_as(
        USER,
        USER,
        &service.socket,
        &restore_req(),
        Some(dir.path()),
    )
    .expect("RESTORE answered");
    assert!(
        resp.success,
        "restore as uid {USER}: {resp:?}\n{}",
        std::fs::read_to_string(dir.path().join("restore.log")).unwrap_or_default()
    );
    assert_eq!(resp.restore.map(|r| r.pid), Some(w.pid), "same pid");
    assert_eq!(
        uid_of(w.pid),
        vec![USER; 4],
        "restored with the user's uids"
    );
    let after = w.wait_for_line_after(Some(before.n));
    assert_eq!(after.checksum, before.checksum, "memory intact");
    // The restored process is dumpable again: the user can dump it once more.
    let again = user_dir("authz-own-again", USER);
    let mut r = dump_req(w.pid, Some(again.path()));
    r.opts.as_mut().unwrap().leave_running = Some(true);
    let resp = call_as(USER, USER, &service.socket, &r, None).expect("second DUMP answered");
    assert!(resp.success, "second dump: {resp:?}");
    assert_untouched(&w);
}

#[test]
fn forbidden_requests_of_an_unprivileged_user_are_refused() {
    require_root();
    become_subreaper();
    let service = Service::start(&bin("criu-serviced"));
    let rootw = Workload::start(1, None);
    let other = Workload::start_as(OTHER_USER, OTHER_USER, 1);
    let own = Workload::start_as(USER, USER, 1);
    let dir = user_dir("authz-refused", USER);
    let call =
        |r: &CriuReq| call_as(USER, USER, &service.socket, r, None).expect("request answered");

    assert_refused(&call(&dump_req(rootw.pid, Some(dir.path()))), "uids");
    assert_refused(&call(&dump_req(other.pid, Some(dir.path()))), "uids");
    // A self-dump request (no pid) from the client dumps the client.
    let mut r = dump_req(own.pid, Some(dir.path()));
    r.opts.as_mut().unwrap().config_file = Some("/etc/shadow".into());
    assert_refused(&call(&r), "config_file");
    let mut r = dump_req(own.pid, Some(dir.path()));
    r.opts.as_mut().unwrap().root = Some("/".into());
    assert_refused(&call(&r), "root");
    let mut r = dump_req(own.pid, Some(dir.path()));
    r.opts.as_mut().unwrap().external = vec!["mnt[]:m".into()];
    assert_refused(&call(&r), "external");
    let mut r = dump_req(own.pid, Some(dir.path()));
    r.opts.as_mut().unwrap().parent_img = Some("../elsewhere".into());
    assert_refused(&call(&r), "parent_img");
    let mut r = restore_req();
    {
        let o = r.opts.as_mut().unwrap();
        o.images_dir = Some(dir.path().display().to_string());
        o.exec_cmd = vec!["/bin/true".into()];
    }
    assert_refused(&call(&r), "exec_cmd");

    // Images of a root process, readable by everyone: refused for their
    // credentials, before any task is created.
    let root_images = TempDir::new("authz-root-images");
    std::fs::set_permissions(root_images.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut r = dump_req(rootw.pid, Some(root_images.path()));
    r.opts.as_mut().unwrap().leave_running = Some(true);
    let resp = Client::connect(&service.socket).unwrap().call(&r).unwrap();
    assert!(resp.success, "root dumps its own process: {resp:?}");
    for entry in std::fs::read_dir(root_images.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The user cannot create a log there: the log goes to the worker's stderr.
    let mut r = restore_req();
    {
        let o = r.opts.as_mut().unwrap();
        o.log_file = None;
        o.log_to_stderr = Some(true);
    }
    let resp = call_as(USER, USER, &service.socket, &r, Some(root_images.path()))
        .expect("RESTORE answered");
    assert_refused(&resp, "carry uids");

    // A directory it cannot enter, by path; one it can read but not write,
    // by descriptor: the dump fails and writes nothing.
    let closed = TempDir::new("authz-closed");
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let resp = call(&dump_req(own.pid, Some(closed.path())));
    assert!(!resp.success, "dump into a root-only directory: {resp:?}");
    assert!(
        resp.cr_errmsg.as_deref().unwrap_or("").contains("EACCES"),
        "{resp:?}"
    );
    let read_only = TempDir::new("authz-read-only");
    std::fs::set_permissions(read_only.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut r = dump_req(own.pid, None);
    r.opts.as_mut().unwrap().log_file = None;
    let resp =
        call_as(USER, USER, &service.socket, &r, Some(read_only.path())).expect("DUMP answered");
    assert!(!resp.success, "dump into a read-only directory: {resp:?}");
    assert_eq!(
        std::fs::read_dir(read_only.path()).unwrap().count(),
        0,
        "nothing written into a directory the user cannot write"
    );

    for w in [&rootw, &other, &own] {
        assert_untouched(w);
    }
}

#[test]
fn the_socket_is_open_to_everyone_or_to_one_group() {
    require_root();
    let service = Service::start(&bin("criu-serviced"));
    let mode = std::fs::metadata(&service.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666);
    let version = req(T::Version);
    let resp = call_as(USER, USER, &service.socket, &version, None).expect("VERSION as a user");
    assert!(resp.success && resp.version.is_some(), "{resp:?}");

    let dir = TempDir::new("authz-group");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("criu.sock");
    let mut child = std::process::Command::new(bin("criu"))
        .args(["service", "--group", &OTHER_USER.to_string(), "--address"])
        .arg(&socket)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Client::connect(&socket).is_err() {
        assert!(std::time::Instant::now() < deadline, "service listens");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), OTHER_USER);
    assert!(
        call_as(USER, USER, &socket, &version, None).is_err(),
        "a user outside the group cannot connect"
    );
    let resp = call_as(OTHER_USER, OTHER_USER, &socket, &version, None)
        .expect("a member of the group connects");
    assert!(resp.success);
    child.kill().unwrap();
    child.wait().unwrap();
}
