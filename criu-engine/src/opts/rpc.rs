//! `criu_opts` of an RPC request onto the connection defaults (upstream `setup_opts_from_req()`,
//! `resolve_images_dir_path()`, `setup_images_and_workdir()`, `setup_logging_from_req()`).

use std::path::PathBuf;

use criu_proto::rpc::{CriuCgMode, CriuNetworkLockMethod, CriuOpts, CriuPreDumpMode, CriuReqType};

use super::{
    check_inherit_fds, check_options, from_merged, non_empty, open_images_dir, open_work_dir,
    reopen_status_fd, ImagesDir, ImagesDirSource, LogTarget, Naming, OptsContext, OptsError,
    RequestOpts, Target, DEFAULT_LOG_FILE,
};
use crate::config::{
    cpu_cap, load_file, CgroupMode, CgroupRoot, Config, FinalState, InheritFd, JoinNs, NetworkLock,
    PreDumpMode, EMPTY_NS_NET,
};

/// What the request says that has no command-line counterpart.
#[derive(Debug, Default)]
struct RpcOnly {
    target: Option<Target>,
    exec_cmd: Vec<String>,
    notify_scripts: bool,
    orphan_pts_master: bool,
    status_fd: Option<std::os::fd::OwnedFd>,
    pidfd_store_sk: Option<i32>,
    parent_img: Option<String>,
}

