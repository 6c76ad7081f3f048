use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use criu_proto::rpc::{CriuDumpResp, CriuOpts, CriuReq, CriuReqType, CriuResp, CriuVersion};
use criu_proto::Message;
use nix::fcntl::OFlag;

use super::{
    keep_open_allowed, serve, Handler, Mode, NotifyAck, PeerCred, Reply, RequestCtx, EXIT_ABNORMAL,
    EXIT_FAILED, EXIT_OK,
};
use crate::client::Client;
use crate::response::MAX_RESPONSE;
use crate::seqpacket::SeqPacket;

/// What a [`TestHandler`] does for one request type besides replying.
#[derive(Debug, Clone)]
enum Action {
    /// Reply `{type, success}`.
    Reply { success: bool },
    /// Reply nothing.
    Silent { success: bool },
    /// Wait for a signal from the test, then reply success.
    Gate,
    /// Send one notification (with a pipe's write end when `with_fd`), then
    /// reply `{type, success: ack.success}`.
    Notify { script: &'static str, with_fd: bool },
    /// Reply failure with a very long error message.
    LongError,
}

#[derive(Debug, Default)]
struct Seen {
    types: Vec<i32>,
    acks: Vec<NotifyAck>,
    /// Bytes the client wrote through a passed descriptor.
    through_fd: Vec<String>,
    ctx: Option<(Mode, PeerCred, u64)>,
}

#[derive(Debug, Default)]
struct TestHandler {
    actions: HashMap<i32, Action>,
    gate: Option<mpsc::Receiver<()>>,
    seen: Seen,
}

impl TestHandler {
    fn with(actions: &[(CriuReqType, Action)]) -> TestHandler {
        TestHandler {
            actions: actions
                .iter()
                .map(|(t, a)| (*t as i32, a.clone()))
                .collect(),
            ..Default::default()
        }
    }
}

fn resp(ty: i32, success: bool) -> CriuResp {
    CriuResp {
        r#type: ty,
        success,
        ..Default::default()
    }
}

impl Handler for TestHandler {
    fn handle(&mut self, req: &CriuReq, ctx: &mut dyn RequestCtx) -> Reply {
        self.seen.types.push(req.r#type);
        self.seen.ctx = Some((ctx.mode(), ctx.peer(), ctx.socket_inode()));
        let ty = req.r#type;
        let action = self
            .actions
            .get(&ty)
            .cloned()
            .unwrap_or(Action::Reply { success: true });
        match action {
            Action::Reply { success } if ty == CriuReqType::Version as i32 => {
                Reply::Send(CriuResp {
                    version: Some(CriuVersion {
                        major_number: 4,
                        minor_number: 2,
                        ..Default::default()
                    }),
                    ..resp(ty, success)
                })
            }
            Action::Reply { success } if ty == CriuReqType::Dump as i32 => Reply::Send(CriuResp {
                dump: Some(CriuDumpResp {
                    restored: Some(false),
                }),
                ..resp(ty, success)
            }),
            Action::Reply { success } => Reply::Send(resp(ty, success)),
            Action::Silent { success } => Reply::Silent { success },
            Action::Gate => {
                self.gate
                    .as_ref()
                    .expect("gate set")
                    .recv()
                    .expect("gate opened");
                Reply::Send(resp(ty, true))
            }
            Action::Notify { script, with_fd } => {
                let ack = if with_fd {
                    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
                    let ack = ctx.notify(script, Some(42), Some(w.as_fd()));
                    drop(w);
                    let mut got = String::new();
                    File::from(r).read_to_string(&mut got).expect("read pipe");
                    self.seen.through_fd.push(got);
                    ack
                } else {
                    ctx.notify(script, None, None)
                };
                let success = ack.success;
                self.seen.acks.push(ack);
                Reply::Send(resp(ty, success))
            }
            Action::LongError => Reply::Send(CriuResp {
                cr_errmsg: Some("é".repeat(3000)),
                cr_errno: Some(56),
                ..resp(ty, false)
            }),
        }
    }
}

/// Serves `handler` on a thread; returns the client end and the join handle.
fn start(mode: Mode, handler: TestHandler) -> (Client, JoinHandle<(u8, TestHandler)>) {
    start_on(SeqPacket::pair().expect("pair"), mode, handler)
}

fn start_on(
    (client, server): (SeqPacket, SeqPacket),
    mode: Mode,
    mut handler: TestHandler,
) -> (Client, JoinHandle<(u8, TestHandler)>) {
    let join = thread::spawn(move || {
        let status = serve(&server, mode, &mut handler);
        (status, handler)
    });
    (Client::from_socket(client), join)
}

fn req(ty: CriuReqType) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        ..Default::default()
    }
}

