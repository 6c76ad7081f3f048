//! Command-line parsing against the real CRIU option table.

use super::*;

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn parse(v: &[&str]) -> Result<Config, ConfigError> {
    parse_args(args(v))
}

#[test]
fn defaults_match_init_opts() {
    let c = Config::default();
    assert_eq!(c.log_level, 2);
    assert_eq!(c.timeout, 10);
    assert_eq!(c.ghost_limit, 1 << 20);
    assert_eq!(c.manage_cgroups, CgroupMode::Soft);
    assert_eq!(c.cpu_cap, None);
    assert_eq!(c.final_state, FinalState::Dead);
    assert!(c.ghost_fiemap);
}

#[test]
fn swrk_invocation_keeps_positionals() {
    let c = parse(&["swrk", "5"]).unwrap();
    assert_eq!(c.action.as_deref(), Some("swrk"));
    assert_eq!(c.positional, ["swrk", "5"]);
}

#[test]
fn options_and_positionals_interleave() {
    let c = parse(&["-D", "/img", "cpuinfo", "-v4", "dump", "--shell-job"]).unwrap();
    assert_eq!(c.positional, ["cpuinfo", "dump"]);
    assert_eq!(c.images_dir.as_deref(), Some(std::path::Path::new("/img")));
    assert_eq!(c.log_level, 4);
    assert!(c.shell_job);
}

#[test]
fn short_clusters_and_attached_arguments() {
    let c = parse(&["-djRv", "-Dimgs", "-t", "42", "-o-", "restore"]).unwrap();
    assert!(c.restore_detached && c.shell_job);
    assert_eq!(c.log_level, 3);
    assert_eq!(c.final_state, FinalState::Alive);
    assert_eq!(c.images_dir.as_deref(), Some(std::path::Path::new("imgs")));
    assert_eq!(c.tree, Some(42));
    assert_eq!(c.log_file.as_deref(), Some(std::path::Path::new("-")));
    // An optional argument swallows the rest of the cluster, as in getopt: `-vj` is `-v` with "j".
    let c = parse(&["-vj"]).unwrap();
    assert_eq!((c.log_level, c.shell_job), (0, false));
}

#[test]
fn verbosity_forms() {
    assert_eq!(parse(&["-v"]).unwrap().log_level, 3);
    assert_eq!(parse(&["-vvv"]).unwrap().log_level, 5);
    assert_eq!(parse(&["-v0"]).unwrap().log_level, 0);
    assert_eq!(parse(&["--verbosity=1"]).unwrap().log_level, 1);
    assert_eq!(parse(&["--verbosity"]).unwrap().log_level, 3);
    // Optional arguments are never taken from the next word.
    let c = parse(&["--verbosity", "4"]).unwrap();
    assert_eq!(
        (c.log_level, c.positional.clone()),
        (3, vec!["4".to_owned()])
    );
    // `-verbosity=0` is the short option v with the attached argument "erbosity=0": atoi gives 0.
    assert_eq!(parse(&["-verbosity=0"]).unwrap().log_level, 0);
    assert_eq!(parse(&["-v", "-v"]).unwrap().log_level, 4);
}

#[test]
fn check_command_line_from_go_criu() {
    let c = parse(&[
        "check",
        "--no-default-config",
        "--no-default-config",
        "-verbosity=0",
        "--feature",
        "mem_dirty_track",
    ])
    .unwrap();
    assert_eq!(c.action.as_deref(), Some("check"));
    assert!(c.no_default_config);
    assert_eq!(c.log_level, 0);
    assert_eq!(c.features, ["mem_dirty_track"]);
}

#[test]
fn long_options_take_equals_or_next_word() {
    let c = parse(&[
        "--images-dir=/a",
        "--work-dir",
        "/b",
        "--timeout",
        "30",
        "--external",
        "--odd",
    ])
    .unwrap();
    assert_eq!(c.images_dir.as_deref(), Some(std::path::Path::new("/a")));
    assert_eq!(c.work_dir.as_deref(), Some(std::path::Path::new("/b")));
    assert_eq!(c.timeout, 30);
    assert_eq!(c.external, ["--odd"]);
}

