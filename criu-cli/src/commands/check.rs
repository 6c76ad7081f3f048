//! `criu check [--feature NAME]... [--all|--extra]`.

use criu_engine::check;
use criu_engine::config::Config;
use criu_engine::kerndat::{KernelFeatures, Privileges};
use criu_engine::worker::error_chain;

/// Exit status 0 only when everything asked for is supported.
pub fn run(cfg: &Config) -> u8 {
    let kf = KernelFeatures::probe();
    if !cfg.features.is_empty() {
        let mut all = true;
        for name in &cfg.features {
            match check::check_feature(name, &kf) {
                Ok(true) => println!("{name} is supported"),
                Ok(false) => {
                    println!("{name} is NOT supported");
                    all = false;
                }
                Err(e) => {
                    eprintln!("Error: {}", error_chain(&e));
                    all = false;
                }
            }
        }
        return if all { 0 } else { 1 };
    }
    let privileges = Privileges::probe();
    if let Err(e) = check::check_required(&kf, &privileges) {
        eprintln!("Error: {}", error_chain(&e));
        return 1;
    }
    if cfg.check_extra || cfg.check_experimental {
        let missing: Vec<_> = check::check_all(&kf, &privileges)
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            for name in &missing {
                println!("Warn: {name} is NOT supported");
            }
            println!("Looks good but some kernel features are missing");
            println!("which, depending on your process tree, may cause");
            println!("dump or restore failure.");
            return 0;
        }
    }
    println!("Looks good.");
    0
}