fn keep_open(ty: CriuReqType) -> CriuReq {
    CriuReq {
        keep_open: Some(true),
        ..req(ty)
    }
}

/// Reads the next response; panics on EOF.
fn next(client: &Client) -> CriuResp {
    client.recv().expect("recv").expect("a response").0
}

fn assert_eof(client: &Client) {
    assert!(client.recv().expect("recv").is_none(), "expected EOF");
}

fn assert_protocol_error(r: &CriuResp) {
    assert_eq!(r.r#type, CriuReqType::Empty as i32);
    assert!(!r.success);
    assert!(r.cr_errmsg.as_ref().is_some_and(|m| !m.is_empty()));
}

#[test]
fn version_is_answered_and_ends_with_0() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    let r = client.call(&req(CriuReqType::Version)).expect("call");
    assert_eq!(r.r#type, CriuReqType::Version as i32);
    assert!(r.success);
    assert_eq!(
        r.version.map(|v| (v.major_number, v.minor_number)),
        Some((4, 2))
    );
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.types, vec![CriuReqType::Version as i32]);
    assert_eof(&client);
}

#[test]
fn context_reports_mode_peer_and_inode() {
    let (client_end, server_end) = SeqPacket::pair().expect("pair");
    let inode = server_end.inode().expect("inode");
    let (client, join) = start_on(
        (client_end, server_end),
        Mode::Service,
        TestHandler::default(),
    );
    client.call(&req(CriuReqType::Check)).expect("call");
    let (_, h) = join.join().expect("server thread");
    let (mode, peer, ino) = h.seen.ctx.expect("handler ran");
    assert_eq!(mode, Mode::Service);
    assert_eq!(
        peer.pid,
        i32::try_from(std::process::id()).expect("pid fits")
    );
    assert_eq!(ino, inode);
}

#[test]
fn keep_open_serves_a_second_request() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    let first = client
        .call(&keep_open(CriuReqType::Version))
        .expect("first");
    assert_eq!(first.r#type, CriuReqType::Version as i32);
    let second = client
        .call(&req(CriuReqType::FeatureCheck))
        .expect("second");
    assert_eq!(second.r#type, CriuReqType::FeatureCheck as i32);
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.types.len(), 2);
    assert_eof(&client);
}

#[test]
fn keep_open_then_dump_ends_with_the_dump_status() {
    let handler = TestHandler::with(&[(CriuReqType::Dump, Action::Reply { success: false })]);
    let (client, join) = start(Mode::Swrk, handler);
    client
        .call(&keep_open(CriuReqType::Version))
        .expect("version");
    let r = client.call(&req(CriuReqType::Dump)).expect("dump");
    assert!(!r.success);
    assert_eq!(join.join().expect("server thread").0, EXIT_FAILED);
}

#[test]
fn keep_open_chain_ended_by_eof_is_255() {
    let (mut client, join) = start(Mode::Swrk, TestHandler::default());
    client
        .call(&keep_open(CriuReqType::Version))
        .expect("version");
    client.close();
    assert_eq!(join.join().expect("server thread").0, EXIT_ABNORMAL);
}

#[test]
fn keep_open_on_a_failed_keep_open_type_still_continues() {
    // "Succeeded" for VERSION-like types means "response delivered".
    let handler =
        TestHandler::with(&[(CriuReqType::CpuinfoCheck, Action::Reply { success: false })]);
    let (client, join) = start(Mode::Swrk, handler);
    let r = client
        .call(&keep_open(CriuReqType::CpuinfoCheck))
        .expect("cpuinfo");
    assert!(!r.success);
    client.call(&req(CriuReqType::Version)).expect("version");
    assert_eq!(join.join().expect("server thread").0, EXIT_OK);
}

#[test]
fn forbidden_keep_open_drops_silently() {
    for ty in [
        CriuReqType::Dump,
        CriuReqType::Restore,
        CriuReqType::Check,
        CriuReqType::WaitPid,
        CriuReqType::PreDump,
        CriuReqType::SinglePreDump,
        CriuReqType::Empty,
        CriuReqType::Notify,
    ] {
        let (client, join) = start(Mode::Swrk, TestHandler::default());
        client.send(&keep_open(ty)).expect("send");
        let (status, h) = join.join().expect("server thread");
        assert_eq!(status, EXIT_ABNORMAL, "{ty:?}");
        assert!(h.seen.types.is_empty(), "{ty:?} reached the handler");
        assert_eof(&client);
    }
}

