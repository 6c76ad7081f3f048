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
    let mut r = req(T::Dump);
    let mut opts = opts_with_dir(images);
    opts.pid = Some(1);
    opts.leave_running = Some(true);
    r.opts = Some(opts);
    show("DUMP", &call(r));
}

fn main() {
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
}
