//! The demo of `scripts/demo`: starts the service and swrk workers of every
//! front-end and runs a VERSION / CHECK / FEATURE_CHECK / CPUINFO session
//! through each, printing what comes back.

use std::path::{Path, PathBuf};

use criu_proto::rpc::{CriuFeatures, CriuReqType as T, CriuResp};
use criu_tests::{opts_with_dir, req, Connect, Service, TempDir, FRONTENDS};

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("binary directory")
        .to_owned()
}

fn show(what: &str, resp: &CriuResp) {
    let mut line = format!("  {what:<14} success={}", resp.success);
    if let Some(v) = &resp.version {
        line += &format!(
            " version={}.{} name={:?}",
            v.major_number,
            v.minor_number,
            v.name.clone().unwrap_or_default()
        );
    }
    if let Some(f) = &resp.features {
        line += &format!(
            " mem_track={:?} lazy_pages={:?} pidfd_store={:?}",
            f.mem_track, f.lazy_pages, f.pidfd_store
        );
    }
    if let Some(e) = resp.cr_errno {
        line += &format!(" cr_errno={e}");
    }
    if let Some(m) = &resp.cr_errmsg {
        line += &format!(" cr_errmsg={m:?}");
    }
    println!("{line}");
}

fn session(connect: &Connect, images: &Path) {
    let call = |r| connect.open().call(&r).expect("request answered");
    show("VERSION", &call(req(T::Version)));
    show("CHECK", &call(req(T::Check)));
    let mut r = req(T::FeatureCheck);
    r.features = Some(CriuFeatures {
        mem_track: Some(true),
        lazy_pages: Some(true),
        pidfd_store: Some(true),
    });
    show("FEATURE_CHECK", &call(r));
    let mut r = req(T::CpuinfoDump);
    r.opts = Some(opts_with_dir(images));
    show("CPUINFO_DUMP", &call(r));
    let mut r = req(T::CpuinfoCheck);
    r.opts = Some(opts_with_dir(images));
    show("CPUINFO_CHECK", &call(r));
}

/// A real checkpoint/restore of a running workload through `connect`.
fn checkpoint_restore(connect: &Connect) {
    use std::os::fd::AsRawFd;
    let w = criu_tests::Workload::start(64, None);
    let before = w.wait_for_line_after(None);
    println!(
        "  workload pid {} running: line {} checksum {} (64 MiB of patterned memory)",
        w.pid, before.n, before.checksum
    );
    let images = TempDir::new("demo-dump");
    let dir = std::fs::File::open(images.path()).expect("images dir");
    let mut r = req(T::Dump);
    r.opts = Some(criu_proto::rpc::CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(w.pid),
        log_file: Some("dump.log".into()),
        ..Default::default()
    });
    let start = std::time::Instant::now();
    let resp = connect.open().call(&r).expect("DUMP answered");
    show("DUMP", &resp);
    println!(
        "  dumped in {:.1} ms; process alive afterwards: {}",
        start.elapsed().as_secs_f64() * 1e3,
        criu_tests::alive(w.pid)
    );
    if !resp.success {
        return;
    }
    criu_tests::kill_and_reap(w.pid);
    let mut r = req(T::Restore);
    r.opts = Some(criu_proto::rpc::CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        log_file: Some("restore.log".into()),
        ..Default::default()
    });
    let start = std::time::Instant::now();
    let resp = connect.open().call(&r).expect("RESTORE answered");
    show("RESTORE", &resp);
    if !resp.success {
        return;
    }
    println!(
        "  restored in {:.1} ms as pid {}",
        start.elapsed().as_secs_f64() * 1e3,
        resp.restore.map_or(-1, |r| r.pid)
    );
    let after = w.wait_for_line_after(Some(before.n));
    let later = w.wait_for_line_after(Some(after.n));
    println!(
        "  carries on: line {} checksum {}, then line {} checksum {} (same checksum: {})",
        after.n,
        after.checksum,
        later.n,
        later.checksum,
        later.checksum == before.checksum
    );
}

fn main() {
    criu_tests::become_subreaper();
    let dir = bin_dir();
    for name in FRONTENDS {
        let path = dir.join(name);
        let images = TempDir::new("demo");
        println!("{name} swrk:");
        session(&Connect::Swrk(path.clone()), images.path());
        let service = Service::start(&path);
        println!("{name} service ({}):", service.socket.display());
        session(&Connect::Service(service.socket.clone()), images.path());
    }
    let criu = dir.join("criu");
    println!("checkpoint/restore through `criu swrk`:");
    checkpoint_restore(&Connect::Swrk(criu.clone()));
    let service = Service::start(&criu);
    println!("checkpoint/restore through `criu service`:");
    checkpoint_restore(&Connect::Service(service.socket.clone()));
}