#[test]
fn keep_open_list_matches_the_protocol() {
    let allowed: Vec<i32> = (0..=14).filter(|t| keep_open_allowed(*t)).collect();
    let expected = [
        CriuReqType::PageServer,
        CriuReqType::CpuinfoDump,
        CriuReqType::CpuinfoCheck,
        CriuReqType::FeatureCheck,
        CriuReqType::Version,
        CriuReqType::PageServerChld,
    ]
    .map(|t| t as i32);
    assert_eq!(allowed, expected);
    assert!(!keep_open_allowed(99));
}

#[test]
fn invalid_types_get_an_empty_failure() {
    for raw in [CriuReqType::Empty as i32, CriuReqType::Notify as i32, 99] {
        let (client, join) = start(Mode::Swrk, TestHandler::default());
        let r = client
            .call(&CriuReq {
                r#type: raw,
                ..Default::default()
            })
            .expect("call");
        assert_protocol_error(&r);
        let (status, h) = join.join().expect("server thread");
        assert_eq!(status, EXIT_ABNORMAL, "type {raw}");
        assert!(h.seen.types.is_empty());
        assert_eof(&client);
    }
}

#[test]
fn garbage_gets_an_empty_failure() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    client.send_raw(&[0xff, 0xff, 0xff, 0xff]).expect("send");
    assert_protocol_error(&next(&client));
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_ABNORMAL);
    assert!(h.seen.types.is_empty());
    assert_eof(&client);
}

#[test]
fn invalid_utf8_is_named_in_the_reply() {
    // type = VERSION; opts { images_dir (field 68) = "\xff" }
    let bytes = [0x08, 0x0a, 0x12, 0x04, 0xa2, 0x04, 0x01, 0xff];
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    client.send_raw(&bytes).expect("send");
    let r = next(&client);
    assert_protocol_error(&r);
    assert!(r.cr_errmsg.expect("message").contains("not valid UTF-8"));
    assert_eq!(join.join().expect("server thread").0, EXIT_ABNORMAL);
}

#[test]
fn eof_before_any_request_is_255() {
    let (mut client, join) = start(Mode::Swrk, TestHandler::default());
    client.close();
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_ABNORMAL);
    assert!(h.seen.types.is_empty());
}

#[test]
fn oversized_request_is_refused_without_panic() {
    let (client_end, server_end) = SeqPacket::pair().expect("pair");
    let server_end = server_end.with_max_packet(4096);
    let (client, join) = start_on((client_end, server_end), Mode::Swrk, TestHandler::default());
    let mut big = keep_open(CriuReqType::Version);
    big.opts = Some(CriuOpts {
        root: Some("r".repeat(10_000)),
        ..Default::default()
    });
    client.send(&big).expect("send");
    let r = next(&client);
    assert_protocol_error(&r);
    assert!(r.cr_errmsg.expect("message").contains("exceeds"));
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_ABNORMAL);
    assert!(h.seen.types.is_empty());
}

#[test]
fn large_request_below_the_cap_is_served() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    let mut big = req(CriuReqType::Check);
    big.opts = Some(CriuOpts {
        external: (0..2000).map(|i| format!("mnt[/m{i}]:key{i}")).collect(),
        ..Default::default()
    });
    assert!(big.encoded_len() > 20_000);
    assert!(client.call(&big).expect("call").success);
    assert_eq!(join.join().expect("server thread").0, EXIT_OK);
}

fn disconnect_mid_request(ty: CriuReqType) -> u8 {
    let (gate_tx, gate_rx) = mpsc::channel();
    let mut handler = TestHandler::with(&[(ty, Action::Gate)]);
    handler.gate = Some(gate_rx);
    let (mut client, join) = start(Mode::Swrk, handler);
    client.send(&req(ty)).expect("send");
    client.close();
    gate_tx.send(()).expect("open gate");
    join.join().expect("server thread").0
}

#[test]
fn peer_gone_before_the_response() {
    assert_eq!(disconnect_mid_request(CriuReqType::Dump), EXIT_FAILED);
    assert_eq!(disconnect_mid_request(CriuReqType::Restore), EXIT_FAILED);
    assert_eq!(disconnect_mid_request(CriuReqType::Version), EXIT_ABNORMAL);
    assert_eq!(
        disconnect_mid_request(CriuReqType::SinglePreDump),
        EXIT_ABNORMAL
    );
}

