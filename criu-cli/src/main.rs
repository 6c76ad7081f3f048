//! `criu`: CRIU's command line over the engine. Options are parsed the way
//! CRIU's getopt does (`criu_engine::config`); each action is a small adapter
//! in `commands/`.

mod commands;

use std::path::Path;
use std::process::ExitCode;

use criu_engine::config;
use criu_engine::worker::{error_chain, run_frontend_action};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::load_cli(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("criu: {}", error_chain(&e));
            eprintln!("Try 'criu --help' for more information.");
            return ExitCode::from(1);
        }
    };
    if cfg.version {
        print!("{}", criu_engine::version::version_string());
        return ExitCode::SUCCESS;
    }
    if cfg.help {
        print!("{}", commands::USAGE);
        return ExitCode::SUCCESS;
    }
    let Some(action) = cfg.action.clone() else {
        eprint!("{}", commands::USAGE);
        return ExitCode::from(1);
    };
    let status = match action.as_str() {
        "check" => commands::check::run(&cfg),
        "cpuinfo" => commands::cpuinfo::run(&cfg),
        "dump" => commands::dump::run(&cfg),
        "restore" => commands::restore::run(&cfg),
        "pre-dump" => commands::pre_dump::run(&cfg),
        "page-server" => commands::page_server::run(&cfg),
        "lazy-pages" => commands::lazy_pages::run(&cfg),
        "swrk" | "service" => {
            // `criu service` keeps CRIU's default: a socket in the work directory.
            let default_address = Path::new("criu_service.socket");
            match run_frontend_action(cfg, default_address) {
                Some(Ok(status)) => status,
                Some(Err(e)) => {
                    eprintln!("criu: {}", error_chain(&e));
                    1
                }
                None => 1,
            }
        }
        other => {
            eprintln!("criu: unknown action '{other}'");
            eprintln!("Try 'criu --help' for more information.");
            1
        }
    };
    ExitCode::from(status)
}
