//! CRIU 4.2's option table (`short_opts`, `long_opts` in upstream `parse_options()`) and what each option
//! does to a [`Config`].

use std::path::PathBuf;
use std::sync::LazyLock;

use super::getopt::{ArgKind, Getopt, Item, LongOpt, ShortOpt};
use super::values::{
    c_atol, clamp_i32, parse_cpu_cap, parse_inherit_fd, parse_join_ns, parse_size,
    parse_unix_inodes, scan_int,
};
use super::{
    cpu_cap, CgroupMode, CgroupRoot, Config, ConfigError, FileValidation, FinalState, NetworkLock,
    PreDumpMode, EMPTY_NS_NET,
};

/// Boolean options declared with upstream's `BOOL_OPT` (which adds `no-NAME`) or as plain flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flag {
    RestoreDetached,
    RestoreSibling,
    TcpEstablished,
    LogPid,
    EvasiveDevices,
    LinkRemap,
    ShellJob,
    FileLocks,
    PageServer,
    TrackMem,
    AutoDedup,
    ForceIrmap,
    EnableExternalSharing,
    EnableExternalMasters,
    Extra,
    Experimental,
    SkipInFlight,
    Deprecated,
    DisplayStats,
    WeakSysctls,
    TcpClose,
    Stream,
    Tls,
    TlsNoCnVerify,
    SkipFileRwxCheck,
    MntnsCompatMode,
    Unprivileged,
    GhostFiemap,
    AllowUprobes,
}

impl Flag {
    fn field(self, c: &mut Config) -> &mut bool {
        match self {
            Flag::RestoreDetached => &mut c.restore_detached,
            Flag::RestoreSibling => &mut c.restore_sibling,
            Flag::TcpEstablished => &mut c.tcp_established,
            Flag::LogPid => &mut c.log_pid,
            Flag::EvasiveDevices => &mut c.evasive_devices,
            Flag::LinkRemap => &mut c.link_remap,
            Flag::ShellJob => &mut c.shell_job,
            Flag::FileLocks => &mut c.file_locks,
            Flag::PageServer => &mut c.page_server,
            Flag::TrackMem => &mut c.track_mem,
            Flag::AutoDedup => &mut c.auto_dedup,
            Flag::ForceIrmap => &mut c.force_irmap,
            Flag::EnableExternalSharing => &mut c.enable_external_sharing,
            Flag::EnableExternalMasters => &mut c.enable_external_masters,
            Flag::Extra => &mut c.check_extra,
            Flag::Experimental => &mut c.check_experimental,
            Flag::SkipInFlight => &mut c.tcp_skip_in_flight,
            Flag::Deprecated => &mut c.deprecated,
            Flag::DisplayStats => &mut c.display_stats,
            Flag::WeakSysctls => &mut c.weak_sysctls,
            Flag::TcpClose => &mut c.tcp_close,
            Flag::Stream => &mut c.stream,
            Flag::Tls => &mut c.tls,
            Flag::TlsNoCnVerify => &mut c.tls_no_cn_verify,
            Flag::SkipFileRwxCheck => &mut c.skip_file_rwx_check,
            Flag::MntnsCompatMode => &mut c.mntns_compat_mode,
            Flag::Unprivileged => &mut c.unprivileged,
            Flag::GhostFiemap => &mut c.ghost_fiemap,
            Flag::AllowUprobes => &mut c.allow_uprobes,
        }
    }
}

/// What an option does; options with equal ids are interchangeable (this decides ambiguity of prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Id {
    Set(Flag, bool),
    Tree,
    LeaveStopped,
    LeaveRunning,
    ImagesDir,
    WorkDir,
    LogFile,
    JoinNs,
    Root,
    ExtUnixSk,
    Help,
    Close,
    Version,
    Pidfile,
    VethPair,
    ActionScript,
    Address,
    Port,
    PrevImagesDir,
    Ms,
    Libdir,
    CpuCap,
    ExtMountMap,
    ExecCmd,
    ManageCgroups,
    CgroupRoot,
    InheritFd,
    Feature,
    SkipMnt,
    EnableFs,
    FreezeCgroup,
    GhostLimit,
    IrmapScanPath,
    LsmProfile,
    Timeout,
    External,
    EmptyNs,
    LazyPages,
    All,
    CgroupProps,
    CgroupPropsFile,
    CgroupDumpController,
    StatusFd,
    Verbosity,
    PsSocket,
    Config,
    NoDefaultConfig,
    TlsCacert,
    TlsCacrl,
    TlsCert,
    TlsKey,
    CgroupYard,
    PreDumpMode,
    FileValidation,
    LsmMountContext,
    NetworkLock,
    Group,
}

