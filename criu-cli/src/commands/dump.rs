//! `criu dump -t PID -D DIR [options]`.

use criu_engine::config::Config;
use criu_engine::dump;
use criu_engine::notify::NoNotify;

/// Exit status 0 when the tree was dumped.
pub fn run(cfg: &Config) -> u8 {
    let (ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    match dump::run(&ro, &mut NoNotify) {
        Ok(outcome) => {
            if ro.display_stats {
                println!("{outcome:?}");
            }
            tracing::info!("Dumping finished successfully");
            0
        }
        Err(e) => super::fail(&e),
    }
}
