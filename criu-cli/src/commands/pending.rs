//! `lazy-pages`: every option
//! is parsed and validated, the log file is opened where CRIU puts it, and
//! the action then fails saying the engine cannot perform it yet.

use criu_engine::config::Config;
use criu_engine::worker::error_chain;
use criu_engine::{log, opts};

/// Always exit status 1, with the reason on stderr and in the log.
pub fn run(cfg: &Config, action: &str) -> u8 {
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
    let msg = format!("{action} is not implemented yet by this engine");
    tracing::error!("{msg}");
    eprintln!("Error: {msg}");
    1
}
