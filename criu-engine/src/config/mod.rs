//! CRIU's command-line and configuration-file option model (upstream `criu/config.c`, `criu/crtools.c`,
//! `criu/include/cr_options.h`).
//!
//! [`Config`] holds every option CRIU 4.2 accepts, with CRIU's built-in defaults (`init_opts()`).
//! Sources are applied one after the other onto the same value, exactly as CRIU does with its global
//! `opts`: `/etc/criu/default.conf`, `$HOME/.criu/default.conf`, `$CRIU_CONFIG_FILE`, `--config FILE`, then
//! the command line ([`load_cli`]). Boolean options therefore override each other, counters such as `-v`
//! accumulate and lists (externals, inherited fds, ...) are concatenated.
//!
//! Parsing follows glibc's `getopt_long` ([`getopt`] module): the same short options (`dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:`),
//! the same long names with their argument kinds, and a `no-` form for every boolean that CRIU declares with
//! `BOOL_OPT`.

mod file;
mod getopt;
mod options;
mod values;

use std::path::PathBuf;

pub use file::{load_default_files, load_file, parse_config_text};
pub use options::long_option_names;

/// Bits of `--cpu-cap` / `criu_opts.cpu_cap` (upstream `CPU_CAP_*`).
pub mod cpu_cap {
    /// Do not check CPU capabilities at all.
    pub const NONE: u32 = 0;
    /// Check FPU (xsave) compatibility.
    pub const FPU: u32 = 1 << 0;
    /// Require identical CPU feature words.
    pub const CPU: u32 = 1 << 1;
    /// Check the instruction-set features the dumped tasks may use.
    pub const INS: u32 = 1 << 2;
    /// Write `cpuinfo.img` on dump and read it on restore.
    pub const IMAGE: u32 = 1 << 3;
    /// `fpu`, `cpu` and `ins`.
    pub const ALL: u32 = FPU | CPU | INS;
    /// What CRIU checks when nothing was said (no `cpuinfo.img` is written).
    pub const DEFAULT: u32 = FPU | INS;
}

/// `CLONE_NEWNET`, the only namespace `--empty-ns` / `criu_opts.empty_ns` may name.
pub const EMPTY_NS_NET: u32 = 0x4000_0000;

/// Default of `--timeout` in seconds (upstream `DEFAULT_TIMEOUT`).
pub const DEFAULT_TIMEOUT: u32 = 10;

/// Default of `--ghost-limit` in bytes (upstream `DEFAULT_GHOST_LIMIT`).
pub const DEFAULT_GHOST_LIMIT: u64 = 1 << 20;

/// Default log level (upstream `DEFAULT_LOGLEVEL`, `LOG_WARN`).
pub const DEFAULT_LOG_LEVEL: i32 = 2;

/// What happens to the dumped tree after a successful dump (upstream `opts.final_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinalState {
    /// Kill the tasks (`TASK_DEAD`, the default).
    #[default]
    Dead,
    /// Let them run on (`-R`, `--leave-running`, `leave_running`).
    Alive,
    /// Leave them stopped (`-s`, `--leave-stopped`, `leave_stopped`).
    Stopped,
}

/// Cgroup handling (upstream `CG_MODE_*`, `--manage-cgroups`, `criu_cg_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// `ignore`: do not dump or restore cgroups.
    Ignore,
    /// `none`: restore into the existing cgroups, set no properties.
    None,
    /// `props`: restore properties only.
    Props,
    /// `soft`: the default.
    #[default]
    Soft,
    /// `full`: restore every property.
    Full,
    /// `strict`: fail when a cgroup already exists.
    Strict,
}

/// How pre-dumps read memory (`--pre-dump-mode`, `criu_pre_dump_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreDumpMode {
    /// `splice`: pages go through pipes filled by the task (default).
    #[default]
    Splice,
    /// `read` (`VM_READ` over RPC): `process_vm_readv` while the tasks run.
    Read,
}

/// How the network is locked during a dump (`--network-lock`, `criu_network_lock_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkLock {
    /// `iptables` (default).
    #[default]
    Iptables,
    /// `nftables`.
    Nftables,
    /// `skip` or `none`: do not lock.
    Skip,
}

/// How restore validates that a file is the dumped one (`--file-validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileValidation {
    /// `filesize`.
    FileSize,
    /// `buildid` (default).
    #[default]
    BuildId,
}

/// `--inherit-fd fd[N]:KEY` / `criu_opts.inherit_fd`: on restore, use descriptor `fd` of the worker for
/// the resource named `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritFd {
    /// Descriptor number in the worker's own table.
    pub fd: i32,
    /// Resource key (`pipe:[123]`, `tty[...]`, a path, ...).
    pub key: String,
}

