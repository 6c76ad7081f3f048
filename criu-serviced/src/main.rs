//! `criu-serviced`: the CRIU-RPC service daemon. `criu-serviced service
//! [--address PATH] [--daemon] [--pidfile FILE]` listens (by default on
//! `/var/run/criu-service.socket`) and serves each connection in a fresh
//! worker, itself re-run as `criu-serviced swrk <fd>`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Without an action the daemon serves: `criu-serviced [--address ...]`.
    if !args.iter().any(|a| a == "service" || a == "swrk") {
        args.insert(0, "service".to_owned());
    }
    let default_address = Path::new("/var/run/criu-service.socket");
    ExitCode::from(criu_engine::worker::serve_main(
        "criu-serviced",
        args,
        default_address,
    ))
}
