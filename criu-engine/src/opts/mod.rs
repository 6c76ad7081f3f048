//! One validated set of options per request (upstream `setup_opts_from_req()` in `criu/cr-service.c`, and
//! the checks of `main()` in `criu/crtools.c` and `check_options()` in `criu/config.c`).
//!
//! Upstream keeps a single global `opts` and mutates it from every source. Here a request starts from a copy
//! of the connection defaults (a [`Config`] from the configuration files), applies the RPC fields onto it in
//! upstream order, then the request's own configuration file, and finally turns the result into a
//! [`RequestOpts`]: directories opened, descriptors reopened, the log target decided, and every option the
//! engine cannot honour refused with `EBADRQC` and a message naming it.
//!
//! # References
//! - [proc_pid_fd(5)](https://man7.org/linux/man-pages/man5/proc_pid_fd.5.html): `images_dir_fd`,
//!   `work_dir_fd` and `status_fd` are reopened through `/proc/<peer>/fd/<n>`.

mod cli;
mod rpc;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::config::{
    CgroupMode, CgroupRoot, Config, ConfigError, FinalState, InheritFd, NetworkLock, PreDumpMode,
};

pub use cli::from_config;
pub use rpc::from_rpc;

/// Log file name used when a request names none (upstream `DEFAULT_LOG_FILENAME`).
pub const DEFAULT_LOG_FILE: &str = "criu.log";

/// `cr_errno` of every failure of options processing (`EBADRQC`).
pub const OPTS_ERRNO: i32 = libc::EBADRQC;

/// Whether the engine can track dirty memory between dumps (`--track-mem`, `criu_opts.track_mem`): the
/// kernel offers userfaultfd asynchronous write-protect and `PAGEMAP_SCAN` (probed once per process).
pub fn memory_tracking_available() -> bool {
    crate::features::engine_supports_mem_track() && crate::mem::dirty::kernel_supports()
}

/// Who the request is about, and what the worker knows about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptsContext {
    /// The worker serves a `criu service` connection (not `swrk`): swrk-only options are refused.
    pub service: bool,
    /// `SO_PEERCRED` pid of the connection.
    pub peer_pid: i32,
}

/// The tree to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Named explicitly (`criu_opts.pid`, `-t`).
    Pid(i32),
    /// `criu_opts.pid` absent: the requesting peer dumps itself (section 6 of the RPC spec).
    Peer(i32),
}

impl Target {
    /// The pid, whichever way it was named.
    pub fn pid(self) -> i32 {
        match self {
            Target::Pid(p) | Target::Peer(p) => p,
        }
    }
}

/// Where the request's log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// A file; a relative path is relative to the work directory.
    File(PathBuf),
    /// `-`: the worker's stdout.
    Stdout,
    /// `log_to_stderr` (or the command line without `-o`): the worker's stderr.
    Stderr,
}

impl LogTarget {
    fn from_path(p: &Path) -> Self {
        if p == Path::new("-") {
            LogTarget::Stdout
        } else {
            LogTarget::File(p.to_owned())
        }
    }
}

/// How the images directory was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagesDirSource {
    /// `images_dir_fd` = n, opened as `/proc/<peer>/fd/<n>`.
    PeerFd(i32),
    /// `images_dir` path of the request.
    RpcPath,
    /// `images-dir` of the request's configuration file (`config_file`).
    RpcConfigFile,
    /// `-D` on the command line or in a configuration file, or `.`.
    CommandLine,
}

/// The opened images directory.
#[derive(Debug)]
pub struct ImagesDir {
    /// The path it was opened by (`/proc/<peer>/fd/<n>` for descriptors).
    pub path: PathBuf,
    /// `O_RDONLY | O_DIRECTORY | O_CLOEXEC` descriptor.
    pub fd: OwnedFd,
    /// How the client named it.
    pub source: ImagesDirSource,
}

/// The work directory: logs, pidfiles and statistics go there.
#[derive(Debug)]
pub struct WorkDir {
    /// The path it was opened by.
    pub path: PathBuf,
    /// `O_PATH | O_DIRECTORY | O_CLOEXEC` descriptor (log files are created relative to it).
    pub fd: OwnedFd,
}

