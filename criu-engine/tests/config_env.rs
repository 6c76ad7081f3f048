//! Configuration-file precedence through the real environment (`HOME`, `CRIU_CONFIG_FILE`). The tests of
//! this binary change process-wide environment variables, so they take a lock.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use criu_engine::config::{load_cli, load_default_files, Config, ConfigError};

static ENV: Mutex<()> = Mutex::new(());

struct Env {
    _lock: MutexGuard<'static, ()>,
    home: tempfile::TempDir,
}

/// A fresh `$HOME` without configuration and no `$CRIU_CONFIG_FILE`.
fn env() -> Env {
    let lock = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", home.path());
    std::env::remove_var("CRIU_CONFIG_FILE");
    Env { _lock: lock, home }
}

impl Env {
    fn user_conf(&self, text: &str) {
        std::fs::create_dir_all(self.home.path().join(".criu")).unwrap();
        std::fs::write(self.home.path().join(".criu/default.conf"), text).unwrap();
    }

    fn env_conf(&self, text: &str) {
        let p = self.file("env.conf", text);
        std::env::set_var("CRIU_CONFIG_FILE", p);
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

fn cli(args: &[&str]) -> Result<Config, ConfigError> {
    load_cli(args.iter().map(|s| (*s).to_owned()))
}

#[test]
fn command_line_wins_over_criu_config_file() {
    let e = env();
    e.env_conf("verbosity=4\ntcp-established\nlog-file=env.log\nexternal env\n");
    let c = cli(&[
        "dump",
        "-o",
        "cli.log",
        "--no-tcp-established",
        "--external",
        "cli",
    ])
    .unwrap();
    assert_eq!(c.log_file.as_deref(), Some(Path::new("cli.log")));
    assert!(!c.tcp_established);
    assert_eq!(c.log_level, 4);
    assert_eq!(c.external, ["env", "cli"]);
    assert_eq!(c.action.as_deref(), Some("dump"));
}

#[test]
fn default_files_apply_in_order_and_can_be_disabled() {
    let e = env();
    e.user_conf("shell-job\ntimeout 20\n");
    e.env_conf("timeout 30\n");
    let c = cli(&["restore"]).unwrap();
    assert!(c.shell_job);
    assert_eq!(c.timeout, 30);

    // --no-default-config skips the global and user files; $CRIU_CONFIG_FILE is still read (upstream).
    let c = cli(&["restore", "--no-default-config"]).unwrap();
    assert!(!c.shell_job);
    assert_eq!(c.timeout, 30);

    let mut c = Config::default();
    load_default_files(&mut c).unwrap();
    assert!(c.shell_job);
    assert_eq!(c.timeout, 30);
}

#[test]
fn config_option_replaces_default_files_and_precedes_the_command_line() {
    let e = env();
    e.user_conf("shell-job\n");
    let conf = e.file("given.conf", "timeout 40\nleave-running\n");
    let c = cli(&["dump", "--config", &conf, "--timeout", "50"]).unwrap();
    assert!(!c.shell_job);
    assert_eq!(c.timeout, 50);
    assert!(matches!(
        c.final_state,
        criu_engine::config::FinalState::Alive
    ));
    let c = cli(&[&format!("--config={conf}"), "dump"]).unwrap();
    assert_eq!(c.timeout, 40);
    // A missing --config file is skipped, as upstream.
    assert!(cli(&["dump", "--config", "/nonexistent/criu.conf"]).is_ok());
}

#[test]
fn broken_files_are_reported_with_their_path_and_help_wins() {
    let e = env();
    e.env_conf("tcp-established\nbogus-option\n");
    match cli(&["dump"]) {
        Err(ConfigError::File { path, source }) => {
            assert!(path.ends_with("env.conf"));
            assert!(
                matches!(*source, ConfigError::UnknownOption { ref option } if option == "--bogus-option")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(cli(&["dump", "--help"]).unwrap().help);
}
