//! CRIU's own `crit` must read the images our writer produces.
//!
//! Needs `crit` from the Debian package `criu` (3.17 in Debian 12) and its
//! `python3-protobuf` dependency. `crit` 3.17 predates CRIU 4.2's pagemap
//! change: it names field 2 `nr_pages` (4.2's `compat_nr_pages`, written as
//! 0) and does not know field 5, so it shows `"nr_pages": 0` for 4.2 style
//! entries; the test checks exactly that.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use criu_proto::images::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry, PipeDataEntry,
    PstreeEntry, SeccompEntry, TaskKobjIdsEntry,
};
use criu_proto::img::{ImageKind, ImagesDir};
use serde_json::Value;

const CRIT: &str = "/usr/bin/crit";
const PYTHON: &str = "/usr/bin/python3";

/// Runs `crit decode -i FILE` with the system Python (a pyenv `python3` on
/// PATH may lack the protobuf module) and parses its JSON.
fn crit_decode(file: &Path) -> Value {
    assert!(
        Path::new(CRIT).is_file(),
        "crit is not installed at {CRIT}: install the Debian package `criu` (apt-get install criu)"
    );
    assert!(
        Path::new(PYTHON).is_file(),
        "crit needs {PYTHON} (Debian package python3)"
    );
    let out = Command::new(PYTHON)
        .arg(CRIT)
        .args(["decode", "-i"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run crit: {e}"));
    assert!(
        out.status.success(),
        "crit decode {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("crit printed invalid JSON for {}: {e}", file.display()))
}

/// Runs `crit encode` on `json` and returns the bytes.
fn crit_encode(json: &Value, dir: &Path) -> Vec<u8> {
    let input = dir.join("crit-in.json");
    let output = dir.join("crit-out.img");
    std::fs::write(&input, json.to_string()).expect("write json");
    let status = Command::new(PYTHON)
        .arg(CRIT)
        .args(["encode", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status()
        .expect("run crit encode");
    assert!(status.success(), "crit encode failed");
    std::fs::read(&output).expect("crit output")
}

fn entries(v: &Value) -> &Vec<Value> {
    v["entries"].as_array().expect("entries array")
}

struct Written {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

/// Reads the `loop` reference images with our typed readers and writes them
/// again with our writer into a fresh directory.
fn rewrite_loop() -> Written {
    let src = ImagesDir::open(common::images("loop")).expect("open loop images");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = ImagesDir::open(tmp.path()).expect("open temp dir");
    let pid = 24125;

    let inventory: InventoryEntry = src.inventory().expect("inventory");
    dst.write_single(ImageKind::Inventory, 0, &inventory)
        .expect("inventory");
    let pstree: Vec<PstreeEntry> = src.pstree().expect("pstree");
    dst.write_all(ImageKind::Pstree, 0, &pstree)
        .expect("pstree");
    let core: CoreEntry = src.core(pid).expect("core");
    dst.write_single(ImageKind::Core, pid.into(), &core)
        .expect("core");
    let ids: TaskKobjIdsEntry = src.ids(pid).expect("ids").expect("ids exists");
    dst.write_single(ImageKind::Ids, pid.into(), &ids)
        .expect("ids");
    let mm: MmEntry = src.mm(pid).expect("mm").expect("mm exists");
    dst.write_single(ImageKind::Mm, pid.into(), &mm)
        .expect("mm");
    let fs: FsEntry = src.fs(pid).expect("fs").expect("fs exists");
    dst.write_single(ImageKind::Fs, pid.into(), &fs)
        .expect("fs");
    let fdinfo: Vec<FdinfoEntry> = src.fdinfo(ids.files_id).expect("fdinfo");
    dst.write_all(ImageKind::Fdinfo, ids.files_id.into(), &fdinfo)
        .expect("fdinfo");
    let files: Vec<FileEntry> = src.files().expect("files");
    dst.write_all(ImageKind::Files, 0, &files).expect("files");
    let pagemap = src.pagemap(pid).expect("pagemap").expect("pagemap exists");
    dst.write_pagemap(ImageKind::Pagemap, pid.into(), &pagemap)
        .expect("pagemap");
    let seccomp: SeccompEntry = src
        .read_single(ImageKind::Seccomp, 0)
        .expect("seccomp")
        .expect("seccomp exists");
    dst.write_single(ImageKind::Seccomp, 0, &seccomp)
        .expect("seccomp");

    let mut pipes = dst
        .create_image(ImageKind::PipesData, 0)
        .expect("pipes-data");
    pipes
        .write_entry_with_extra(
            &PipeDataEntry {
                pipe_id: 5,
                bytes: 6,
                size: Some(4096),
            },
            b"abcdef",
        )
        .expect("pipe data");
    pipes.finish().expect("finish");

    Written {
        path: tmp.path().to_owned(),
        _tmp: tmp,
    }
}

#[test]
fn crit_decodes_our_process_images() {
    let w = rewrite_loop();
    let pstree = crit_decode(&w.path.join("pstree.img"));
    assert_eq!(pstree["magic"], "PSTREE");
    let p = &entries(&pstree)[0];
    assert_eq!(
        (p["pid"].as_u64(), p["ppid"].as_u64()),
        (Some(24125), Some(0))
    );
    assert_eq!(p["threads"], serde_json::json!([24125]));

    let core = crit_decode(&w.path.join("core-24125.img"));
    assert_eq!(core["magic"], "CORE");
    let c = &entries(&core)[0];
    assert_eq!(c["mtype"], "X86_64");
    assert_eq!(c["tc"]["comm"], "loop");
    assert_eq!(c["tc"]["sigactions"].as_array().map(Vec::len), Some(62));
    assert_eq!(
        c["thread_info"]["fpregs"]["st_space"]
            .as_array()
            .map(Vec::len),
        Some(32)
    );

    let inventory = crit_decode(&w.path.join("inventory.img"));
    assert_eq!(inventory["magic"], "INVENTORY");
    let i = &entries(&inventory)[0];
    assert_eq!(i["img_version"].as_u64(), Some(2));
    assert_eq!(i["fdinfo_per_id"], true);
    assert_eq!(i["root_ids"]["pid_ns_id"].as_u64(), Some(1));

    let ids = crit_decode(&w.path.join("ids-24125.img"));
    assert_eq!(entries(&ids)[0]["files_id"].as_u64(), Some(2));

    let mm = crit_decode(&w.path.join("mm-24125.img"));
    assert_eq!(mm["magic"], "MM");
    let m = &entries(&mm)[0];
    let exe_file_id = m["exe_file_id"].as_u64().expect("exe_file_id");
    assert!(m["vmas"].as_array().is_some_and(|v| v.len() > 10));

    let fs = crit_decode(&w.path.join("fs-24125.img"));
    assert_eq!(entries(&fs)[0]["umask"].as_u64(), Some(0o22));

    let fdinfo = crit_decode(&w.path.join("fdinfo-2.img"));
    assert_eq!(fdinfo["magic"], "FDINFO");
    let fds: Vec<u64> = entries(&fdinfo)
        .iter()
        .filter_map(|e| e["fd"].as_u64())
        .collect();
    assert_eq!(fds, vec![0, 1, 2, 3, 4, 10, 251]);
    assert_eq!(entries(&fdinfo)[6]["type"], "PIPE");

    let files = crit_decode(&w.path.join("files.img"));
    assert_eq!(files["magic"], "FILES");
    let exe = entries(&files)
        .iter()
        .find(|f| f["id"].as_u64() == Some(exe_file_id))
        .expect("exe in files.img");
    assert_eq!(exe["type"], "REG");
    assert_eq!(exe["reg"]["name"], "/tmp/criu-testdata/bin/loop");

    let pagemap = crit_decode(&w.path.join("pagemap-24125.img"));
    assert_eq!(pagemap["magic"], "PAGEMAP");
    let pm = entries(&pagemap);
    assert_eq!(pm.len(), 18);
    assert_eq!(pm[0]["pages_id"].as_u64(), Some(1));
    assert_eq!(pm[1]["vaddr"].as_u64(), Some(0x564e_f348_9000));
    assert_eq!(pm[1]["flags"].as_u64(), Some(4));
    // crit 3.17 reads field 2 (written as 0 by CRIU 4.2 and by us).
    assert_eq!(pm[1]["nr_pages"].as_u64(), Some(0));

    let seccomp = crit_decode(&w.path.join("seccomp.img"));
    assert_eq!(seccomp["magic"], "SECCOMP");
    assert_eq!(entries(&seccomp).len(), 1);

    let pipes = crit_decode(&w.path.join("pipes-data.img"));
    assert_eq!(pipes["magic"], "PIPES_DATA");
    let pd = &entries(&pipes)[0];
    assert_eq!(pd["pipe_id"].as_u64(), Some(5));
    assert_eq!(pd["extra"].as_str().map(str::trim), Some("YWJjZGVm"));
}

/// For messages unchanged since CRIU 3.17, `crit encode` of `crit decode`
/// gives back our exact bytes.
#[test]
fn crit_round_trips_our_images() {
    let w = rewrite_loop();
    for name in [
        "pstree.img",
        "ids-24125.img",
        "fs-24125.img",
        "fdinfo-2.img",
        "seccomp.img",
    ] {
        let ours = std::fs::read(w.path.join(name)).expect("our image");
        let json = crit_decode(&w.path.join(name));
        assert_eq!(crit_encode(&json, &w.path), ours, "{name}");
    }
}