#[test]
fn dump_and_restore_status_follow_success() {
    for (ty, success, expected) in [
        (CriuReqType::Dump, true, EXIT_OK),
        (CriuReqType::Dump, false, EXIT_FAILED),
        (CriuReqType::Restore, true, EXIT_OK),
        (CriuReqType::Restore, false, EXIT_FAILED),
        (CriuReqType::SinglePreDump, true, EXIT_OK),
        (CriuReqType::SinglePreDump, false, EXIT_ABNORMAL),
        (CriuReqType::Check, false, EXIT_OK),
        (CriuReqType::WaitPid, false, EXIT_OK),
    ] {
        let (client, join) = start(
            Mode::Swrk,
            TestHandler::with(&[(ty, Action::Reply { success })]),
        );
        let r = client.call(&req(ty)).expect("call");
        assert_eq!((r.r#type, r.success), (ty as i32, success));
        assert_eq!(
            join.join().expect("server thread").0,
            expected,
            "{ty:?} {success}"
        );
        assert_eof(&client);
    }
}

#[test]
fn silent_self_dump_counts_as_success() {
    let handler = TestHandler::with(&[(CriuReqType::Dump, Action::Silent { success: true })]);
    let (client, join) = start(Mode::Swrk, handler);
    client.send(&req(CriuReqType::Dump)).expect("send");
    assert_eq!(join.join().expect("server thread").0, EXIT_OK);
    assert_eof(&client);
}

#[test]
fn pre_dump_loop_ends_with_dump() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    for _ in 0..2 {
        let r = client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
        assert_eq!((r.r#type, r.success), (CriuReqType::PreDump as i32, true));
    }
    let r = client.call(&req(CriuReqType::Dump)).expect("dump");
    assert_eq!(r.r#type, CriuReqType::Dump as i32);
    assert!(r.dump.is_some());
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.types, vec![4, 4, 1]);
    assert_eof(&client);
}

#[test]
fn pre_dump_loop_with_failed_dump_is_1() {
    let handler = TestHandler::with(&[(CriuReqType::Dump, Action::Reply { success: false })]);
    let (client, join) = start(Mode::Swrk, handler);
    client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    assert!(!client.call(&req(CriuReqType::Dump)).expect("dump").success);
    assert_eq!(join.join().expect("server thread").0, EXIT_FAILED);
}

#[test]
fn pre_dump_then_other_type_is_a_bad_sequence() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    let r = client.call(&req(CriuReqType::Version)).expect("version");
    assert_protocol_error(&r);
    assert!(r
        .cr_errmsg
        .expect("message")
        .contains("bad request sequence"));
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_ABNORMAL);
    assert_eq!(h.seen.types, vec![CriuReqType::PreDump as i32]);
    assert_eof(&client);
}

#[test]
fn pre_dump_then_eof_is_255() {
    let (mut client, join) = start(Mode::Swrk, TestHandler::default());
    client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    client.close();
    assert_eq!(join.join().expect("server thread").0, EXIT_ABNORMAL);
}

#[test]
fn pre_dump_then_garbage_is_255() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    client.send_raw(&[0xff; 3]).expect("send");
    assert_protocol_error(&next(&client));
    assert_eq!(join.join().expect("server thread").0, EXIT_ABNORMAL);
}

#[test]
fn failed_pre_dump_ends_the_connection() {
    let handler = TestHandler::with(&[(CriuReqType::PreDump, Action::Reply { success: false })]);
    let (client, join) = start(Mode::Swrk, handler);
    let r = client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    assert!(!r.success);
    // A DUMP sent anyway is never read.
    client.send(&req(CriuReqType::Dump)).ok();
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_ABNORMAL);
    assert_eq!(h.seen.types, vec![CriuReqType::PreDump as i32]);
}

#[test]
fn keep_open_inside_the_pre_dump_loop_is_not_examined() {
    let (client, join) = start(Mode::Swrk, TestHandler::default());
    client.call(&req(CriuReqType::PreDump)).expect("pre-dump");
    client
        .call(&keep_open(CriuReqType::PreDump))
        .expect("second pre-dump");
    client.call(&keep_open(CriuReqType::Dump)).expect("dump");
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.types, vec![4, 4, 1]);
}

fn notify_handler(with_fd: bool) -> TestHandler {
    TestHandler::with(&[(
        CriuReqType::Dump,
        Action::Notify {
            script: "post-dump",
            with_fd,
        },
    )])
}

#[test]
fn notify_round_trip_success() {
    let (client, join) = start(Mode::Swrk, notify_handler(false));
    let mut names = Vec::new();
    let r = client
        .call_with_notify(&req(CriuReqType::Dump), |n, fd| {
            names.push((n.script.clone(), n.pid, fd.is_some()));
            true
        })
        .expect("call");
    assert!(r.success);
    assert_eq!(names, vec![(Some("post-dump".to_owned()), None, false)]);
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.acks.len(), 1);
    assert!(h.seen.acks[0].success);
}

