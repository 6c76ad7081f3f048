//! A one-request CRIU-RPC client for tests that need a client with other
//! credentials than the test's own (start it with `Command::uid`/`gid`).
//!
//! `criu-rpc-client SOCKET [DIR]` reads one encoded `criu_req` from stdin,
//! and, with `DIR`, opens it (`O_RDONLY | O_DIRECTORY`, as this process) and
//! names it by `images_dir_fd`. It sends the request to the service at
//! `SOCKET` and writes the encoded `criu_resp` to stdout. Exit status 0 when
//! a response arrived, 2 when the service could not be reached or answered
//! nothing, 1 on bad input.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

use criu_proto::rpc::{CriuOpts, CriuReq};
use criu_proto::Message;
use criu_transport::client::Client;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(socket) = args.first() else {
        eprintln!("usage: criu-rpc-client SOCKET [DIR]");
        return ExitCode::from(1);
    };
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return ExitCode::from(1);
    }
    let Ok(mut req) = CriuReq::decode(input.as_slice()) else {
        eprintln!("criu-rpc-client: stdin is not a criu_req");
        return ExitCode::from(1);
    };
    // Kept open until the response arrived: the worker reopens it through
    // /proc/<our pid>/fd/<n>.
    let dir = match args.get(1) {
        Some(dir) => match std::fs::File::open(Path::new(dir)) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("criu-rpc-client: cannot open {dir}: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if let Some(dir) = &dir {
        let opts = req.opts.get_or_insert_with(CriuOpts::default);
        opts.images_dir_fd = dir.as_raw_fd();
        opts.images_dir = None;
    }
    let client = match Client::connect(Path::new(socket)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("criu-rpc-client: cannot connect to {socket}: {e}");
            return ExitCode::from(2);
        }
    };
    match client.call(&req) {
        Ok(resp) => {
            let mut out = std::io::stdout();
            if out.write_all(&resp.encode_to_vec()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("criu-rpc-client: no response: {e}");
            ExitCode::from(2)
        }
    }
}
