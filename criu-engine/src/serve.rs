//! Serving CRIU-RPC requests: the one place where engine results become
//! `criu_resp` messages (CRIU's `criu/cr-service.c`).
//!
//! The transport's request loop has already rejected what is not a valid
//! request (garbage, EMPTY, NOTIFY, unknown types, forbidden `keep_open`) and
//! owns exit statuses; this handler serves the rest. Each request starts from
//! the connection defaults; nothing carries over between requests.

use std::path::PathBuf;

use criu_proto::rpc::{
    CriuDumpResp, CriuPageServerInfo, CriuReq, CriuReqType, CriuResp, CriuRestoreResp,
};
use criu_transport::requests::{Handler, Mode, Reply, RequestCtx};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::authz::{self, Caller};
use crate::config::Config;
use crate::config::FinalState;
use crate::error::Error;
use crate::kerndat::{KernelFeatures, Privileges};
use crate::notify::Notify;
use crate::opts::{self, OptsContext, RequestOpts, Target};
use crate::{check, cpuinfo, features, log, version};

/// The engine's request handler, one per connection.
pub struct Engine {
    mode: Mode,
    defaults: Config,
    kerndat: Option<KernelFeatures>,
    /// The non-root service client of the current request, if any.
    caller: Option<Caller>,
}

impl Engine {
    /// A handler whose requests start from `defaults` (swrk: the default
    /// configuration files; service: built-in defaults).
    pub fn new(mode: Mode, defaults: Config) -> Self {
        Engine {
            mode,
            defaults,
            kerndat: None,
            caller: None,
        }
    }

    /// Kernel features, probed once per connection on first use.
    fn kerndat(&mut self) -> &KernelFeatures {
        self.kerndat.get_or_insert_with(KernelFeatures::probe)
    }

    fn request_opts(
        &self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &dyn RequestCtx,
    ) -> Result<RequestOpts, Error> {
        let octx = OptsContext {
            service: self.mode == Mode::Service,
            peer_pid: ctx.peer().pid,
        };
        let mut ro = opts::from_rpc(ty, req.opts.as_ref(), &self.defaults, &octx)?;
        ro.caller.clone_from(&self.caller);
        Ok(ro)
    }

    /// Holds a non-root service client to its lane (see [`crate::authz`]):
    /// refuses what it may not ask for, then serves the request with its
    /// file-system identity. Requests that touch no file need neither.
    fn authorize(
        &mut self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &dyn RequestCtx,
    ) -> Result<(), Error> {
        let peer = ctx.peer();
        self.caller = Caller::restricted(self.mode == Mode::Service, peer.pid, peer.uid, peer.gid);
        let Some(caller) = &self.caller else {
            return Ok(());
        };
        if matches!(
            ty,
            CriuReqType::Version | CriuReqType::FeatureCheck | CriuReqType::WaitPid
        ) {
            return Ok(());
        }
        authz::check_request(caller, ty, req.opts.as_ref())
            .and_then(|()| authz::assume_identity(caller))
            .inspect_err(|e| tracing::error!("{e}"))?;
        Ok(())
    }

    fn check(&mut self, req: &CriuReq, ctx: &mut dyn RequestCtx) -> Result<(), Error> {
        // CHECK needs no images directory; options matter only for logging,
        // and only when a log file is asked for (rpc-protocol.md 9.2).
        let wants_log = req
            .opts
            .as_ref()
            .is_some_and(|o| o.log_file.as_deref().is_some_and(|f| !f.is_empty()));
        let _log = if wants_log {
            let ro = self.request_opts(CriuReqType::Check, req, ctx)?;
            Some(log::start(&ro)?)
        } else {
            None
        };
        let privileges = Privileges::probe();
        tracing::debug!(?privileges, "privileges");
        tracing::debug!(kerndat = ?self.kerndat(), "kernel features");
        check::check_required(self.kerndat(), &privileges)?;
        tracing::info!("Looks good.");
        Ok(())
    }

    fn cpuinfo(
        &mut self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
    ) -> Result<(), Error> {
        let ro = self.request_opts(ty, req, ctx)?;
        let _log = log::start(&ro)?;
        let dir = images_dir_path(&ro)?;
        if ty == CriuReqType::CpuinfoDump {
            cpuinfo::dump(&dir)?;
        } else {
            cpuinfo::check(&dir, ro.cpu_cap.unwrap_or(cpuinfo::CPU_CAP_DEFAULT))?;
        }
        Ok(())
    }