/// Everything the engine needs to know about one request (or one command-line invocation).
#[derive(Debug)]
pub struct RequestOpts {
    /// Tree to dump (DUMP, PRE_DUMP, SINGLE_PRE_DUMP, `-t`); `None` where no target applies.
    pub target: Option<Target>,
    /// Opened images directory; `None` for CHECK, `service` and `swrk`.
    pub images_dir: Option<ImagesDir>,
    /// Opened work directory; `None` when nothing needs it (CHECK without log file, `swrk`).
    pub work_dir: Option<WorkDir>,
    /// Where the log goes; `None` means no log output (errors are still captured in memory).
    pub log_file: Option<LogTarget>,
    /// 0 messages only, 1 errors, 2 +warnings (default), 3 +info, 4 and above +debug.
    pub log_level: u32,
    /// `--log-pid`.
    pub log_pid: bool,
    /// `display_stats`.
    pub display_stats: bool,

    /// After a dump: kill (default), leave running or leave stopped (`leave_stopped` wins over
    /// `leave_running` in a request).
    pub final_state: FinalState,
    /// Restore detached (always for RPC RESTORE; `-d` on the command line).
    pub restore_detached: bool,
    /// `rst_sibling` / `-S`: restore the root as a sibling of the worker.
    pub restore_sibling: bool,
    /// `shell_job`.
    pub shell_job: bool,
    /// `orphan_pts_master`.
    pub orphan_pts_master: bool,
    /// Command to exec after a successful restore (`exec_cmd`, `--exec-cmd -- CMD...`).
    pub exec_cmd: Vec<String>,
    /// `root`.
    pub root: Option<PathBuf>,
    /// `parent_img` / `--prev-images-dir`, relative to the images directory.
    pub parent_img: Option<String>,
    /// `--pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `notify_scripts`: send notifications over the connection.
    pub notify_scripts: bool,
    /// `--action-script` entries (also from the RPC configuration file).
    pub action_scripts: Vec<String>,
    /// `unprivileged`.
    pub unprivileged: bool,

    /// `ext_unix_sk`.
    pub ext_unix_sk: bool,
    /// `tcp_established`.
    pub tcp_established: bool,
    /// `tcp_skip_in_flight`.
    pub tcp_skip_in_flight: bool,
    /// `tcp_close`.
    pub tcp_close: bool,
    /// `network_lock` (restore uses the method recorded in the inventory).
    pub network_lock: NetworkLock,
    /// `weak_sysctls`.
    pub weak_sysctls: bool,
    /// Every external (`external`, plus `veths`, `ext_mnt` and `unix_sk_ino` in CRIU's string forms).
    pub externals: Vec<String>,
    /// `inherit_fd` entries; each descriptor was open when the options were processed.
    pub inherit_fds: Vec<InheritFd>,

    /// `file_locks`.
    pub file_locks: bool,
    /// `link_remap`.
    pub link_remap: bool,
    /// `ghost_limit` in bytes.
    pub ghost_limit: u64,
    /// `evasive_devices`.
    pub evasive_devices: bool,
    /// `force_irmap`.
    pub force_irmap: bool,
    /// `irmap_scan_paths`.
    pub irmap_scan_paths: Vec<String>,
    /// `skip_file_rwx_check`.
    pub skip_file_rwx_check: bool,
    /// `skip_mnt`.
    pub skip_mnt: Vec<String>,
    /// `enable_fs`.
    pub enable_fs: Vec<String>,
    /// `mntns_compat_mode` (restore only).
    pub mntns_compat_mode: bool,

    /// `manage_cgroups` / `manage_cgroups_mode` (default SOFT).
    pub manage_cgroups: CgroupMode,
    /// `cg_root`.
    pub cgroup_roots: Vec<CgroupRoot>,
    /// `cgroup_props`.
    pub cgroup_props: Option<String>,
    /// `cgroup_props_file`.
    pub cgroup_props_file: Option<String>,
    /// `cgroup_dump_controller`.
    pub cgroup_dump_controllers: Vec<String>,
    /// `cgroup_yard`.
    pub cgroup_yard: Option<String>,
    /// `freeze_cgroup`.
    pub freeze_cgroup: Option<String>,
    /// Seconds allowed for freezing (default 10).
    pub timeout: u32,

