//! `criu cpuinfo dump|check -D DIR`.

use criu_engine::config::Config;
use criu_engine::cpuinfo;

/// Writes or checks `<images dir>/cpuinfo.img`.
pub fn run(cfg: &Config) -> u8 {
    let sub = cfg.positional.get(1).map(String::as_str);
    if !matches!(sub, Some("dump" | "check")) {
        eprintln!("Error: cpuinfo needs a sub-command: dump or check");
        return 1;
    }
    let (ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let Some(dir) = ro.images_dir.as_ref().map(|d| d.path.clone()) else {
        eprintln!("Error: no images directory");
        return 1;
    };
    let result = if sub == Some("dump") {
        cpuinfo::dump(&dir)
    } else {
        cpuinfo::check(&dir, ro.cpu_cap.unwrap_or(cpuinfo::CPU_CAP_DEFAULT))
    };
    match result {
        Ok(()) => 0,
        Err(e) => super::fail(&e),
    }
}
