//! `lazy-pages`: every option is parsed and
//! validated, the log file is opened where CRIU puts it, and the action then
//! fails saying the engine cannot perform it yet.

use criu_engine::config::Config;

/// Always exit status 1, with the reason on stderr and in the log.
pub fn run(cfg: &Config, action: &str) -> u8 {
    let (_ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let msg = format!("{action} is not implemented yet by this engine");
    tracing::error!("{msg}");
    eprintln!("Error: {msg}");
    1
}