    /// `track_mem` (only ever true when [`memory_tracking_available`]).
    pub track_mem: bool,
    /// `auto_dedup`.
    pub auto_dedup: bool,
    /// `pre_dump_mode`.
    pub pre_dump_mode: PreDumpMode,
    /// `lazy_pages` / `--lazy-pages`: restore memory on demand through the
    /// lazy-pages daemon; `page-server --lazy-pages` serves pages to one.
    pub lazy_pages: bool,
    /// Pages go to a page server (`ps` present without `lazy_pages`, `--page-server`).
    pub page_server: bool,
    /// `ps.address` / `--address`.
    pub address: Option<String>,
    /// `ps.port` / `--port` (0 = not given).
    pub port: u16,
    /// `ps.fd` / `--ps-socket`: an already connected socket in the worker's own table.
    pub ps_socket: Option<i32>,
    /// `status_fd`, reopened write-only: write one `\0` and close it when ready.
    pub status_fd: Option<OwnedFd>,
    /// `pidfd_store_sk` descriptor number in the peer's table (validated by the caller after kernel probing).
    pub pidfd_store_sk: Option<i32>,
    /// `cpu_cap`: `None` when absent (check FPU|INS, write no `cpuinfo.img`); when given over RPC the
    /// IMAGE bit is added, as upstream.
    pub cpu_cap: Option<u32>,
    /// The non-root service client the request is held to (`None`: root, swrk, command line).
    pub caller: Option<crate::authz::Caller>,
    /// Inode of the worker's own end of the RPC connection, set by the RPC
    /// glue for DUMP: a unix socket of the dumped task connected to it is the
    /// client's RPC socket (a self-dump), saved as CRIU's "service" socket.
    pub rpc_socket_ino: Option<u64>,
}

/// Errors of options processing; all of them are reported to RPC clients with `cr_errno = EBADRQC`.
#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    /// A request type that needs options came without `opts`.
    #[error("no opts in {req_type} request")]
    MissingOpts {
        /// Request type name.
        req_type: &'static str,
    },
    /// Neither `images_dir_fd` nor `images_dir` (upstream phrase, kept).
    #[error("Neither images_dir_fd nor images_dir was passed by RPC client.")]
    NoImagesDir,
    /// `log_file` contains `/` (upstream phrase, searched for by clients).
    #[error("No subdirs are allowed in log_file name: {name}")]
    LogFileSubdir {
        /// The requested name.
        name: String,
    },
    /// A log file is wanted but no work directory can be derived.
    #[error("images-dir or work-dir is required when using log file")]
    NoWorkDir,
    /// The images directory cannot be opened.
    #[error("can't open images directory {}: {errno}", path.display())]
    OpenImagesDir {
        /// Path used.
        path: PathBuf,
        /// Failure.
        errno: Errno,
    },
    /// The work directory cannot be opened.
    #[error("can't open work directory {}: {errno}", path.display())]
    OpenWorkDir {
        /// Path used.
        path: PathBuf,
        /// Failure.
        errno: Errno,
    },
    /// `status_fd` cannot be reopened.
    #[error("can't reopen status fd {}: {errno}", path.display())]
    OpenStatusFd {
        /// Path used.
        path: PathBuf,
        /// Failure.
        errno: Errno,
    },
    /// A swrk-only option in service mode.
    #[error("{option} is not allowed in standalone service")]
    SwrkOnly {
        /// The option.
        option: &'static str,
    },
    /// An inherited descriptor is not open in the worker.
    #[error("inherit_fd {fd} ({key}) is not an open descriptor of the worker")]
    InheritFdClosed {
        /// Descriptor number.
        fd: i32,
        /// Its key.
        key: String,
    },
    /// A pid that cannot name a process.
    #[error("invalid pid {pid}")]
    InvalidPid {
        /// The pid.
        pid: i32,
    },
    /// An enum or bitmask value out of range.
    #[error("invalid {option} value {value}")]
    OutOfRange {
        /// The option.
        option: &'static str,
        /// The value.
        value: i64,
    },
    /// An option valid only on restore.
    #[error("{option} is only valid on restore")]
    RestoreOnly {
        /// The option.
        option: &'static str,
    },
    /// Memory tracking requested without engine support.
    #[error("Tracking memory is not available; omit {option}")]
    TrackMemUnavailable {
        /// The option.
        option: &'static str,
    },
    /// An option this engine does not implement.
    #[error("{option} is not supported by this CRIU implementation")]
    Unsupported {
        /// The option (with its value where only some values are unsupported).
        option: String,
    },
    /// Options that contradict each other or a command line that does not fit the action.
    #[error("{reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// The request's configuration file (`config_file`) is malformed or names an unknown option.
    #[error("{source}")]
    RpcConfigFile {
        /// The error, naming the file.
        #[source]
        source: ConfigError,
    },
}

