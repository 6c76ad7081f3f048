//! The `criu` command line: CRIU's shape, options and exit statuses.

use std::process::{Command, Output};

use criu_tests::{bin, require_root, TempDir};

fn criu(args: &[&str]) -> Output {
    Command::new(bin("criu"))
        .args(args)
        .env_remove("CRIU_CONFIG_FILE")
        .output()
        .expect("run criu")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_prints_the_compatibility_level() {
    for flag in ["-V", "--version"] {
        let out = criu(&[flag]);
        assert!(out.status.success());
        assert!(text(&out).contains("Version: 4.2"), "{}", text(&out));
    }
}

#[test]
fn check_passes_on_this_kernel() {
    require_root();
    let out = criu(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Looks good"));
}

#[test]
fn check_feature_exit_status_follows_support() {
    require_root();
    // A kernel probe this machine passes.
    let out = criu(&["check", "--feature", "clone3_set_tid"]);
    assert!(out.status.success(), "{}", text(&out));
    // Memory tracking: uffd-wp async + PAGEMAP_SCAN here, and the engine.
    let out = criu(&["check", "--feature", "mem_dirty_track"]);
    assert!(out.status.success(), "{}", text(&out));
    // Not implemented by the engine yet, whatever the kernel has.
    let out = criu(&["check", "--feature", "pidfd_store"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // The invocation test tools use: `-verbosity=0` is `-v` with a value.
    let out = criu(&[
        "check",
        "--no-default-config",
        "--no-default-config",
        "-verbosity=0",
        "--feature",
        "clone3_set_tid",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = criu(&["check", "--feature", "no_such_feature"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn unknown_options_and_actions_exit_1() {
    let out = criu(&["dump", "--no-such-option"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no-such-option"), "{}", text(&out));
    let out = criu(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    let out = criu(&[]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn cpuinfo_dump_and_check_through_the_cli() {
    require_root();
    let dir = TempDir::new("cli-cpuinfo");
    let d = dir.path().to_str().unwrap();
    let out = criu(&["cpuinfo", "dump", "-D", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("cpuinfo.img").exists());
    let out = criu(&["cpuinfo", "check", "-D", d]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn failing_actions_log_in_the_work_dir() {
    require_root();
    let dir = TempDir::new("cli-dump");
    let work = TempDir::new("cli-work");
    let d = dir.path().to_str().unwrap();
    // Log in the images dir by default. A directory where the lazy-pages
    // socket goes makes the daemon fail at once.
    std::fs::create_dir(dir.path().join("lazy-pages.socket")).unwrap();
    let out = criu(&[
        "lazy-pages",
        "-D",
        d,
        "-o",
        "lazy-pages.log",
        "-v4",
        "--tcp-established",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("lazy-pages.log")).expect("lazy-pages.log");
    assert!(
        log.contains("Error") && log.contains("lazy-pages.socket"),
        "{log}"
    );
    // -W moves it to the work dir; a restore from an empty directory fails
    // and says so there.
    let w = work.path().to_str().unwrap();
    let out = criu(&["restore", "-D", d, "-W", w, "-o", "restore.log", "-d"]);
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(work.path().join("restore.log")).expect("restore.log");
    assert!(log.contains("Error"), "{log}");
    assert!(!dir.path().join("restore.log").exists());
}

#[test]
fn config_file_options_apply_and_bad_ones_fail() {
    require_root();
    let dir = TempDir::new("cli-config");
    let conf = dir.path().join("criu.conf");
    std::fs::write(
        &conf,
        "# test\nlog-file=fromconf.log\nimages-dir \"{DIR}\"\n"
            .replace("{DIR}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let out = criu(&["--config", conf.to_str().unwrap(), "cpuinfo", "dump"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("cpuinfo.img").exists());
    assert!(
        dir.path().join("fromconf.log").exists(),
        "log-file from the config file"
    );

    std::fs::write(&conf, "no-such-option\n").unwrap();
    let out = Command::new(bin("criu"))
        .args(["check"])
        .env("CRIU_CONFIG_FILE", &conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