    /// DUMP: options, then the engine's dump with notifications relayed to
    /// the client. A successful self-dump that killed the requester has no
    /// one to answer.
    fn dump(
        &mut self,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
        resp: &mut CriuResp,
    ) -> Result<Option<Reply>, Error> {
        let mut ro = self.request_opts(CriuReqType::Dump, req, ctx)?;
        ro.rpc_socket_ino = Some(ctx.socket_inode());
        let _log = log::start(&ro)?;
        let self_dump = matches!(ro.target, Some(Target::Peer(_)));
        if let Some(target) = ro.target {
            // Dumping an ancestor of this worker would dump the worker too
            // (a self-dump from a swrk worker the client did not detach).
            if is_own_ancestor(target.pid()) {
                let err = Error::SelfDumpInTree;
                tracing::error!("{err}");
                return Err(err);
            }
        }
        // The tree is traced by an agent process, which unwinds the dump
        // cleanly if this worker is killed (see [`crate::agent`]).
        let relay = ro.notify_scripts;
        crate::agent::run(ctx, relay, |notify| {
            // The reply carries the error; the log keeps it too, since runc
            // and people read the "Error" lines of the log file.
            let outcome = crate::dump::run(&ro, notify)
                .inspect_err(|e| tracing::error!("{}", crate::worker::error_chain(e)))?;
            if ro.display_stats {
                println!("{outcome:?}");
            }
            Ok(())
        })?;
        resp.dump = Some(CriuDumpResp {
            restored: Some(false),
        });
        if self_dump && ro.final_state != FinalState::Alive {
            return Ok(Some(Reply::Silent { success: true }));
        }
        Ok(None)
    }

    /// RESTORE: options, then the engine's restore; the reply carries the
    /// real pid of the restored root.
    fn restore(
        &mut self,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
        resp: &mut CriuResp,
    ) -> Result<(), Error> {
        let ro = self.request_opts(CriuReqType::Restore, req, ctx)?;
        let _log = log::start(&ro)?;
        let mut notify = RpcNotify::new(ctx, ro.notify_scripts);
        let outcome = crate::restore::run(&ro, &mut notify)
            .inspect_err(|e| tracing::error!("{}", crate::worker::error_chain(e)))?;
        resp.restore = Some(CriuRestoreResp {
            pid: outcome.root_pid,
        });
        Ok(())
    }

    /// PRE_DUMP and SINGLE_PRE_DUMP: one pre-dump; the task resumes
    /// whatever the final-state options say. The transport keeps a PRE_DUMP
    /// connection open for the next iteration.
    fn pre_dump(
        &mut self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
    ) -> Result<(), Error> {
        let ro = self.request_opts(ty, req, ctx)?;
        let _log = log::start(&ro)?;
        if let Some(target) = ro.target {
            if is_own_ancestor(target.pid()) {
                let err = Error::SelfDumpInTree;
                tracing::error!("{err}");
                return Err(err);
            }
        }
        crate::agent::run(ctx, false, |_| {
            let outcome = crate::dump::pre_dump::run(&ro)
                .inspect_err(|e| tracing::error!("{}", crate::worker::error_chain(e)))?;
            if ro.display_stats {
                println!("{outcome:?}");
            }
            Ok(())
        })?;
        Ok(())
    }

    /// PAGE_SERVER and PAGE_SERVER_CHLD: the listener is bound before the
    /// answer, which carries the server's pid and port (rpc-protocol.md
    /// 5.3); PAGE_SERVER runs it as a daemon, PAGE_SERVER_CHLD as a child
    /// of this worker.
    fn page_server(
        &mut self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
        resp: &mut CriuResp,
    ) -> Result<(), Error> {
        let ro = self.request_opts(ty, req, ctx)?;
        let _log = log::start(&ro)?;
        let ready = crate::page_server::prepare(&ro)
            .inspect_err(|e| tracing::error!("{}", crate::worker::error_chain(e)))?;
        let port = ready.port();
        let pid = ready
            .spawn(ty == CriuReqType::PageServer)
            .inspect_err(|e| tracing::error!("{}", crate::worker::error_chain(e)))?;
        resp.ps = Some(CriuPageServerInfo {
            address: None,
            port: Some(port.into()),
            pid: Some(pid.as_raw()),
            fd: None,
        });
        Ok(())
    }
}

/// Relays the engine's notifications to the client as RPC NOTIFY round trips
/// when the request enabled them (`notify_scripts`); otherwise every
/// notification succeeds silently.
struct RpcNotify<'a> {
    ctx: &'a mut dyn RequestCtx,
    enabled: bool,
}

impl<'a> RpcNotify<'a> {
    fn new(ctx: &'a mut dyn RequestCtx, enabled: bool) -> Self {
        RpcNotify { ctx, enabled }
    }
}

impl Notify for RpcNotify<'_> {
    fn notify(&mut self, script: &'static str, pid: Option<i32>) -> bool {
        if !self.enabled {
            return true;
        }
        let ok = self.ctx.notify(script, pid, None).success;
        if !ok {
            tracing::error!("notification {script} failed on the client side");
        }
        ok
    }

    fn notify_fd(&mut self, script: &'static str, fd: std::os::fd::BorrowedFd<'_>) -> bool {
        self.enabled && self.ctx.notify(script, None, Some(fd)).success
    }
}