impl OptsError {
    /// `cr_errno` for the response: always `EBADRQC`.
    pub fn cr_errno(&self) -> i32 {
        OPTS_ERRNO
    }
}

/// Non-empty string fields (mode T of the RPC spec).
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn open_images_dir(path: PathBuf, source: ImagesDirSource) -> Result<ImagesDir, OptsError> {
    match nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(ImagesDir { path, fd, source }),
        Err(errno) => Err(OptsError::OpenImagesDir { path, errno }),
    }
}

fn open_work_dir(path: PathBuf) -> Result<WorkDir, OptsError> {
    match nix::fcntl::open(
        &path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(WorkDir { path, fd }),
        Err(errno) => Err(OptsError::OpenWorkDir { path, errno }),
    }
}

/// Reopens a descriptor through `/proc/<pid>/fd/<n>` for writing (upstream does this for `status_fd`).
fn reopen_status_fd(pid: &str, fd: i32) -> Result<OwnedFd, OptsError> {
    let path = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    nix::fcntl::open(&path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| OptsError::OpenStatusFd { path, errno })
}

/// Upstream `inherit_fd_add()` checks each descriptor with `fstat()`; the `/proc/self/fd` entry exists
/// exactly when the descriptor is open, which needs no raw-descriptor borrowing.
fn check_inherit_fds(fds: &[InheritFd]) -> Result<(), OptsError> {
    for inh in fds {
        let open =
            inh.fd >= 0 && std::fs::symlink_metadata(format!("/proc/self/fd/{}", inh.fd)).is_ok();
        if !open {
            return Err(OptsError::InheritFdClosed {
                fd: inh.fd,
                key: inh.key.clone(),
            });
        }
    }
    Ok(())
}

/// How to name options in messages: RPC field names or command-line options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Rpc,
    Cli,
}

impl Naming {
    fn pick(self, rpc: &'static str, cli: &'static str) -> &'static str {
        match self {
            Naming::Rpc => rpc,
            Naming::Cli => cli,
        }
    }
}

/// Upstream `check_options()` plus every option the engine cannot honour yet, checked on the merged
/// configuration (so an option set by a configuration file is refused like one set over RPC).
///
/// `lazy_ok`: the action takes `lazy_pages` (restore, `lazy-pages`, `page-server`).
fn check_options(
    cfg: &Config,
    is_restore: bool,
    lazy_ok: bool,
    naming: Naming,
) -> Result<(), OptsError> {
    let n = |rpc, cli| naming.pick(rpc, cli);
    let unsupported = |option: &str| OptsError::Unsupported {
        option: option.to_owned(),
    };
    if cfg.restore_sibling && !cfg.restore_detached {
        return Err(OptsError::Usage {
            reason: format!(
                "{} only makes sense with a detached restore",
                n("rst_sibling", "--restore-sibling")
            ),
        });
    }
    if let Some(fd) = cfg.ps_socket {
        if fd <= 2 && cfg.restore_detached {
            return Err(OptsError::Usage {
                reason: format!(
                    "{} {fd}: standard descriptors are closed in daemon mode",
                    n("ps.fd", "--ps-socket")
                ),
            });
        }
    }
    if cfg.tls {
        return Err(unsupported(n("tls", "--tls")));
    }
    if cfg.mntns_compat_mode && !is_restore {
        return Err(OptsError::RestoreOnly {
            option: n("mntns_compat_mode", "--mntns-compat-mode"),
        });
    }
    if cfg.track_mem && !memory_tracking_available() {
        return Err(OptsError::TrackMemUnavailable {
            option: n("track_mem", "--track-mem"),
        });
    }
    // Lazy dumps (pages kept in the dump's page server) are not done yet.
    if cfg.lazy_pages && !lazy_ok {
        return Err(unsupported(n("lazy_pages", "--lazy-pages")));
    }
    if cfg.lazy_pages && is_restore && cfg.auto_dedup {
        return Err(OptsError::Usage {
            reason: format!(
                "{} cannot be combined with {}: the lazy-pages daemon reads the pages",
                n("lazy_pages", "--lazy-pages"),
                n("auto_dedup", "--auto-dedup")
            ),
        });
    }
    if cfg.stream {
        return Err(unsupported("--stream"));
    }
    if cfg.lsm_profile.is_some() {
        return Err(unsupported(n("lsm_profile", "--lsm-profile")));
    }
    if cfg.lsm_mount_context.is_some() {
        return Err(unsupported(n("lsm_mount_context", "--lsm-mount-context")));
    }
    if cfg.empty_ns != 0 {
        return Err(unsupported(n("empty_ns", "--empty-ns")));
    }
    if !cfg.join_ns.is_empty() {
        return Err(unsupported(n("join_ns", "--join-ns")));
    }
    if cfg.auto_ext_mounts {
        return Err(unsupported(n("auto_ext_mnt", "--ext-mount-map auto")));
    }
    if cfg.enable_external_sharing {
        return Err(unsupported(n("ext_sharing", "--enable-external-sharing")));
    }
    if cfg.enable_external_masters {
        return Err(unsupported(n("ext_masters", "--enable-external-masters")));
    }
    if let Some(mode) = match cfg.manage_cgroups {
        CgroupMode::Props => Some("props"),
        CgroupMode::Full => Some("full"),
        CgroupMode::Strict => Some("strict"),
        CgroupMode::Ignore | CgroupMode::None | CgroupMode::Soft => None,
    } {
        return Err(unsupported(&format!(
            "{} {mode}",
            n("manage_cgroups_mode", "--manage-cgroups")
        )));
    }
    Ok(())
}