#[test]
fn notify_message_is_well_formed() {
    let (client, join) = start(Mode::Swrk, notify_handler(false));
    client.send(&req(CriuReqType::Dump)).expect("send");
    let (n, fd) = client.recv().expect("recv").expect("notify");
    assert_eq!((n.r#type, n.success), (CriuReqType::Notify as i32, true));
    assert!(fd.is_none());
    assert_eq!(
        n.notify.and_then(|n| n.script).as_deref(),
        Some("post-dump")
    );
    assert!(n.dump.is_none() && n.cr_errmsg.is_none());
    client
        .send(&CriuReq {
            r#type: CriuReqType::Notify as i32,
            notify_success: Some(true),
            opts: Some(CriuOpts {
                external: vec!["file[1:2]".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("ack");
    assert!(next(&client).success);
    let (_, h) = join.join().expect("server thread");
    let opts = h.seen.acks[0].opts.clone().expect("opts of the ack");
    assert_eq!(opts.external, vec!["file[1:2]".to_owned()]);
}

#[test]
fn notify_refused_by_the_client() {
    let (client, join) = start(Mode::Swrk, notify_handler(false));
    let r = client
        .call_with_notify(&req(CriuReqType::Dump), |_, _| false)
        .expect("call");
    assert!(!r.success);
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_FAILED);
    assert!(!h.seen.acks[0].success);
}

fn notify_answered_with(ack: Option<&[u8]>) -> (u8, TestHandler) {
    let (mut client, join) = start(Mode::Swrk, notify_handler(false));
    client.send(&req(CriuReqType::Dump)).expect("send");
    let (n, _) = client.recv().expect("recv").expect("notify");
    assert_eq!(n.r#type, CriuReqType::Notify as i32);
    match ack {
        Some(bytes) => {
            client.send_raw(bytes).expect("ack");
            assert!(!next(&client).success);
        }
        None => client.close(),
    }
    join.join().expect("server thread")
}

#[test]
fn notify_eof_counts_as_failure() {
    let (status, h) = notify_answered_with(None);
    assert!(!h.seen.acks[0].success);
    // The final response could not be delivered either.
    assert_eq!(status, EXIT_FAILED);
}

#[test]
fn notify_garbage_ack_counts_as_failure() {
    let (_, h) = notify_answered_with(Some(&[0xff, 0xff, 0xff]));
    assert!(!h.seen.acks[0].success);
}

#[test]
fn notify_ack_of_wrong_type_or_without_flag_fails() {
    let wrong_type = CriuReq {
        r#type: CriuReqType::Version as i32,
        notify_success: Some(true),
        ..Default::default()
    };
    let (_, h) = notify_answered_with(Some(&wrong_type.encode_to_vec()));
    assert!(!h.seen.acks[0].success);
    let no_flag = req(CriuReqType::Notify);
    let (_, h) = notify_answered_with(Some(&no_flag.encode_to_vec()));
    assert!(!h.seen.acks[0].success);
}

#[test]
fn notify_passes_a_real_descriptor() {
    let (client, join) = start(Mode::Swrk, notify_handler(true));
    let r = client
        .call_with_notify(&req(CriuReqType::Dump), |n, fd| {
            assert_eq!(n.pid, Some(42));
            let mut pipe = File::from(fd.expect("descriptor attached"));
            pipe.write_all(b"hello master").is_ok()
        })
        .expect("call");
    assert!(r.success);
    let (status, h) = join.join().expect("server thread");
    assert_eq!(status, EXIT_OK);
    assert_eq!(h.seen.through_fd, vec!["hello master".to_owned()]);
}

#[test]
fn long_error_message_is_truncated_to_fit() {
    let handler = TestHandler::with(&[(CriuReqType::Restore, Action::LongError)]);
    let (client_end, server_end) = SeqPacket::pair().expect("pair");
    let (client, join) = start_on((client_end, server_end), Mode::Swrk, handler);
    client.send(&req(CriuReqType::Restore)).expect("send");
    let (resp, _) = client.recv().expect("recv").expect("response");
    assert!(
        resp.encoded_len() <= MAX_RESPONSE,
        "{} bytes",
        resp.encoded_len()
    );
    assert_eq!(resp.cr_errno, Some(56));
    let msg = resp.cr_errmsg.expect("message kept");
    assert!(msg.len() > 800 && msg.chars().all(|c| c == 'é'));
    assert_eq!(join.join().expect("server thread").0, EXIT_FAILED);
}
