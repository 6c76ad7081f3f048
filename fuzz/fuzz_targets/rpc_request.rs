//! Any bytes as a `criu_req`: decoding, then (when it decodes) the service's
//! authorization of a non-root caller and the whole options processing
//! (`opts::from_rpc`) as a service worker would run it. The peer pid names
//! no process, so descriptors named by number cannot be reopened.
#![no_main]

use criu_engine::authz::{self, Caller};
use criu_engine::config::Config;
use criu_engine::opts::{self, OptsContext};
use criu_proto::rpc::{CriuReq, CriuReqType};
use criu_proto::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CriuReq::decode(data) else {
        return;
    };
    let ty = CriuReqType::try_from(req.r#type).unwrap_or(CriuReqType::Empty);
    let caller = Caller {
        pid: i32::MAX,
        uid: 4242,
        gid: 4242,
        groups: vec![],
        caps: 0,
    };
    let _ = authz::check_request(&caller, ty, req.opts.as_ref());
    let ctx = OptsContext {
        service: true,
        peer_pid: i32::MAX,
    };
    let _ = opts::from_rpc(ty, req.opts.as_ref(), &Config::default(), &ctx);
});