const fn short(ch: char, kind: ArgKind, id: Id) -> ShortOpt<Id> {
    ShortOpt { ch, kind, id }
}

/// Upstream `short_opts`: `dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:`.
static SHORT: &[ShortOpt<Id>] = &[
    short('d', ArgKind::None, Id::Set(Flag::RestoreDetached, true)),
    short('S', ArgKind::None, Id::Set(Flag::RestoreSibling, true)),
    short('s', ArgKind::None, Id::LeaveStopped),
    short('R', ArgKind::None, Id::LeaveRunning),
    short('t', ArgKind::Required, Id::Tree),
    short('h', ArgKind::None, Id::Help),
    short('D', ArgKind::Required, Id::ImagesDir),
    short('o', ArgKind::Required, Id::LogFile),
    short('v', ArgKind::Optional, Id::Verbosity),
    short('x', ArgKind::Optional, Id::ExtUnixSk),
    short('V', ArgKind::None, Id::Version),
    short('r', ArgKind::Required, Id::Root),
    short('j', ArgKind::None, Id::Set(Flag::ShellJob, true)),
    short('J', ArgKind::Required, Id::JoinNs),
    short('l', ArgKind::None, Id::Set(Flag::FileLocks, true)),
    short('W', ArgKind::Required, Id::WorkDir),
    short('L', ArgKind::Required, Id::Libdir),
    short('M', ArgKind::Required, Id::ExtMountMap),
];

