//! Serving CRIU-RPC requests: the one place where engine results become
//! `criu_resp` messages (CRIU's `criu/cr-service.c`).
//!
//! The transport's request loop has already rejected what is not a valid
//! request (garbage, EMPTY, NOTIFY, unknown types, forbidden `keep_open`) and
//! owns exit statuses; this handler serves the rest. Each request starts from
//! the connection defaults; nothing carries over between requests.

use std::path::PathBuf;

use criu_proto::rpc::{CriuDumpResp, CriuReq, CriuReqType, CriuResp, CriuRestoreResp};
use criu_transport::requests::{Handler, Mode, Reply, RequestCtx};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::config::Config;
use crate::error::Error;
use crate::kerndat::{KernelFeatures, Privileges};
use crate::opts::{self, OptsContext, RequestOpts};
use crate::{check, cpuinfo, features, log, version};

/// The engine's request handler, one per connection.
pub struct Engine {
    mode: Mode,
    defaults: Config,
    kerndat: Option<KernelFeatures>,
}

impl Engine {
    /// A handler whose requests start from `defaults` (swrk: the default
    /// configuration files; service: built-in defaults).
    pub fn new(mode: Mode, defaults: Config) -> Self {
        Engine {
            mode,
            defaults,
            kerndat: None,
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
        Ok(opts::from_rpc(
            ty,
            req.opts.as_ref(),
            &self.defaults,
            &octx,
        )?)
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

    /// DUMP, PRE_DUMP, SINGLE_PRE_DUMP, RESTORE, PAGE_SERVER(_CHLD): options
    /// are processed (bad ones get EBADRQC as from CRIU) and the first
    /// notification of the action is sent, then the action reports that the
    /// engine cannot perform it yet. Never a fake success.
    fn pending_action(
        &mut self,
        ty: CriuReqType,
        req: &CriuReq,
        ctx: &mut dyn RequestCtx,
    ) -> Result<(), Error> {
        let ro = self.request_opts(ty, req, ctx)?;
        let _log = log::start(&ro)?;
        let first_notification = match ty {
            CriuReqType::Dump => Some("pre-dump"),
            CriuReqType::Restore => Some("pre-restore"),
            _ => None,
        };
        if let (true, Some(script)) = (ro.notify_scripts, first_notification) {
            if !ctx.notify(script, None, None).success {
                return Err(Error::NotifyFailed { script });
            }
        }
        let err = Error::NotImplemented {
            action: action_name(ty),
        };
        tracing::error!("{err}");
        Err(err)
    }
}

impl Handler for Engine {
    fn handle(&mut self, req: &CriuReq, ctx: &mut dyn RequestCtx) -> Reply {
        let ty = req.r#type();
        tracing::debug!(request = ?ty, "serving request");
        let mut resp = base_response(ty);
        let result = match ty {
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
            CriuReqType::Dump
            | CriuReqType::PreDump
            | CriuReqType::SinglePreDump
            | CriuReqType::Restore
            | CriuReqType::PageServer
            | CriuReqType::PageServerChld => self.pending_action(ty, req, ctx),
            CriuReqType::Empty | CriuReqType::Notify => Err(Error::InvalidRequest),
        };
        if let Err(err) = result {
            resp.success = false;
            resp.cr_errmsg = Some(format!("Error: {err}"));
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

fn action_name(ty: CriuReqType) -> &'static str {
    match ty {
        CriuReqType::Dump => "dump",
        CriuReqType::PreDump => "pre-dump",
        CriuReqType::SinglePreDump => "single pre-dump",
        CriuReqType::Restore => "restore",
        CriuReqType::PageServer => "page server",
        CriuReqType::PageServerChld => "page server (child)",
        _ => "request",
    }
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