impl Handler for Engine {
    fn handle(&mut self, req: &CriuReq, ctx: &mut dyn RequestCtx) -> Reply {
        let ty = req.r#type();
        tracing::debug!(request = ?ty, "serving request");
        let mut resp = base_response(ty);
        let authorized = self.authorize(ty, req, ctx);
        let result = match ty {
            _ if authorized.is_err() => authorized,
            CriuReqType::Version => {
                resp.version = Some(version::version());
                Ok(())
            }
            CriuReqType::FeatureCheck => match &req.features {
                Some(requested) => {
                    resp.features = Some(features::answer(requested, self.kerndat()));
                    Ok(())
                }
                None => Err(Error::NoFeatures),
            },
            CriuReqType::WaitPid => {
                let pid = req.pid.unwrap_or(0);
                match wait_raw(pid) {
                    Ok(status) => {
                        resp.status = Some(status);
                        Ok(())
                    }
                    Err(e) => {
                        // CRIU forgets cr_errno on WAIT_PID failures; so do we.
                        resp.success = false;
                        resp.cr_errmsg = Some(e.to_string());
                        return Reply::Send(resp);
                    }
                }
            }
            CriuReqType::Check => self.check(req, ctx),
            CriuReqType::CpuinfoDump | CriuReqType::CpuinfoCheck => self.cpuinfo(ty, req, ctx),
            CriuReqType::Dump => match self.dump(req, ctx, &mut resp) {
                Ok(Some(reply)) => return reply,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            CriuReqType::Restore => self.restore(req, ctx, &mut resp),
            CriuReqType::PreDump | CriuReqType::SinglePreDump => self.pre_dump(ty, req, ctx),
            CriuReqType::PageServer | CriuReqType::PageServerChld => {
                self.page_server(ty, req, ctx, &mut resp)
            }
            CriuReqType::Empty | CriuReqType::Notify => Err(Error::InvalidRequest),
        };
        if let Err(err) = result {
            resp.success = false;
            // The whole chain: the kernel's reason (ENOSPC, EACCES...) is
            // what tells the client what to fix.
            resp.cr_errmsg = Some(format!("Error: {}", crate::worker::error_chain(&err)));
            // Only the types whose errors CRIU reports carry cr_errno.
            if ty != CriuReqType::FeatureCheck {
                resp.cr_errno = err.cr_errno();
            }
            if ty == CriuReqType::FeatureCheck {
                resp.features = None;
            }
        }
        Reply::Send(resp)
    }
}

/// Whether `pid` is this process or one of its ancestors.
fn is_own_ancestor(pid: i32) -> bool {
    let Ok(mut current) = i32::try_from(std::process::id()) else {
        return false;
    };
    // A chain longer than this would be a loop in a corrupt /proc.
    for _ in 0..4096 {
        if current == pid {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 0 => current = parent,
            _ => return false,
        }
    }
    false
}

/// `PPid` of a task from `/proc/<pid>/status`.
fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The response skeleton of a request type: `type`, `success = true` and the
/// sub-messages strict clients dereference (`dump` on every DUMP response,
/// `restore` on every RESTORE response).
fn base_response(ty: CriuReqType) -> CriuResp {
    let mut resp = CriuResp {
        r#type: ty as i32,
        success: true,
        ..Default::default()
    };
    match ty {
        CriuReqType::Dump => {
            resp.dump = Some(CriuDumpResp {
                restored: Some(false),
            })
        }
        CriuReqType::Restore => resp.restore = Some(CriuRestoreResp { pid: -1 }),
        _ => {}
    }
    resp
}

/// `waitpid(pid, &status, 0)` returning the raw wait status as CRIU does.
fn wait_raw(pid: u32) -> Result<i32, Error> {
    let pid = i32::try_from(pid).map_err(|_| Error::WaitPid {
        pid,
        source: nix::Error::ESRCH,
    })?;
    let status = waitpid(Pid::from_raw(pid), None).map_err(|source| Error::WaitPid {
        pid: pid.unsigned_abs(),
        source,
    })?;
    Ok(raw_wait_status(status))
}

/// Re-encodes a decoded wait status as the raw `int` of `waitpid(2)`, which
/// is what `criu_resp.status` carries (clients apply `WIFEXITED` to it).
fn raw_wait_status(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        WaitStatus::Stopped(_, sig) => ((sig as i32) << 8) | 0x7f,
        WaitStatus::Continued(_) => 0xffff,
        _ => 0,
    }
}

fn images_dir_path(ro: &RequestOpts) -> Result<PathBuf, Error> {
    ro.images_dir
        .as_ref()
        .map(|d| d.path.clone())
        .ok_or(Error::NoImagesDir)
}