/// `--cgroup-root [CTRL:]PATH` / `criu_opts.cg_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    /// Controller; `None` means every controller not named otherwise.
    pub controller: Option<String>,
    /// New root path.
    pub path: String,
}

/// `-J NS:FILE[,EXTRA]` / `criu_opts.join_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinNs {
    /// Namespace kind: `net`, `uts`, `time`, `ipc`, `user` or `mnt`.
    pub ns: String,
    /// Path of a namespace file, or a pid.
    pub ns_file: String,
    /// Extra options (`uid[,gid]` for `user`).
    pub extra: Option<String>,
}

/// Every CRIU option, with CRIU's defaults. See the module documentation for how sources are merged.
///
/// Fields named after the long option; the upstream `opts` member is given where it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// First positional argument: `dump`, `restore`, `swrk`, `service`, `cpuinfo`, ...
    pub action: Option<String>,
    /// Every positional argument in order, the action included (`["swrk", "5"]`, `["cpuinfo", "dump"]`).
    pub positional: Vec<String>,

    /// `-D`, `--images-dir`.
    pub images_dir: Option<PathBuf>,
    /// `-W`, `--work-dir`.
    pub work_dir: Option<PathBuf>,
    /// `-o`, `--log-file` (`-` is stdout; upstream `output`).
    pub log_file: Option<PathBuf>,
    /// `-v[N]`, `--verbosity[=N]`; default 2.
    pub log_level: i32,
    /// `--log-pid` (upstream `log_file_per_pid`).
    pub log_pid: bool,
    /// `--display-stats`.
    pub display_stats: bool,

    /// `-t`, `--tree` (upstream `tree_id`); always positive.
    pub tree: Option<i32>,
    /// `-R` / `-s` (`--leave-running`, `--leave-stopped`); the last one given wins.
    pub final_state: FinalState,
    /// `-d`, `--restore-detached`, `--daemon` (one upstream field: `restore_detach` / `daemon_mode`).
    pub restore_detached: bool,
    /// `-S`, `--restore-sibling`.
    pub restore_sibling: bool,
    /// `--pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `-j`, `--shell-job`.
    pub shell_job: bool,
    /// `--exec-cmd`: the command is `positional[1..]`.
    pub exec_cmd: bool,
    /// `-r`, `--root`.
    pub root: Option<PathBuf>,
    /// `-L`, `--libdir`.
    pub libdir: Option<PathBuf>,
    /// `--action-script` (upstream `add_script()`), in order.
    pub action_scripts: Vec<String>,
    /// `--close FD`: descriptors CRIU closes while parsing (recorded, not closed, here).
    pub close_fds: Vec<i32>,
    /// `--unprivileged`.
    pub unprivileged: bool,
    /// `--deprecated`.
    pub deprecated: bool,
    /// `--stream`.
    pub stream: bool,

    /// `--prev-images-dir` (upstream `img_parent`).
    pub prev_images_dir: Option<String>,
    /// `--track-mem`.
    pub track_mem: bool,
    /// `--auto-dedup`.
    pub auto_dedup: bool,
    /// `--lazy-pages`.
    pub lazy_pages: bool,
    /// `--pre-dump-mode`.
    pub pre_dump_mode: PreDumpMode,
    /// `--page-server` (upstream `use_page_server`).
    pub page_server: bool,
    /// `--address`.
    pub address: Option<String>,
    /// `--port` (upstream `unsigned short port`; 0 means unset).
    pub port: u16,
    /// `--ps-socket FD` (upstream `ps_socket`, -1 when unset).
    pub ps_socket: Option<i32>,
    /// `--status-fd FD` (in the own descriptor table).
    pub status_fd: Option<i32>,
    /// `--group NAME|GID` (our extension): the service socket is mode 0660 and owned by this group
    /// instead of mode 0666.
    pub service_group: Option<String>,
    /// `--cpu-cap[=CAPS]`; `None` means never given (CRIU then checks FPU|INS and writes no `cpuinfo.img`).
    pub cpu_cap: Option<u32>,

    /// `--tls-cacert`.
    pub tls_cacert: Option<String>,
    /// `--tls-cacrl`.
    pub tls_cacrl: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<String>,
    /// `--tls-key`.
    pub tls_key: Option<String>,
    /// `--tls`.
    pub tls: bool,
    /// `--tls-no-cn-verify`.
    pub tls_no_cn_verify: bool,

    /// `-x[INO,...]`, `--ext-unix-sk[=INO,...]` (the inodes become `unix[INO]` externals).
    pub ext_unix_sk: bool,
    /// `--tcp-established` (upstream `tcp_established_ok`).
    pub tcp_established: bool,
    /// `--skip-in-flight` (upstream `tcp_skip_in_flight`).
    pub tcp_skip_in_flight: bool,
    /// `--tcp-close`.
    pub tcp_close: bool,
    /// `--network-lock`.
    pub network_lock: NetworkLock,
    /// `--empty-ns net` (bit [`EMPTY_NS_NET`]).
    pub empty_ns: u32,
    /// `--external`, `--veth-pair`, `-M KEY:VAL`, `-x INO`: every external as CRIU stores it
    /// (`veth[IN]:OUT`, `mnt[KEY]:VAL`, `unix[INO]`, ...), in order.
    pub external: Vec<String>,
    /// `--inherit-fd fd[N]:KEY`.
    pub inherit_fds: Vec<InheritFd>,
    /// `-J`, `--join-ns`.
    pub join_ns: Vec<JoinNs>,
    /// `--weak-sysctls`.
    pub weak_sysctls: bool,

    /// `--file-locks`, `-l` (upstream `handle_file_locks`).
    pub file_locks: bool,
    /// `--link-remap` (upstream `link_remap_ok`).
    pub link_remap: bool,
    /// `--ghost-limit SIZE` (bytes; `K`, `M`, `G` suffixes).
    pub ghost_limit: u64,
    /// `--ghost-fiemap` (default on).
    pub ghost_fiemap: bool,
    /// `--evasive-devices`.
    pub evasive_devices: bool,
    /// `--force-irmap`.
    pub force_irmap: bool,
    /// `--irmap-scan-path`.
    pub irmap_scan_paths: Vec<String>,
    /// `--file-validation`.
    pub file_validation: FileValidation,
    /// `--skip-file-rwx-check`.
    pub skip_file_rwx_check: bool,
    /// `--allow-uprobes`.
    pub allow_uprobes: bool,
    /// `-M auto` (upstream `autodetect_ext_mounts`).
    pub auto_ext_mounts: bool,
    /// `--enable-external-sharing`.
    pub enable_external_sharing: bool,
    /// `--enable-external-masters`.
    pub enable_external_masters: bool,
    /// `--skip-mnt`.
    pub skip_mnt: Vec<String>,
    /// `--enable-fs` (comma-separated lists kept as given).
    pub enable_fs: Vec<String>,
    /// `--mntns-compat-mode`.
    pub mntns_compat_mode: bool,

    /// `--manage-cgroups[=MODE]`.
    pub manage_cgroups: CgroupMode,
    /// `--cgroup-root`.
    pub cgroup_roots: Vec<CgroupRoot>,
    /// `--cgroup-props`.
    pub cgroup_props: Option<String>,
    /// `--cgroup-props-file`.
    pub cgroup_props_file: Option<String>,
    /// `--cgroup-dump-controller`.
    pub cgroup_dump_controllers: Vec<String>,
    /// `--cgroup-yard`.
    pub cgroup_yard: Option<String>,
    /// `--freeze-cgroup`.
    pub freeze_cgroup: Option<String>,
    /// `--timeout` in seconds.
    pub timeout: u32,

    /// `--lsm-profile TYPE:NAME`.
    pub lsm_profile: Option<String>,
    /// `--lsm-mount-context`.
    pub lsm_mount_context: Option<String>,

    /// `--feature NAME` (for `criu check`), in order.
    pub features: Vec<String>,
    /// `--extra` (or `--all`).
    pub check_extra: bool,
    /// `--experimental` (or `--all`).
    pub check_experimental: bool,

    /// `--config FILE` (the last one given).
    pub config: Option<PathBuf>,
    /// `--no-default-config`.
    pub no_default_config: bool,
    /// `-h`, `--help`: parsing stopped there; print the usage.
    pub help: bool,
    /// `-V`, `--version`: parsing stopped there; print the version.
    pub version: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            action: None,
            positional: Vec::new(),
            images_dir: None,
            work_dir: None,
            log_file: None,
            log_level: DEFAULT_LOG_LEVEL,
            log_pid: false,
            display_stats: false,
            tree: None,
            final_state: FinalState::Dead,
            restore_detached: false,
            restore_sibling: false,
            pidfile: None,
            shell_job: false,
            exec_cmd: false,
            root: None,
            libdir: None,
            action_scripts: Vec::new(),
            close_fds: Vec::new(),
            unprivileged: false,
            deprecated: false,
            stream: false,
            prev_images_dir: None,
            track_mem: false,
            auto_dedup: false,
            lazy_pages: false,
            pre_dump_mode: PreDumpMode::Splice,
            page_server: false,
            address: None,
            port: 0,
            ps_socket: None,
            status_fd: None,
            service_group: None,
            cpu_cap: None,
            tls_cacert: None,
            tls_cacrl: None,
            tls_cert: None,
            tls_key: None,
            tls: false,
            tls_no_cn_verify: false,
            ext_unix_sk: false,
            tcp_established: false,
            tcp_skip_in_flight: false,
            tcp_close: false,
            network_lock: NetworkLock::Iptables,
            empty_ns: 0,
            external: Vec::new(),
            inherit_fds: Vec::new(),
            join_ns: Vec::new(),
            weak_sysctls: false,
            file_locks: false,
            link_remap: false,
            ghost_limit: DEFAULT_GHOST_LIMIT,
            ghost_fiemap: true,
            evasive_devices: false,
            force_irmap: false,
            irmap_scan_paths: Vec::new(),
            file_validation: FileValidation::BuildId,
            skip_file_rwx_check: false,
            allow_uprobes: false,
            auto_ext_mounts: false,
            enable_external_sharing: false,
            enable_external_masters: false,
            skip_mnt: Vec::new(),
            enable_fs: Vec::new(),
            mntns_compat_mode: false,
            manage_cgroups: CgroupMode::Soft,
            cgroup_roots: Vec::new(),
            cgroup_props: None,
            cgroup_props_file: None,
            cgroup_dump_controllers: Vec::new(),
            cgroup_yard: None,
            freeze_cgroup: None,
            timeout: DEFAULT_TIMEOUT,
            lsm_profile: None,
            lsm_mount_context: None,
            features: Vec::new(),
            check_extra: false,
            check_experimental: false,
            config: None,
            no_default_config: false,
            help: false,
            version: false,
        }
    }
}

