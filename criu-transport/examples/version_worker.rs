//! A minimal CRIU-RPC worker: `version_worker swrk <fd>` answers VERSION and
//! refuses every other request. It shows the start-up sequence a real worker
//! binary follows, and the crate's tests run it as a real child process.
//!
//! The VERSION reply reports in `name` the mode the worker chose ("swrk" or
//! "service") and in `gitid` where its descriptors 0-2 point, so tests can
//! check the start-up helpers.

use std::process::ExitCode;

use criu_proto::rpc::{CriuReq, CriuReqType, CriuResp, CriuVersion};
use criu_transport::requests::{Handler, Mode, Reply, RequestCtx};
use criu_transport::service::{take_service_worker_flag, SERVICE_WORKER_ENV};

struct VersionOnly {
    mode: Mode,
}

impl Handler for VersionOnly {
    fn handle(&mut self, req: &CriuReq, _ctx: &mut dyn RequestCtx) -> Reply {
        if req.r#type != CriuReqType::Version as i32 {
            return Reply::Send(CriuResp {
                r#type: req.r#type,
                success: false,
                cr_errmsg: Some("not supported by this worker".to_owned()),
                ..Default::default()
            });
        }
        let std_fds: Vec<String> = (0..3)
            .map(
                |fd| match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                    Ok(target) => target.display().to_string(),
                    Err(_) => "closed".to_owned(),
                },
            )
            .collect();
        let leaked_env = std::env::var_os(SERVICE_WORKER_ENV).is_some();
        Reply::Send(CriuResp {
            r#type: req.r#type,
            success: true,
            version: Some(CriuVersion {
                major_number: 4,
                minor_number: 2,
                name: Some(match self.mode {
                    Mode::Swrk => "swrk".to_owned(),
                    Mode::Service => "service".to_owned(),
                }),
                gitid: Some(format!("{} env={leaked_env}", std_fds.join(","))),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

fn main() -> ExitCode {
    if let Err(err) = criu_transport::ignore_sigpipe() {
        eprintln!("version_worker: cannot ignore SIGPIPE: {err}");
        return ExitCode::from(1);
    }
    if let Err(err) = criu_transport::ensure_std_fds() {
        eprintln!("version_worker: {err}");
        return ExitCode::from(1);
    }
    let mode = if take_service_worker_flag() {
        Mode::Service
    } else {
        Mode::Swrk
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, fd] = args.as_slice() else {
        eprintln!("usage: version_worker swrk <fd>");
        return ExitCode::from(1);
    };
    if cmd != "swrk" {
        eprintln!("usage: version_worker swrk <fd>");
        return ExitCode::from(1);
    }
    let conn = match criu_transport::connection_from_arg(fd) {
        Ok(conn) => conn,
        Err(err) => {
            eprintln!("version_worker: {err}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(criu_transport::serve(
        &conn,
        mode,
        &mut VersionOnly { mode },
    ))
}