/// Builds the options of one RPC request (upstream `setup_opts_from_req()`).
///
/// `defaults` are the connection defaults (swrk: the default configuration files; service: built-in
/// defaults). Order as upstream: RPC fields, then `config_file`, then images dir / work dir / log, then the
/// global checks. The caller still has to validate `pidfd_store_sk` after kernel probing.
///
/// CHECK processes options only when it has `opts` with a `log_file` and without `log_to_stderr`;
/// otherwise it gets the defaults and no log file (or stderr), and no directory is required.
#[doc(alias = "setup_opts_from_req")]
pub fn from_rpc(
    req_type: CriuReqType,
    opts: Option<&CriuOpts>,
    defaults: &Config,
    ctx: &OptsContext,
) -> Result<RequestOpts, OptsError> {
    let mut cfg = defaults.clone();
    cfg.action = None;
    cfg.positional.clear();
    // A request's target comes from the request only.
    cfg.tree = None;

    let is_check = req_type == CriuReqType::Check;
    if is_check {
        let wants_log_file =
            opts.is_some_and(|o| non_empty(&o.log_file).is_some() && o.log_to_stderr != Some(true));
        if !wants_log_file {
            let to_stderr = opts.is_some_and(|o| o.log_to_stderr == Some(true));
            if let Some(level) = opts.and_then(|o| o.log_level) {
                cfg.log_level = level;
            }
            return Ok(from_merged(cfg, to_stderr.then_some(LogTarget::Stderr)));
        }
    }
    let o = opts.ok_or(OptsError::MissingOpts {
        req_type: req_type.as_str_name(),
    })?;

    let is_restore = req_type == CriuReqType::Restore;
    if is_restore {
        // Upstream forces a detached restore under the worker.
        cfg.restore_detached = true;
    }
    let only = apply_fields(req_type, o, &mut cfg, ctx)?;

    // The request's configuration file overrides every RPC field; log file, work dir and images dir are
    // taken from it only when it names them.
    let saved_log = cfg.log_file.take();
    let saved_work = cfg.work_dir.take();
    cfg.images_dir = None;
    if let Some(path) = non_empty(&o.config_file) {
        load_file(PathBuf::from(path).as_path(), &mut cfg)
            .map_err(|source| OptsError::RpcConfigFile { source })?;
        if cfg.help || cfg.version {
            return Err(OptsError::Usage {
                reason: format!("config file {path}: --help and --version are not allowed"),
            });
        }
    }
    let log_from_conf = cfg.log_file.is_some();
    let work_from_conf = cfg.work_dir.is_some();
    let images_from_conf = cfg.images_dir.clone();
    if !log_from_conf {
        cfg.log_file = saved_log;
    }
    if !work_from_conf {
        cfg.work_dir = saved_work;
    }

    // A log file name with a directory part is refused before any directory
    // is looked at (upstream checks it a little later, but the outcome is the
    // same EBADRQC; this way the message names the real problem even when no
    // work directory could be derived either).
    if let (Some(name), false) = (non_empty(&o.log_file), log_from_conf) {
        if name.contains('/') {
            return Err(OptsError::LogFileSubdir {
                name: name.to_owned(),
            });
        }
    }

    let peer = ctx.peer_pid;
    let proc_fd = |fd: i32| PathBuf::from(format!("/proc/{peer}/fd/{fd}"));
    let images_path = if let Some(p) = images_from_conf {
        Some((p, ImagesDirSource::RpcConfigFile))
    } else if o.images_dir_fd != -1 {
        Some((
            proc_fd(o.images_dir_fd),
            ImagesDirSource::PeerFd(o.images_dir_fd),
        ))
    } else if let Some(p) = non_empty(&o.images_dir) {
        Some((PathBuf::from(p), ImagesDirSource::RpcPath))
    } else if is_check {
        None
    } else {
        return Err(OptsError::NoImagesDir);
    };

    let images_dir: Option<ImagesDir> = match &images_path {
        Some((path, source)) if !is_check => Some(open_images_dir(path.clone(), source.clone())?),
        _ => None,
    };

    let work_path = if work_from_conf {
        cfg.work_dir.clone()
    } else if let Some(fd) = o.work_dir_fd {
        Some(proc_fd(fd))
    } else if let Some(w) = &cfg.work_dir {
        Some(w.clone())
    } else {
        images_path.as_ref().map(|(p, _)| p.clone())
    };
    let work_dir = open_work_dir(work_path.ok_or(OptsError::NoWorkDir)?)?;

    for path in &o.irmap_scan_paths {
        cfg.irmap_scan_paths.push(path.clone());
    }

    let log_file = if let (Some(name), false) = (non_empty(&o.log_file), log_from_conf) {
        LogTarget::from_path(name.as_ref())
    } else if o.log_to_stderr == Some(true) && !log_from_conf {
        LogTarget::Stderr
    } else {
        match &cfg.log_file {
            Some(p) => LogTarget::from_path(p),
            None => LogTarget::File(PathBuf::from(DEFAULT_LOG_FILE)),
        }
    };
    // Upstream sets the level from the request after every configuration file (default 2).
    cfg.log_level = o.log_level.unwrap_or(crate::config::DEFAULT_LOG_LEVEL);

    if o.mntns_compat_mode == Some(true) {
        cfg.mntns_compat_mode = true;
    }
    check_options(&cfg, is_restore, is_restore, Naming::Rpc)?;
    check_inherit_fds(&cfg.inherit_fds)?;

    let mut out = from_merged(cfg, Some(log_file));
    out.images_dir = images_dir;
    out.work_dir = Some(work_dir);
    out.target = only.target;
    out.exec_cmd = only.exec_cmd;
    out.notify_scripts = only.notify_scripts;
    out.orphan_pts_master = only.orphan_pts_master;
    out.status_fd = only.status_fd;
    out.pidfd_store_sk = only.pidfd_store_sk;
    if only.parent_img.is_some() {
        out.parent_img = only.parent_img;
    }
    Ok(out)
}

fn range(option: &'static str, value: i64) -> OptsError {
    OptsError::OutOfRange { option, value }
}