/// Errors of option parsing (command line and configuration files).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A long option that matches no entry.
    #[error("unrecognized option '{option}'")]
    UnknownOption {
        /// The option as written (`--foo`).
        option: String,
    },
    /// A short option that does not exist.
    #[error("invalid option -- '{option}'")]
    InvalidShortOption {
        /// The option character.
        option: char,
    },
    /// A long-option prefix that matches several different options.
    #[error("option '{option}' is ambiguous; possibilities: {}", candidates.join(" "))]
    AmbiguousOption {
        /// The prefix as written.
        option: String,
        /// Every matching option.
        candidates: Vec<String>,
    },
    /// A required argument is missing.
    #[error("option '{option}' requires an argument")]
    MissingArgument {
        /// The option (`-D`, `--images-dir`).
        option: String,
    },
    /// `--name=value` for an option without argument.
    #[error("option '{option}' doesn't allow an argument")]
    UnexpectedArgument {
        /// The option.
        option: String,
    },
    /// The argument of an option is not acceptable.
    #[error("invalid argument for {option}: '{value}' (expected {expected})")]
    InvalidArgument {
        /// The option.
        option: String,
        /// The argument as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// An option CRIU removed.
    #[error("option {option} is deprecated: {hint}")]
    Deprecated {
        /// The option.
        option: String,
        /// What to use instead.
        hint: &'static str,
    },
    /// A configuration file line that does not follow the syntax.
    #[error("unsupported configuration file format at line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An error inside a configuration file.
    #[error("config file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<ConfigError>,
    },
}

