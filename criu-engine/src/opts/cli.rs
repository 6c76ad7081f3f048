//! A `criu` command line onto [`RequestOpts`] (the option checks of upstream `main()` in
//! `criu/crtools.c` and `check_options()`).

use std::path::PathBuf;

use super::{
    check_inherit_fds, check_options, from_merged, open_images_dir, open_work_dir,
    reopen_status_fd, ImagesDirSource, LogTarget, Naming, OptsError, RequestOpts,
};
use crate::config::Config;

/// Actions of the `criu` command line (upstream `commands[]` plus `cpuinfo dump|check`).
const ACTIONS: &[&str] = &[
    "dump",
    "pre-dump",
    "restore",
    "lazy-pages",
    "check",
    "page-server",
    "service",
    "swrk",
    "dedup",
    "cpuinfo",
];

fn usage(reason: impl Into<String>) -> OptsError {
    OptsError::Usage {
        reason: reason.into(),
    }
}

/// Validates a parsed command line and opens what the action needs: the images directory (`-D`, default
/// `.`; not for `service` and `swrk`) and the work directory (`-W`, default the images directory; not for
/// `swrk`). The log goes to `-o` relative to the work directory, or to stderr.
///
/// `swrk` only checks its `<fd>` argument: its requests are built with [`super::from_rpc`].
pub fn from_config(cfg: &Config) -> Result<RequestOpts, OptsError> {
    let action = cfg
        .action
        .as_deref()
        .ok_or_else(|| usage("command is required"))?;
    let mut extra = cfg.positional.get(1..).unwrap_or_default();
    match action {
        "exec" => {
            return Err(usage(
                "the \"exec\" action is deprecated by the Compel library",
            ))
        }
        "show" => {
            return Err(usage(
                "the \"show\" action is deprecated by the CRIT utility",
            ))
        }
        "swrk" if cfg.positional.len() != 2 => return Err(usage("usage: criu swrk <fd>")),
        "cpuinfo" => match extra.first().map(String::as_str) {
            Some("dump" | "check") => extra = &extra[1..],
            Some(other) => return Err(usage(format!("unknown cpuinfo sub-command: {other}"))),
            None => return Err(usage("cpuinfo requires an action: dump or check")),
        },
        a if !ACTIONS.contains(&a) => return Err(usage(format!("unknown command: {a}"))),
        _ => {}
    }
    let swrk = action == "swrk";
    let is_restore = action == "restore";

    let exec_cmd = if cfg.exec_cmd {
        if extra.is_empty() {
            return Err(usage("--exec-cmd requires a command"));
        }
        if !is_restore {
            return Err(usage(
                "--exec-cmd is available for the restore command only",
            ));
        }
        if cfg.restore_detached {
            return Err(usage(
                "--restore-detached and --exec-cmd cannot be used together",
            ));
        }
        extra.to_vec()
    } else {
        if !extra.is_empty() && !swrk {
            return Err(usage(format!("excessive parameters for command {action}")));
        }
        Vec::new()
    };
    if swrk {
        return Ok(from_merged(cfg.clone(), None));
    }

    let images_path = cfg.images_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let work_path = cfg.work_dir.clone().unwrap_or_else(|| images_path.clone());
    let images_dir = if action == "service" {
        None
    } else {
        Some(open_images_dir(images_path, ImagesDirSource::CommandLine)?)
    };
    let work_dir = open_work_dir(work_path)?;

    let lazy_ok = matches!(action, "restore" | "lazy-pages" | "page-server");
    check_options(cfg, is_restore, lazy_ok, Naming::Cli)?;
    if !cfg.inherit_fds.is_empty() && !is_restore {
        return Err(OptsError::RestoreOnly {
            option: "--inherit-fd",
        });
    }
    check_inherit_fds(&cfg.inherit_fds)?;
    match action {
        "dump" | "pre-dump" if cfg.tree.is_none() => {
            return Err(usage("pid not specified (-t PID)"))
        }
        "pre-dump" if cfg.lazy_pages => return Err(usage("cannot pre-dump with --lazy-pages")),
        _ => {}
    }
    let status_fd = cfg
        .status_fd
        .map(|fd| reopen_status_fd("self", fd))
        .transpose()?;

    let log_file = Some(
        cfg.log_file
            .as_deref()
            .map_or(LogTarget::Stderr, LogTarget::from_path),
    );
    let mut out = from_merged(cfg.clone(), log_file);
    out.images_dir = images_dir;
    out.work_dir = Some(work_dir);
    out.exec_cmd = exec_cmd;
    out.status_fd = status_fd;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_args;
    use crate::opts::{ImagesDirSource, Target};

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn cli(args: &[&str]) -> Result<RequestOpts, OptsError> {
        from_config(&parse_args(args.iter().map(|s| (*s).to_owned())).unwrap())
    }

    #[test]
    fn command_line_opens_dirs_and_checks_actions() {
        let d = dir();
        let path = d.path().to_str().unwrap();
        let o = cli(&["dump", "-t", "1", "-D", path, "-o", "dump.log", "-v4"]).unwrap();
        assert_eq!(o.target, Some(Target::Pid(1)));
        assert_eq!(
            o.images_dir.as_ref().unwrap().source,
            ImagesDirSource::CommandLine
        );
        assert_eq!(o.work_dir.as_ref().unwrap().path, d.path());
        assert_eq!(o.log_file, Some(LogTarget::File("dump.log".into())));
        assert_eq!(o.log_level, 4);
        assert_eq!(
            cli(&["check", "-D", path]).unwrap().log_file,
            Some(LogTarget::Stderr)
        );

        let usage = |args: &[&str]| match cli(args) {
            Err(OptsError::Usage { reason }) => reason,
            other => panic!("{args:?}: {other:?}"),
        };
        assert!(usage(&["dump", "-D", path]).contains("pid not specified"));
        assert!(usage(&[]).contains("command is required"));
        assert!(usage(&["bogus"]).contains("unknown command"));
        assert!(usage(&["dump", "-t", "1", "extra"]).contains("excessive"));
        assert!(
            usage(&["dump", "-t", "1", "--exec-cmd", "--", "x"]).contains("restore command only")
        );
        assert!(
            usage(&["restore", "-d", "--exec-cmd", "--", "x"]).contains("cannot be used together")
        );
        assert!(usage(&["cpuinfo", "-D", path]).contains("requires an action"));
        assert!(usage(&["swrk"]).contains("swrk <fd>"));

        let o = cli(&["restore", "-D", path, "--exec-cmd", "--", "sh", "-c", "x"]).unwrap();
        assert_eq!(o.exec_cmd, ["sh", "-c", "x"]);
        assert!(cli(&["cpuinfo", "dump", "-D", path]).is_ok());
        assert!(cli(&["swrk", "3"]).unwrap().images_dir.is_none());
        // This machine's kernel tracks memory (uffd-wp async + PAGEMAP_SCAN).
        assert!(
            cli(&["dump", "-t", "1", "-D", path, "--track-mem"])
                .unwrap()
                .track_mem
        );
        assert!(matches!(
            cli(&["dump", "-t", "1", "-D", path, "--inherit-fd", "fd[0]:x"]),
            Err(OptsError::RestoreOnly { .. })
        ));
        assert!(matches!(
            cli(&["dump", "-t", "1", "-D", "/nonexistent/dir"]),
            Err(OptsError::OpenImagesDir { .. })
        ));
    }
}
