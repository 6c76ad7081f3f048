//! `criu pre-dump -t PID -D DIR [--prev-images-dir DIR] [options]`: memory
//! only; the task keeps running.

use criu_engine::config::Config;
use criu_engine::dump;

/// Exit status 0 when the task was pre-dumped.
pub fn run(cfg: &Config) -> u8 {
    let (ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    match dump::pre_dump::run(&ro) {
        Ok(outcome) => {
            if ro.display_stats {
                println!("{outcome:?}");
            }
            tracing::info!("Pre-dumping finished successfully");
            0
        }
        Err(e) => super::fail(&e),
    }
}