/// Parses a command line (without `argv[0]`) onto CRIU's defaults, without reading any configuration file.
///
/// Stops at `-h`/`--help` and `-V`/`--version` (setting [`Config::help`] / [`Config::version`]), as CRIU
/// does.
#[doc(alias = "parse_options")]
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    options::apply_args(args.into_iter().collect(), &mut cfg, true)?;
    Ok(cfg)
}

/// Builds the configuration of a `criu` invocation (arguments without `argv[0]`) the way CRIU does:
///
/// 1. a plain `-h` or `--help` anywhere wins over everything (no file is read);
/// 2. `/etc/criu/default.conf` and `$HOME/.criu/default.conf`, unless `--no-default-config` or
///    `--config` is on the command line;
/// 3. `$CRIU_CONFIG_FILE` (read even with `--no-default-config`, as upstream does);
/// 4. the `--config FILE` file;
/// 5. the command line, which therefore wins.
///
/// Missing files are skipped (also the `--config` file, as upstream).
pub fn load_cli<I: IntoIterator<Item = String>>(args: I) -> Result<Config, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    let pre = file::pre_parse(&args);
    let mut cfg = Config::default();
    if pre.help {
        cfg.help = true;
        return Ok(cfg);
    }
    if !pre.no_default_config {
        file::load_global_and_user(&mut cfg)?;
    }
    file::load_env_file(&mut cfg)?;
    if let Some(path) = &pre.config_file {
        file::load_file(path.as_ref(), &mut cfg)?;
    }
    options::apply_args(args, &mut cfg, true)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
