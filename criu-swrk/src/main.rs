//! `criu-swrk`: serves one CRIU-RPC client on the socketpair end it
//! inherited (`criu-swrk swrk <fd>`, or just `criu-swrk <fd>`). Like every
//! front-end it also runs `service`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // A bare descriptor number means `swrk <fd>`.
    if let [only] = args.as_slice() {
        if only.parse::<i32>().is_ok() {
            args.insert(0, "swrk".to_owned());
        }
    }
    let default_address = Path::new("/var/run/criu-service.socket");
    ExitCode::from(criu_engine::worker::serve_main(
        "criu-swrk",
        args,
        default_address,
    ))
}
