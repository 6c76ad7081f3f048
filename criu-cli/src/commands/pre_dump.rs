//! `criu pre-dump -t PID -D DIR [--prev-images-dir DIR] [options]`: memory only; the task keeps running.

use criu_engine::config::Config;
use criu_engine::worker::error_chain;
use criu_engine::{dump, log, opts};

/// Exit status 0 when the task was pre-dumped.
pub fn run(cfg: &Config) -> u8 {
    let ro = match opts::from_config(cfg) {
        Ok(ro) => ro,
        Err(e) => {
            eprintln!("Error: {}", error_chain(&e));
            return 1;
        }
    };
    let _log = match log::start(&ro) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("Error: {}", error_chain(&e));
            return 1;
        }
    };
    match dump::pre_dump::run(&ro) {
        Ok(outcome) => {
            if ro.display_stats {
                println!("{outcome:?}");
            }
            tracing::info!("Pre-dumping finished successfully");
            0
        }
        Err(e) => {
            let msg = error_chain(&e);
            tracing::error!("{msg}");
            eprintln!("Error: {msg}");
            1
        }
    }
}
