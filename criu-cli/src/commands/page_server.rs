//! `criu page-server -D DIR [--address A] [--port N] [-d]`: receives one
//! dump's pages over TCP. The chosen port is printed on stdout when the
//! listener is bound (useful with `--port 0`); with `-d` the server runs as
//! a daemon and its pid is printed after the port.

use criu_engine::config::Config;
use criu_engine::page_server;

/// Exit status 0 when the session ended well (or the daemon started).
pub fn run(cfg: &Config) -> u8 {
    let (ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let ready = match page_server::prepare(&ro) {
        Ok(r) => r,
        Err(e) => return super::fail(&e),
    };
    println!("{}", ready.port());
    if ro.restore_detached {
        return match ready.spawn(true) {
            Ok(pid) => {
                println!("{pid}");
                0
            }
            Err(e) => super::fail(&e),
        };
    }
    match ready.serve() {
        Ok(_) => 0,
        Err(e) => super::fail(&e),
    }
}
