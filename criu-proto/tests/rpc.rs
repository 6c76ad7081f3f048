//! CRIU-RPC messages interoperate byte for byte with other implementations:
//! hand-built wire bytes, and Python protobuf through pycriu's own `rpc_pb2`
//! (Debian's `criu` package), in both directions.

use std::process::Command;

use criu_proto::rpc::{
    CriuDumpResp, CriuFeatures, CriuNotify, CriuReq, CriuReqType, CriuResp, CriuRestoreResp,
    CriuVersion, InheritFd,
};
use criu_proto::Message;

#[test]
fn hand_built_requests_decode() {
    // {type: VERSION}: what go-criu and rust-criu send.
    let req = CriuReq::decode(&[0x08, 0x0a][..]).unwrap();
    assert_eq!(req.r#type(), CriuReqType::Version);
    assert_eq!(req.opts, None);
    // {type: DUMP, opts: {images_dir_fd: 5, pid: 42, leave_running: true}, keep_open: false}
    let bytes = [
        0x08, 0x01, 0x12, 0x06, 0x08, 0x05, 0x10, 0x2a, 0x18, 0x01, 0x20, 0x00,
    ];
    let req = CriuReq::decode(&bytes[..]).unwrap();
    let opts = req.opts.unwrap();
    assert_eq!(
        (opts.images_dir_fd, opts.pid, opts.leave_running),
        (5, Some(42), Some(true))
    );
    assert_eq!(
        req.keep_open,
        Some(false),
        "presence is kept, not just the value"
    );
    // A request without images_dir_fd decodes with the declared default -1.
    let req = CriuReq::decode(&[0x08, 0x01, 0x12, 0x02, 0x10, 0x01][..]).unwrap();
    assert_eq!(req.opts.unwrap().images_dir_fd, -1);
    // Field 72 (image_io_mode of newer go-criu) is ignored.
    let req = CriuReq::decode(&[0x08, 0x01, 0x12, 0x03, 0xc0, 0x04, 0x01][..]).unwrap();
    assert_eq!(req.opts.unwrap().images_dir_fd, -1);
}

#[test]
fn responses_always_carry_required_fields() {
    let resp = CriuResp {
        r#type: CriuReqType::Restore as i32,
        success: false,
        restore: Some(CriuRestoreResp { pid: -1 }),
        ..Default::default()
    };
    // type=RESTORE, success=false, restore{pid=-1}: every required field is on the wire.
    let bytes = resp.encode_to_vec();
    assert_eq!(&bytes[..4], &[0x08, 0x02, 0x10, 0x00]);
    assert_eq!(CriuResp::decode(&bytes[..]).unwrap(), resp);
    let version = CriuVersion {
        major_number: 4,
        minor_number: 2,
        ..Default::default()
    };
    assert_eq!(version.encode_to_vec(), [0x08, 0x04, 0x10, 0x02]);
}

fn python(script: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    assert!(
        std::path::Path::new("/usr/lib/python3/dist-packages/pycriu/rpc_pb2.py").exists(),
        "pycriu's rpc_pb2 is missing: install Debian's criu package"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed");
    out.stdout
}

#[test]
fn requests_built_by_pycriu_decode_with_prost() {
    let bytes = python(
        r#"
import sys
from pycriu import rpc_pb2 as rpc
r = rpc.criu_req()
r.type = rpc.DUMP
r.keep_open = False
r.opts.images_dir_fd = 7
r.opts.pid = 1234
r.opts.log_level = 4
r.opts.log_file = "dump.log"
r.opts.leave_running = True
r.opts.external.append("mnt[/a]:b")
fd = r.opts.inherit_fd.add(); fd.key = "pipe:[1]"; fd.fd = 3
r.opts.manage_cgroups_mode = rpc.SOFT
r.opts.cpu_cap = 0
r.opts.notify_scripts = True
sys.stdout.buffer.write(r.SerializeToString())
"#,
        b"",
    );
    let req = CriuReq::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.r#type(), CriuReqType::Dump);
    assert_eq!(req.keep_open, Some(false));
    let o = req.opts.unwrap();
    assert_eq!(o.images_dir_fd, 7);
    assert_eq!(o.pid, Some(1234));
    assert_eq!(o.log_level, Some(4));
    assert_eq!(o.log_file.as_deref(), Some("dump.log"));
    assert_eq!(o.leave_running, Some(true));
    assert_eq!(o.external, ["mnt[/a]:b"]);
    assert_eq!(
        o.inherit_fd,
        [InheritFd {
            key: "pipe:[1]".into(),
            fd: 3
        }]
    );
    assert_eq!(o.manage_cgroups_mode, Some(3));
    assert_eq!(
        o.cpu_cap,
        Some(0),
        "an explicit 0 stays distinct from absent"
    );
    assert_eq!(o.notify_scripts, Some(true));
    // Our encoding is the same bytes Python produces.
    let ours = CriuReq {
        opts: Some(o),
        ..req
    };
    assert_eq!(ours.encode_to_vec(), bytes);
}

#[test]
fn responses_built_by_prost_parse_in_pycriu() {
    let resps = [
        CriuResp {
            r#type: CriuReqType::Dump as i32,
            success: true,
            dump: Some(CriuDumpResp {
                restored: Some(false),
            }),
            ..Default::default()
        },
        CriuResp {
            r#type: CriuReqType::Notify as i32,
            success: true,
            notify: Some(CriuNotify {
                script: Some("post-restore".into()),
                pid: Some(77),
            }),
            ..Default::default()
        },
        CriuResp {
            r#type: CriuReqType::FeatureCheck as i32,
            success: true,
            features: Some(CriuFeatures {
                mem_track: Some(false),
                lazy_pages: Some(true),
                pidfd_store: Some(false),
            }),
            ..Default::default()
        },
        CriuResp {
            r#type: CriuReqType::Version as i32,
            success: true,
            version: Some(CriuVersion {
                major_number: 4,
                minor_number: 2,
                name: Some("criu-rs".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut input = Vec::new();
    for r in &resps {
        let bytes = r.encode_to_vec();
        input.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
        input.extend_from_slice(&bytes);
    }
    let out = python(
        r#"
import struct, sys
from pycriu import rpc_pb2 as rpc
data = sys.stdin.buffer.read()
while data:
    n = struct.unpack("<I", data[:4])[0]
    r = rpc.criu_resp(); r.ParseFromString(data[4:4 + n]); data = data[4 + n:]
    assert r.IsInitialized()
    print(rpc.criu_req_type.Name(r.type), r.success,
          r.dump.restored if r.HasField("dump") else "-",
          r.notify.script if r.HasField("notify") else "-",
          r.notify.pid if r.HasField("notify") else "-",
          r.features.lazy_pages if r.HasField("features") else "-",
          "%d.%d" % (r.version.major_number, r.version.minor_number) if r.HasField("version") else "-")
"#,
        &input,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "DUMP True False - - - -\n\
         NOTIFY True - post-restore 77 - -\n\
         FEATURE_CHECK True - - - True -\n\
         VERSION True - - - - 4.2\n"
    );
}