#[test]
fn unique_prefixes_abbreviate() {
    let c = parse(&["--images=/x", "--leave-r", "--tcp-est", "--lazy"]).unwrap();
    assert_eq!(c.images_dir.as_deref(), Some(std::path::Path::new("/x")));
    assert_eq!(c.final_state, FinalState::Alive);
    assert!(c.tcp_established && c.lazy_pages);
    // `--restore-d` matches only restore-detached; `--tls` is an exact name although tls-* exist.
    assert!(parse(&["--restore-d"]).unwrap().restore_detached);
    assert!(parse(&["--tls"]).unwrap().tls);
}

#[test]
fn ambiguous_prefixes_are_refused() {
    match parse(&["--tls-c", "x"]) {
        Err(ConfigError::AmbiguousOption { option, candidates }) => {
            assert_eq!(option, "--tls-c");
            assert_eq!(candidates, ["--tls-cacert", "--tls-cacrl", "--tls-cert"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["--d"]),
        Err(ConfigError::AmbiguousOption { .. })
    ));
}

#[test]
fn no_prefix_negates_booleans() {
    let c = parse(&[
        "--shell-job",
        "--no-shell-job",
        "--daemon",
        "--no-restore-detached",
        "--no-ghost-fiemap",
    ])
    .unwrap();
    assert!(!c.shell_job && !c.restore_detached && !c.ghost_fiemap);
}

#[test]
fn double_dash_ends_options() {
    let c = parse(&["restore", "--exec-cmd", "--", "sh", "-c", "true"]).unwrap();
    assert!(c.exec_cmd);
    assert_eq!(c.positional, ["restore", "sh", "-c", "true"]);
}

#[test]
fn unknown_and_malformed_options_are_named() {
    let e = parse(&["dump", "--bogus"]).unwrap_err();
    assert!(e.to_string().contains("--bogus"), "{e}");
    assert!(matches!(
        parse(&["-Z"]),
        Err(ConfigError::InvalidShortOption { option: 'Z' })
    ));
    assert!(
        matches!(parse(&["-t"]), Err(ConfigError::MissingArgument { option }) if option == "-t")
    );
    assert!(matches!(
        parse(&["--shell-job=1"]),
        Err(ConfigError::UnexpectedArgument { .. })
    ));
    assert!(
        matches!(parse(&["-t", "0"]), Err(ConfigError::InvalidArgument { option, .. }) if option == "-t")
    );
    assert!(
        matches!(parse(&["--tree=abc"]), Err(ConfigError::InvalidArgument { option, .. }) if option == "--tree")
    );
    assert!(matches!(
        parse(&["--port", "x"]),
        Err(ConfigError::InvalidArgument { .. })
    ));
    assert_eq!(parse(&["--port", "0"]).unwrap().port, 0, "any free port");
    assert!(matches!(
        parse(&["--manage-cgroups=weird"]),
        Err(ConfigError::InvalidArgument { .. })
    ));
    assert!(matches!(
        parse(&["--empty-ns", "pid"]),
        Err(ConfigError::InvalidArgument { .. })
    ));
    assert!(matches!(
        parse(&["--network-lock", "pf"]),
        Err(ConfigError::InvalidArgument { .. })
    ));
    assert!(matches!(
        parse(&["--ms"]),
        Err(ConfigError::Deprecated { .. })
    ));
    assert!(matches!(
        parse(&["--inherit-fd", "7:x"]),
        Err(ConfigError::InvalidArgument { .. })
    ));
}

#[test]
fn first_bad_option_in_order_is_reported() {
    let e = parse(&["--tree", "0", "--bogus"]).unwrap_err();
    assert!(matches!(e, ConfigError::InvalidArgument { .. }), "{e}");
}

#[test]
fn help_and_version_stop_parsing() {
    let c = parse(&["-h", "--bogus"]).unwrap();
    assert!(c.help);
    let c = parse(&["-V", "--bogus"]).unwrap();
    assert!(c.version);
}

#[test]
fn structured_options_fill_lists() {
    let c = parse(&[
        "--veth-pair",
        "eth0=veth1",
        "-M",
        "/mnt:ext",
        "-Mauto",
        "-x12,13",
        "--inherit-fd",
        "fd[3]:pipe:[99]",
        "--cgroup-root",
        "cpu:/new",
        "--cgroup-root",
        "/all",
        "-J",
        "net:/proc/1/ns/net",
        "--empty-ns",
        "net",
        "--cpu-cap",
        "--manage-cgroups",
        "--ghost-limit",
        "2M",
        "--status-fd",
        "9",
        "--pre-dump-mode=read",
        "--network-lock",
        "none",
        "--all",
    ])
    .unwrap();
    assert_eq!(
        c.external,
        ["veth[eth0]:veth1", "mnt[/mnt]:ext", "unix[12]", "unix[13]"]
    );
    assert!(c.auto_ext_mounts && c.ext_unix_sk);
    assert_eq!(
        c.inherit_fds,
        [InheritFd {
            fd: 3,
            key: "pipe:[99]".into()
        }]
    );
    assert_eq!(c.cgroup_roots.len(), 2);
    assert_eq!(c.cgroup_roots[0].controller.as_deref(), Some("cpu"));
    assert_eq!(c.cgroup_roots[1].controller, None);
    assert_eq!(c.join_ns[0].ns, "net");
    assert_eq!(c.empty_ns, EMPTY_NS_NET);
    assert_eq!(c.cpu_cap, Some(cpu_cap::ALL | cpu_cap::IMAGE));
    assert_eq!(c.manage_cgroups, CgroupMode::Soft);
    assert_eq!(c.ghost_limit, 2 << 20);
    assert_eq!(c.status_fd, Some(9));
    assert_eq!(c.pre_dump_mode, PreDumpMode::Read);
    assert_eq!(c.network_lock, NetworkLock::Skip);
    assert!(c.check_extra && c.check_experimental);
}

#[test]
fn leave_running_and_stopped_last_wins() {
    assert_eq!(
        parse(&["-R", "-s"]).unwrap().final_state,
        FinalState::Stopped
    );
    assert_eq!(
        parse(&["--leave-stopped", "--leave-running"])
            .unwrap()
            .final_state,
        FinalState::Alive
    );
}

#[test]
fn config_text_applies_options_and_ignores_stray_words() {
    let mut c = Config::default();
    parse_config_text(
        "# CRIU defaults\n\
         tcp-established\n\
         log-file=/var/log/criu.log\n\
         work-dir \"/tmp/my dir\"   # quoted\n\
         verbosity=4\n\
         external mnt[/a]:b\n\
         \n\
         no-restore-sibling\n",
        &mut c,
    )
    .unwrap();
    assert!(c.tcp_established);
    assert_eq!(
        c.log_file.as_deref(),
        Some(std::path::Path::new("/var/log/criu.log"))
    );
    assert_eq!(
        c.work_dir.as_deref(),
        Some(std::path::Path::new("/tmp/my dir"))
    );
    assert_eq!(c.log_level, 4);
    assert_eq!(c.external, ["mnt[/a]:b"]);
    assert!(c.positional.is_empty() && c.action.is_none());
}

#[test]
fn config_text_errors_name_option_or_line() {
    let mut c = Config::default();
    let e = parse_config_text("tcp-established\nno-such-option\n", &mut c).unwrap_err();
    assert!(e.to_string().contains("--no-such-option"), "{e}");
    let e = parse_config_text("tcp-established\nroot \"/x\n", &mut c).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
}

#[test]
fn later_sources_override_earlier_ones() {
    let mut c = Config::default();
    parse_config_text("shell-job\nverbosity=4\nexternal a\ntimeout 5\n", &mut c).unwrap();
    options::apply_args(
        args(&["--no-shell-job", "-v", "--external", "b", "dump"]),
        &mut c,
        true,
    )
    .unwrap();
    assert!(!c.shell_job);
    assert_eq!(c.log_level, 5);
    assert_eq!(c.timeout, 5);
    assert_eq!(c.external, ["a", "b"]);
    assert_eq!(c.action.as_deref(), Some("dump"));
}