/// The RPC fields in upstream order, applied onto `cfg` where the command line has the same option.
fn apply_fields(
    req_type: CriuReqType,
    o: &CriuOpts,
    cfg: &mut Config,
    ctx: &OptsContext,
) -> Result<RpcOnly, OptsError> {
    let mut only = RpcOnly::default();
    let set = |field: &mut bool, v: Option<bool>| {
        if let Some(v) = v {
            *field = v;
        }
    };

    set(&mut cfg.unprivileged, o.unprivileged);
    if o.leave_running == Some(true) {
        cfg.final_state = FinalState::Alive;
    }
    if o.leave_stopped == Some(true) {
        cfg.final_state = FinalState::Stopped;
    }
    let dumps = matches!(
        req_type,
        CriuReqType::Dump | CriuReqType::PreDump | CriuReqType::SinglePreDump
    );
    if dumps {
        only.target = Some(match o.pid {
            None => Target::Peer(ctx.peer_pid),
            // Upstream would try to dump pid 0 (and treat the reply as a self-dump); refuse it.
            Some(pid) if pid <= 0 => return Err(OptsError::InvalidPid { pid }),
            Some(pid) => Target::Pid(pid),
        });
    }
    if let Some(v) = o.ext_unix_sk {
        cfg.ext_unix_sk = v;
        for sk in &o.unix_sk_ino {
            cfg.external.push(format!("unix[{}]", sk.inode));
        }
    }
    if let Some(root) = non_empty(&o.root) {
        cfg.root = Some(PathBuf::from(root));
    }
    if let Some(v) = o.rst_sibling {
        if ctx.service {
            return Err(OptsError::SwrkOnly {
                option: "rst_sibling",
            });
        }
        cfg.restore_sibling = v;
    }
    set(&mut cfg.tcp_established, o.tcp_established);
    set(&mut cfg.tcp_skip_in_flight, o.tcp_skip_in_flight);
    set(&mut cfg.tcp_close, o.tcp_close);
    set(&mut cfg.weak_sysctls, o.weak_sysctls);
    set(&mut cfg.evasive_devices, o.evasive_devices);
    set(&mut cfg.shell_job, o.shell_job);
    set(&mut cfg.skip_file_rwx_check, o.skip_file_rwx_check);
    set(&mut cfg.file_locks, o.file_locks);
    set(&mut cfg.track_mem, o.track_mem);
    set(&mut cfg.link_remap, o.link_remap);
    set(&mut cfg.auto_dedup, o.auto_dedup);
    set(&mut cfg.force_irmap, o.force_irmap);
    only.exec_cmd.clone_from(&o.exec_cmd);
    set(&mut cfg.lazy_pages, o.lazy_pages);

    if let Some(mode) = o.pre_dump_mode {
        cfg.pre_dump_mode = match CriuPreDumpMode::try_from(mode) {
            Ok(CriuPreDumpMode::Splice) => PreDumpMode::Splice,
            Ok(CriuPreDumpMode::VmRead) => PreDumpMode::Read,
            Err(_) => return Err(range("pre_dump_mode", mode.into())),
        };
    }
    if let Some(method) = o.network_lock {
        cfg.network_lock = match CriuNetworkLockMethod::try_from(method) {
            Ok(CriuNetworkLockMethod::Iptables) => NetworkLock::Iptables,
            Ok(CriuNetworkLockMethod::Nftables) => NetworkLock::Nftables,
            Ok(CriuNetworkLockMethod::Skip) => NetworkLock::Skip,
            Err(_) => return Err(range("network_lock", method.into())),
        };
    }
    if let Some(ps) = &o.ps {
        // Upstream: `opts.port = (short)req->ps->port`, then stored as unsigned short.
        cfg.port = ps.port.unwrap_or(0) as u16;
        if !cfg.lazy_pages {
            cfg.page_server = true;
            cfg.address.clone_from(&ps.address);
            if let Some(fd) = ps.fd {
                if ctx.service {
                    return Err(OptsError::SwrkOnly { option: "ps.fd" });
                }
                cfg.ps_socket = Some(fd);
            }
        }
    }
    only.notify_scripts = o.notify_scripts == Some(true);

    for veth in &o.veths {
        cfg.external
            .push(format!("veth[{}]:{}", veth.if_in, veth.if_out));
    }
    for m in &o.ext_mnt {
        cfg.external.push(format!("mnt[{}]:{}", m.key, m.val));
    }
    for j in &o.join_ns {
        cfg.join_ns.push(JoinNs {
            ns: j.ns.clone(),
            ns_file: j.ns_file.clone(),
            extra: j.extra_opt.clone(),
        });
    }
    if !o.inherit_fd.is_empty() && ctx.service {
        return Err(OptsError::SwrkOnly {
            option: "inherit_fd",
        });
    }
    for inh in &o.inherit_fd {
        let entry = InheritFd {
            fd: inh.fd,
            key: inh.key.clone(),
        };
        check_inherit_fds(std::slice::from_ref(&entry))?;
        cfg.inherit_fds.push(entry);
    }
    cfg.external.extend(o.external.iter().cloned());
    for root in &o.cg_root {
        cfg.cgroup_roots.push(CgroupRoot {
            controller: root.ctrl.clone(),
            path: root.path.clone(),
        });
    }
    cfg.enable_fs.extend(o.enable_fs.iter().cloned());
    cfg.skip_mnt.extend(o.skip_mnt.iter().cloned());

    if let Some(caps) = o.cpu_cap {
        cfg.cpu_cap = Some(caps | cpu_cap::IMAGE);
    }
    if let Some(manage) = o.manage_cgroups {
        cfg.manage_cgroups = if manage {
            CgroupMode::Soft
        } else {
            CgroupMode::Ignore
        };
    }
    if let Some(mode) = o.manage_cgroups_mode {
        cfg.manage_cgroups = match CriuCgMode::try_from(mode) {
            Ok(CriuCgMode::Ignore) => CgroupMode::Ignore,
            Ok(CriuCgMode::CgNone) => CgroupMode::None,
            Ok(CriuCgMode::Props) => CgroupMode::Props,
            Ok(CriuCgMode::Soft | CriuCgMode::Default) => CgroupMode::Soft,
            Ok(CriuCgMode::Full) => CgroupMode::Full,
            Ok(CriuCgMode::Strict) => CgroupMode::Strict,
            Err(_) => return Err(range("manage_cgroups_mode", mode.into())),
        };
    }
    let set_str = |field: &mut Option<String>, v: &Option<String>| {
        if let Some(v) = non_empty(v) {
            *field = Some(v.to_owned());
        }
    };
    set_str(&mut cfg.freeze_cgroup, &o.freeze_cgroup);
    set_str(&mut cfg.lsm_profile, &o.lsm_profile);
    set_str(&mut cfg.lsm_mount_context, &o.lsm_mount_context);
    if let Some(t) = o.timeout {
        cfg.timeout = t;
    }
    set_str(&mut cfg.cgroup_props, &o.cgroup_props);
    set_str(&mut cfg.cgroup_props_file, &o.cgroup_props_file);
    cfg.cgroup_dump_controllers
        .extend(o.cgroup_dump_controller.iter().cloned());
    set_str(&mut cfg.cgroup_yard, &o.cgroup_yard);
    set_str(&mut cfg.tls_cacert, &o.tls_cacert);
    set_str(&mut cfg.tls_cacrl, &o.tls_cacrl);
    set_str(&mut cfg.tls_cert, &o.tls_cert);
    set_str(&mut cfg.tls_key, &o.tls_key);
    if o.tls == Some(true) {
        cfg.tls = true;
    }
    if o.tls_no_cn_verify == Some(true) {
        cfg.tls_no_cn_verify = true;
    }
    set(&mut cfg.auto_ext_mounts, o.auto_ext_mnt);
    set(&mut cfg.enable_external_sharing, o.ext_sharing);
    set(&mut cfg.enable_external_masters, o.ext_masters);
    if let Some(limit) = o.ghost_limit {
        cfg.ghost_limit = limit.into();
    }
    if let Some(ns) = o.empty_ns {
        if ns & !EMPTY_NS_NET != 0 {
            return Err(range("empty_ns", ns.into()));
        }
        cfg.empty_ns = ns;
    }
    if let Some(fd) = o.status_fd {
        tracing::warn!("status_fd is obsolete; use the status-ready notification instead");
        only.status_fd = Some(reopen_status_fd(&ctx.peer_pid.to_string(), fd)?);
    }
    only.orphan_pts_master = o.orphan_pts_master == Some(true);
    set(&mut cfg.display_stats, o.display_stats);
    only.pidfd_store_sk = o.pidfd_store_sk;
    only.parent_img = non_empty(&o.parent_img).map(str::to_owned);
    Ok(only)
}