/// One row of the long table: a plain option, or a `BOOL_OPT` that also gets a `no-` twin.
enum Row {
    Opt(&'static str, ArgKind, Id),
    Bool(&'static str, Flag),
}

/// Upstream `long_opts`, in upstream order.
const ROWS: &[Row] = {
    use ArgKind::{None as N, Optional as O, Required as R};
    use Row::{Bool as B, Opt as P};
    &[
        P("tree", R, Id::Tree),
        P("leave-stopped", N, Id::LeaveStopped),
        P("leave-running", N, Id::LeaveRunning),
        B("restore-detached", Flag::RestoreDetached),
        B("restore-sibling", Flag::RestoreSibling),
        B("daemon", Flag::RestoreDetached),
        P("images-dir", R, Id::ImagesDir),
        P("work-dir", R, Id::WorkDir),
        P("log-file", R, Id::LogFile),
        P("join-ns", R, Id::JoinNs),
        P("root", R, Id::Root),
        P("ext-unix-sk", O, Id::ExtUnixSk),
        P("help", N, Id::Help),
        B("tcp-established", Flag::TcpEstablished),
        P("close", R, Id::Close),
        B("log-pid", Flag::LogPid),
        P("version", N, Id::Version),
        B("evasive-devices", Flag::EvasiveDevices),
        P("pidfile", R, Id::Pidfile),
        P("veth-pair", R, Id::VethPair),
        P("action-script", R, Id::ActionScript),
        B("link-remap", Flag::LinkRemap),
        B("shell-job", Flag::ShellJob),
        B("file-locks", Flag::FileLocks),
        B("page-server", Flag::PageServer),
        P("address", R, Id::Address),
        P("port", R, Id::Port),
        P("prev-images-dir", R, Id::PrevImagesDir),
        P("ms", N, Id::Ms),
        B("track-mem", Flag::TrackMem),
        B("auto-dedup", Flag::AutoDedup),
        P("libdir", R, Id::Libdir),
        P("cpu-cap", O, Id::CpuCap),
        B("force-irmap", Flag::ForceIrmap),
        P("ext-mount-map", R, Id::ExtMountMap),
        P("exec-cmd", N, Id::ExecCmd),
        P("manage-cgroups", O, Id::ManageCgroups),
        P("cgroup-root", R, Id::CgroupRoot),
        P("inherit-fd", R, Id::InheritFd),
        P("feature", R, Id::Feature),
        P("skip-mnt", R, Id::SkipMnt),
        P("enable-fs", R, Id::EnableFs),
        P(
            "enable-external-sharing",
            N,
            Id::Set(Flag::EnableExternalSharing, true),
        ),
        P(
            "enable-external-masters",
            N,
            Id::Set(Flag::EnableExternalMasters, true),
        ),
        P("freeze-cgroup", R, Id::FreezeCgroup),
        P("ghost-limit", R, Id::GhostLimit),
        P("irmap-scan-path", R, Id::IrmapScanPath),
        P("lsm-profile", R, Id::LsmProfile),
        P("timeout", R, Id::Timeout),
        P("external", R, Id::External),
        P("empty-ns", R, Id::EmptyNs),
        P("lazy-pages", N, Id::LazyPages),
        B("extra", Flag::Extra),
        B("experimental", Flag::Experimental),
        P("all", N, Id::All),
        P("cgroup-props", R, Id::CgroupProps),
        P("cgroup-props-file", R, Id::CgroupPropsFile),
        P("cgroup-dump-controller", R, Id::CgroupDumpController),
        B("skip-in-flight", Flag::SkipInFlight),
        B("deprecated", Flag::Deprecated),
        B("display-stats", Flag::DisplayStats),
        B("weak-sysctls", Flag::WeakSysctls),
        P("status-fd", R, Id::StatusFd),
        B("tcp-close", Flag::TcpClose),
        P("verbosity", O, Id::Verbosity),
        P("ps-socket", R, Id::PsSocket),
        B("stream", Flag::Stream),
        P("config", R, Id::Config),
        P("no-default-config", N, Id::NoDefaultConfig),
        P("tls-cacert", R, Id::TlsCacert),
        P("tls-cacrl", R, Id::TlsCacrl),
        P("tls-cert", R, Id::TlsCert),
        P("tls-key", R, Id::TlsKey),
        B("tls", Flag::Tls),
        P("tls-no-cn-verify", N, Id::Set(Flag::TlsNoCnVerify, true)),
        P("cgroup-yard", R, Id::CgroupYard),
        P("pre-dump-mode", R, Id::PreDumpMode),
        P("file-validation", R, Id::FileValidation),
        B("skip-file-rwx-check", Flag::SkipFileRwxCheck),
        P("lsm-mount-context", R, Id::LsmMountContext),
        P("network-lock", R, Id::NetworkLock),
        B("mntns-compat-mode", Flag::MntnsCompatMode),
        B("unprivileged", Flag::Unprivileged),
        B("ghost-fiemap", Flag::GhostFiemap),
        B("allow-uprobes", Flag::AllowUprobes),
        // Our extension: the service socket's group (mode 0660 instead of 0666).
        P("group", R, Id::Group),
    ]
};

/// The long table with the `no-` twins expanded right after each boolean, as `BOOL_OPT` does.
static LONG: LazyLock<Vec<LongOpt<Id>>> = LazyLock::new(|| {
    let mut v = Vec::with_capacity(ROWS.len() * 2);
    for row in ROWS {
        match *row {
            Row::Opt(name, kind, id) => v.push(LongOpt {
                name: name.to_owned(),
                kind,
                id,
            }),
            Row::Bool(name, flag) => {
                for (prefix, value) in [("", true), ("no-", false)] {
                    v.push(LongOpt {
                        name: format!("{prefix}{name}"),
                        kind: ArgKind::None,
                        id: Id::Set(flag, value),
                    });
                }
            }
        }
    }
    v
});

/// Every long option name CRIU accepts (including the `no-` forms), in table order.
pub fn long_option_names() -> impl Iterator<Item = &'static str> {
    LONG.iter().map(|l| l.name.as_str())
}

/// Runs getopt over `args` and applies each option to `cfg` in order. Positionals are appended to
/// `cfg.positional` when `keep_positionals` (the command line); configuration files drop them, as upstream.
/// Stops after `--help` or `--version`.
pub(super) fn apply_args(
    args: Vec<String>,
    cfg: &mut Config,
    keep_positionals: bool,
) -> Result<(), ConfigError> {
    for item in Getopt::new(args, SHORT, &LONG) {
        match item? {
            Item::Positional(p) => {
                if keep_positionals {
                    cfg.positional.push(p);
                }
            }
            Item::Opt { id, arg, spelled } => {
                apply(cfg, id, arg, &spelled)?;
                if cfg.help || cfg.version {
                    break;
                }
            }
        }
    }
    cfg.action = cfg.positional.first().cloned();
    Ok(())
}

fn bad(option: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidArgument {
        option: option.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

fn apply(c: &mut Config, id: Id, arg: Option<String>, spelled: &str) -> Result<(), ConfigError> {
    // Every arm that needs the argument reads it through `a()`; getopt guarantees it for required ones.
    let a = || arg.clone().unwrap_or_default();
    match id {
        Id::Set(flag, value) => *flag.field(c) = value,
        Id::LeaveStopped => c.final_state = FinalState::Stopped,
        Id::LeaveRunning => c.final_state = FinalState::Alive,
        Id::ExtUnixSk => {
            if let Some(list) = &arg {
                for ino in parse_unix_inodes(list)
                    .ok_or_else(|| bad(spelled, list, "comma-separated inode numbers"))?
                {
                    c.external.push(format!("unix[{ino}]"));
                }
            }
            c.ext_unix_sk = true;
        }
        Id::Tree => {
            let v = a();
            match i32::try_from(c_atol(&v)) {
                Ok(pid) if pid > 0 => c.tree = Some(pid),
                _ => return Err(bad(spelled, &v, "a positive pid")),
            }
        }
        Id::Root => c.root = Some(PathBuf::from(a())),
        Id::ImagesDir => c.images_dir = Some(PathBuf::from(a())),
        Id::WorkDir => c.work_dir = Some(PathBuf::from(a())),
        Id::LogFile => c.log_file = Some(PathBuf::from(a())),
        Id::JoinNs => {
            let v = a();
            c.join_ns.push(parse_join_ns(&v).ok_or_else(|| {
                bad(
                    spelled,
                    &v,
                    "NS:FILE[,OPTIONS] with NS one of net, uts, time, ipc, user, mnt",
                )
            })?);
        }
        Id::Verbosity => match &arg {
            // `-vvv` arrives as `-v` with the argument "vv"; anything else goes through atoi(), so
            // `-verbosity=0` (a short cluster) sets level 0, exactly like upstream.
            Some(v) if v.starts_with('v') => {
                c.log_level = c.log_level.saturating_add(clamp_i32(v.len() as i64 + 1))
            }
            Some(v) => c.log_level = clamp_i32(c_atol(v)),
            None => c.log_level = c.log_level.saturating_add(1),
        },
        Id::Close => c.close_fds.push(clamp_i32(c_atol(&a()))),
        Id::Pidfile => c.pidfile = Some(PathBuf::from(a())),
        Id::VethPair => {
            let v = a();
            let (inside, outside) = v
                .split_once('=')
                .ok_or_else(|| bad(spelled, &v, "IN=OUT"))?;
            c.external.push(format!("veth[{inside}]:{outside}"));
        }
        Id::ActionScript => c.action_scripts.push(a()),
        Id::Address => c.address = Some(a()),
        Id::Port => {
            let v = a();
            // Upstream stores atoi() into an unsigned short and refuses 0;
            // we take a literal 0 as "any free port" (the page server
            // reports the one it got) and refuse only what is no number.
            let port = c_atol(&v) as u16;
            if port == 0 && v.trim() != "0" {
                return Err(bad(spelled, &v, "a port number"));
            }
            c.port = port;
        }
        Id::PrevImagesDir => c.prev_images_dir = Some(a()),
        Id::Ms => {
            return Err(ConfigError::Deprecated {
                option: spelled.to_owned(),
                hint: "see the check options of criu --help",
            })
        }
        Id::Libdir => c.libdir = Some(PathBuf::from(a())),
        Id::CpuCap => {
            c.cpu_cap = Some(
                parse_cpu_cap(c.cpu_cap.unwrap_or(cpu_cap::DEFAULT), arg.as_deref()).ok_or_else(
                    || bad(spelled, &a(), "a list of fpu, cpu, ins, all, none, ^CAP"),
                )?,
            )
        }
        Id::ExtMountMap => {
            let v = a();
            if v == "auto" {
                c.auto_ext_mounts = true;
            } else {
                let (key, val) = v
                    .split_once(':')
                    .ok_or_else(|| bad(spelled, &v, "KEY:VALUE or auto"))?;
                c.external.push(format!("mnt[{key}]:{val}"));
            }
        }
        Id::ExecCmd => c.exec_cmd = true,
        Id::ManageCgroups => {
            c.manage_cgroups = match arg.as_deref() {
                None | Some("soft") => CgroupMode::Soft,
                Some("none") => CgroupMode::None,
                Some("props") => CgroupMode::Props,
                Some("full") => CgroupMode::Full,
                Some("strict") => CgroupMode::Strict,
                Some("ignore") => CgroupMode::Ignore,
                Some(other) => {
                    return Err(bad(
                        spelled,
                        other,
                        "none, props, soft, full, strict or ignore",
                    ))
                }
            }
        }
        Id::CgroupRoot => {
            let v = a();
            c.cgroup_roots.push(match v.split_once(':') {
                Some((ctrl, path)) => CgroupRoot {
                    controller: Some(ctrl.to_owned()),
                    path: path.to_owned(),
                },
                None => CgroupRoot {
                    controller: None,
                    path: v,
                },
            });
        }
        Id::InheritFd => {
            let v = a();
            c.inherit_fds
                .push(parse_inherit_fd(&v).ok_or_else(|| bad(spelled, &v, "fd[N]:KEY"))?);
        }
        Id::Feature => c.features.push(a()),
        Id::SkipMnt => c.skip_mnt.push(a()),
        Id::EnableFs => c.enable_fs.push(a()),
        Id::FreezeCgroup => c.freeze_cgroup = Some(a()),
        Id::GhostLimit => c.ghost_limit = parse_size(&a()),
        Id::IrmapScanPath => c.irmap_scan_paths.push(a()),
        Id::LsmProfile => c.lsm_profile = Some(a()),
        // Upstream assigns atoi() to an unsigned int.
        Id::Timeout => c.timeout = clamp_i32(c_atol(&a())) as u32,
        Id::External => c.external.push(a()),
        Id::EmptyNs => {
            let v = a();
            if v != "net" {
                return Err(bad(spelled, &v, "net"));
            }
            c.empty_ns |= EMPTY_NS_NET;
        }
        Id::LazyPages => c.lazy_pages = true,
        Id::All => {
            c.check_extra = true;
            c.check_experimental = true;
        }
        Id::CgroupProps => c.cgroup_props = Some(a()),
        Id::CgroupPropsFile => c.cgroup_props_file = Some(a()),
        Id::CgroupDumpController => c.cgroup_dump_controllers.push(a()),
        Id::StatusFd => {
            let v = a();
            c.status_fd =
                Some(scan_int(&v).ok_or_else(|| bad(spelled, &v, "a descriptor number"))?);
        }
        Id::PsSocket => c.ps_socket = Some(clamp_i32(c_atol(&a()))),
        Id::Config => c.config = Some(PathBuf::from(a())),
        Id::NoDefaultConfig => c.no_default_config = true,
        Id::TlsCacert => c.tls_cacert = Some(a()),
        Id::TlsCacrl => c.tls_cacrl = Some(a()),
        Id::TlsCert => c.tls_cert = Some(a()),
        Id::TlsKey => c.tls_key = Some(a()),
        Id::CgroupYard => c.cgroup_yard = Some(a()),
        Id::PreDumpMode => {
            c.pre_dump_mode = match a().as_str() {
                "splice" => PreDumpMode::Splice,
                "read" => PreDumpMode::Read,
                other => return Err(bad(spelled, other, "splice or read")),
            }
        }
        Id::FileValidation => {
            c.file_validation = match a().as_str() {
                "filesize" => FileValidation::FileSize,
                "buildid" => FileValidation::BuildId,
                other => return Err(bad(spelled, other, "filesize or buildid")),
            }
        }
        Id::LsmMountContext => c.lsm_mount_context = Some(a()),
        Id::NetworkLock => {
            c.network_lock = match a().as_str() {
                "iptables" => NetworkLock::Iptables,
                "nftables" => NetworkLock::Nftables,
                "skip" | "none" => NetworkLock::Skip,
                other => return Err(bad(spelled, other, "iptables, nftables or skip")),
            }
        }
        Id::Group => c.service_group = Some(a()),
        Id::Help => c.help = true,
        Id::Version => c.version = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bool_opt_has_a_no_twin() {
        let names: Vec<&str> = long_option_names().collect();
        for row in ROWS {
            if let Row::Bool(name, _) = row {
                assert!(names.contains(&format!("no-{name}").as_str()), "{name}");
            }
        }
        assert!(names.contains(&"no-daemon"));
        assert!(!names.contains(&"no-enable-external-sharing"));
    }
}
