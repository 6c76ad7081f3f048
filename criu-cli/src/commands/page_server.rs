//! `criu page-server -D DIR [--address A] [--port N] [-d]`: receives one
//! dump's pages over TCP. The chosen port is printed on stdout when the
//! listener is bound (useful with `--port 0`); with `-d` the server runs as
//! a daemon and its pid is printed after the port.

use criu_engine::config::Config;
use criu_engine::worker::error_chain;
use criu_engine::{log, opts, page_server};

/// Exit status 0 when the session ended well (or the daemon started).
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
    let fail = |msg: String| {
        tracing::error!("{msg}");
        eprintln!("Error: {msg}");
        1
    };
    let ready = match page_server::prepare(&ro) {
        Ok(r) => r,
        Err(e) => return fail(error_chain(&e)),
    };
    println!("{}", ready.port());
    if ro.restore_detached {
        return match ready.spawn(true) {
            Ok(pid) => {
                println!("{pid}");
                0
            }
            Err(e) => fail(error_chain(&e)),
        };
    }
    match ready.serve() {
        Ok(_) => 0,
        Err(e) => fail(error_chain(&e)),
    }
}