/// Log level as the logger takes it: negative values (`-v-1`) mean "messages only".
fn log_level(level: i32) -> u32 {
    u32::try_from(level).unwrap_or(0)
}

/// The parts of a [`RequestOpts`] that come straight from the merged configuration.
fn from_merged(cfg: Config, log_file: Option<LogTarget>) -> RequestOpts {
    RequestOpts {
        rpc_socket_ino: None,
        target: cfg.tree.map(Target::Pid),
        images_dir: None,
        work_dir: None,
        log_file,
        log_level: log_level(cfg.log_level),
        log_pid: cfg.log_pid,
        display_stats: cfg.display_stats,
        final_state: cfg.final_state,
        restore_detached: cfg.restore_detached,
        restore_sibling: cfg.restore_sibling,
        shell_job: cfg.shell_job,
        orphan_pts_master: false,
        exec_cmd: Vec::new(),
        root: cfg.root,
        parent_img: cfg.prev_images_dir,
        pidfile: cfg.pidfile,
        notify_scripts: false,
        action_scripts: cfg.action_scripts,
        unprivileged: cfg.unprivileged,
        ext_unix_sk: cfg.ext_unix_sk,
        tcp_established: cfg.tcp_established,
        tcp_skip_in_flight: cfg.tcp_skip_in_flight,
        tcp_close: cfg.tcp_close,
        network_lock: cfg.network_lock,
        weak_sysctls: cfg.weak_sysctls,
        externals: cfg.external,
        inherit_fds: cfg.inherit_fds,
        file_locks: cfg.file_locks,
        link_remap: cfg.link_remap,
        ghost_limit: cfg.ghost_limit,
        evasive_devices: cfg.evasive_devices,
        force_irmap: cfg.force_irmap,
        irmap_scan_paths: cfg.irmap_scan_paths,
        skip_file_rwx_check: cfg.skip_file_rwx_check,
        skip_mnt: cfg.skip_mnt,
        enable_fs: cfg.enable_fs,
        mntns_compat_mode: cfg.mntns_compat_mode,
        manage_cgroups: cfg.manage_cgroups,
        cgroup_roots: cfg.cgroup_roots,
        cgroup_props: cfg.cgroup_props,
        cgroup_props_file: cfg.cgroup_props_file,
        cgroup_dump_controllers: cfg.cgroup_dump_controllers,
        cgroup_yard: cfg.cgroup_yard,
        freeze_cgroup: cfg.freeze_cgroup,
        timeout: cfg.timeout,
        track_mem: cfg.track_mem,
        auto_dedup: cfg.auto_dedup,
        pre_dump_mode: cfg.pre_dump_mode,
        page_server: cfg.page_server,
        lazy_pages: cfg.lazy_pages,
        address: cfg.address,
        port: cfg.port,
        ps_socket: cfg.ps_socket,
        status_fd: None,
        pidfd_store_sk: None,
        cpu_cap: cfg.cpu_cap,
        caller: None,
    }
}

#[cfg(test)]
mod tests;
