//! `crit x DIR rss|mems|ps` on synthetic directories: CRIU 4.2's 64-bit
//! `nr_pages` and the older `compat_nr_pages`, runs kept in a parent
//! directory, lazy runs and shared-memory pagemaps.

mod common;

use std::path::Path;

use common::{crit_ok, s};
use criu_proto::images::{
    CoreEntry, FdTypes, FileEntry, MemfdFileEntry, MemfdInodeEntry, MmEntry, PagemapEntry,
    PagemapHead, PstreeEntry, TaskCoreEntry, VmaEntry,
};
use criu_proto::img::{ImageKind, ImageWriter};
use prost::{Message, Name};

const PID: u32 = 42;
const A: u64 = 0x7f00_0000_0000;

fn write<M: Message + Name>(dir: &Path, kind: ImageKind, id: u64, entries: &[M]) {
    let mut w = ImageWriter::create(dir.join(kind.file_name(id)), kind).expect("create");
    for e in entries {
        w.write_entry(e).expect("write");
    }
    w.finish().expect("finish");
}

fn pagemap(dir: &Path, kind: ImageKind, id: u64, entries: &[PagemapEntry]) {
    let mut w = ImageWriter::create(dir.join(kind.file_name(id)), kind).expect("create");
    w.write_entry(&PagemapHead { pages_id: 1 }).expect("head");
    for e in entries {
        w.write_entry(e).expect("entry");
    }
    w.finish().expect("finish");
}

fn vma(start: u64, pages: u64, status: u32, flags: u32, shmid: u64) -> VmaEntry {
    VmaEntry {
        start,
        end: start + (pages << 12),
        prot: 3,
        flags,
        status,
        shmid,
        fd: -1,
        ..Default::default()
    }
}

/// Runs of the 4.2 form (count in field 5) or the older one (field 2 only).
fn run(vaddr: u64, pages: u64, flags: Option<u32>, new_style: bool) -> PagemapEntry {
    PagemapEntry {
        vaddr,
        compat_nr_pages: if new_style { 0 } else { pages as u32 },
        nr_pages: new_style.then_some(pages),
        flags,
        in_parent: None,
    }
}

/// A task with a private anonymous VMA, a shared anonymous VMA and a memfd
/// mapping; its pagemap mixes both count fields, a parent run and a lazy run.
fn make_dir(dir: &Path) {
    write(
        dir,
        ImageKind::Pstree,
        0,
        &[PstreeEntry {
            pid: PID,
            ppid: 0,
            pgid: PID,
            sid: PID,
            threads: vec![PID],
        }],
    );
    write(
        dir,
        ImageKind::Core,
        PID.into(),
        &[CoreEntry {
            mtype: 1,
            tc: Some(TaskCoreEntry {
                task_state: 1,
                comm: "synthetic".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    );
    write(
        dir,
        ImageKind::Mm,
        PID.into(),
        &[MmEntry {
            exe_file_id: 1,
            vmas: vec![
                vma(A, 16, 0x201, 0x22, 0),
                vma(A + 0x100000, 4, 0x101, 0x21, 1070),
                vma(A + 0x200000, 2, 0x4081, 0x1, 9),
            ],
            ..Default::default()
        }],
    );
    write(
        dir,
        ImageKind::Files,
        0,
        &[FileEntry {
            r#type: FdTypes::Memfd as i32,
            id: 9,
            memfd: Some(MemfdFileEntry {
                id: 9,
                inode_id: 2,
                ..Default::default()
            }),
            ..Default::default()
        }],
    );
    write(
        dir,
        ImageKind::MemfdInode,
        0,
        &[MemfdInodeEntry {
            name: "mymemfd".into(),
            shmid: 1069,
            inode_id: 2,
            ..Default::default()
        }],
    );
    pagemap(
        dir,
        ImageKind::Pagemap,
        PID.into(),
        &[
            run(A, 2, Some(4), true),
            run(A + 0x3000, 3, None, false),
            run(A + 0x8000, 2, Some(1), true),
            run(A + 0xc000, 1, Some(2), true),
        ],
    );
    pagemap(
        dir,
        ImageKind::ShmemPagemap,
        1070,
        &[run(0x1000, 1, Some(4), true)],
    );
    pagemap(
        dir,
        ImageKind::ShmemPagemap,
        1069,
        &[run(0, 1, Some(4), true), run(0x1000, 1, Some(1), true)],
    );
}

fn rss(dir: &Path) -> String {
    String::from_utf8(crit_ok(&["x", s(dir), "rss"])).expect("utf-8")
}

#[test]
fn rss_counts_marks_and_shmem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    make_dir(dir);
    let text = rss(dir);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "42");
    // 4.2 count and older count alike.
    assert!(
        lines[1].starts_with("\t7f0000000000 / 2        7f0000000000 / 16      "),
        "{text}"
    );
    assert!(
        lines[3].starts_with("\t7f0000003000 / 3        ~"),
        "{text}"
    );
    // No parent directory: the parent run is missing.
    assert!(
        lines[5].starts_with("\t7f0000008000 / 2        ~ [parent missing]"),
        "{text}"
    );
    assert!(
        lines[7].starts_with("\t7f000000c000 / 1        ~ [lazy]"),
        "{text}"
    );
    assert!(
        text.contains("\tshmem 7f0000100000-7f0000104000 pagemap-shmem-1070.img: 1 pages\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\tshmem 7f0000200000-7f0000202000 pagemap-shmem-1069.img: 1 pages, 1 in parent\n"
        ),
        "{text}"
    );

    // A parent directory whose pagemap covers the run.
    let parent = dir.join("parent");
    std::fs::create_dir(&parent).expect("mkdir");
    pagemap(
        &parent,
        ImageKind::Pagemap,
        PID.into(),
        &[run(A + 0x7000, 4, Some(4), false)],
    );
    assert!(rss(dir).contains("\t7f0000008000 / 2        ~ [parent]\n"));

    // Coverage through a grandparent.
    std::fs::remove_file(parent.join("pagemap-42.img")).expect("rm");
    pagemap(
        &parent,
        ImageKind::Pagemap,
        PID.into(),
        &[run(A + 0x8000, 2, Some(1), true)],
    );
    let grand = parent.join("parent");
    std::fs::create_dir(&grand).expect("mkdir");
    assert!(rss(dir).contains("[parent missing]"));
    pagemap(
        &grand,
        ImageKind::Pagemap,
        PID.into(),
        &[
            run(A + 0x8000, 1, Some(4), true),
            run(A + 0x9000, 1, Some(4), true),
        ],
    );
    assert!(rss(dir).contains("\t7f0000008000 / 2        ~ [parent]\n"));
}

#[test]
fn mems_and_ps_of_synthetic_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    make_dir(tmp.path());
    let ps = String::from_utf8(crit_ok(&["x", s(tmp.path()), "ps"])).expect("utf-8");
    assert_eq!(
        ps,
        "    PID   PGID    SID   COMM\n     42     42     42   synthetic\n"
    );
    let mems = String::from_utf8(crit_ok(&["x", s(tmp.path()), "mems"])).expect("utf-8");
    let line = |range: &str, rest: &str| format!("\t{range:<36}{rest}\n");
    let expected = [
        "42\n".to_owned(),
        line("exe", "    unknown path"),
        line("7f0000000000-7f0000010000", "rw-"),
        line("7f0000100000-7f0000104000", "rw- shmem[1]"),
        line("7f0000200000-7f0000202000", "rw- unknown path (s)"),
    ]
    .concat();
    assert_eq!(mems, expected);
}
