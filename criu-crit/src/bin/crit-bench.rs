//! Benchmark: decode a synthesised ~1 GiB dump with our `crit` and with
//! Python `crit` (`/usr/bin/python3 /usr/bin/crit`) on the same images.
//!
//! ```text
//! crit-bench [--tasks N] [--entries N] [--gib G] [--dir DIR] [--keep]
//! ```
//!
//! Every task gets a `pagemap-<pid>.img` of `--entries` runs, an
//! `mm-<pid>.img` with one VMA per run and a sparse `pages-<id>.img`, so that
//! the pages add up to `--gib` GiB. Two measures are printed: one process per
//! image for both tools (what a user running `crit decode` sees), and all
//! images decoded inside one process (our library against
//! `pycriu.images.load` + `json.dumps`). Build with `--release`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu_crit::{decode_image, DecodeOptions};
use criu_proto::images::{MmEntry, PagemapEntry, PagemapHead, PstreeEntry, VmaEntry};
use criu_proto::img::{ImageKind, ImageWriter};

const PYTHON: &str = "/usr/bin/python3";
const PY_CRIT: &str = "/usr/bin/crit";
const PAGE: u64 = 4096;

struct Args {
    tasks: u32,
    entries: u64,
    gib: f64,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        tasks: 200,
        entries: 1024,
        gib: 1.0,
        dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--tasks" => a.tasks = val()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--entries" => a.entries = val()?.parse().map_err(|e| format!("--entries: {e}"))?,
            "--gib" => a.gib = val()?.parse().map_err(|e| format!("--gib: {e}"))?,
            "--dir" => a.dir = Some(PathBuf::from(val()?)),
            "--keep" => a.keep = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.tasks == 0 || a.entries == 0 {
        return Err("--tasks and --entries must be positive".into());
    }
    Ok(a)
}

type Failure = Box<dyn std::error::Error>;

/// Writes the dump; returns the image files to decode and the page bytes.
fn synthesise(dir: &Path, a: &Args) -> Result<(Vec<PathBuf>, u64), Failure> {
    let total_pages = (a.gib * (1u64 << 30) as f64) as u64 / PAGE;
    let pages_per_task = (total_pages / u64::from(a.tasks)).max(a.entries);
    let mut files = Vec::new();
    let mut pstree = ImageWriter::create(dir.join("pstree.img"), ImageKind::Pstree)?;
    let mut page_bytes = 0;
    for t in 0..a.tasks {
        let pid = 1000 + t;
        pstree.write_entry(&PstreeEntry {
            pid,
            ppid: if t == 0 { 0 } else { 1000 },
            pgid: 1000,
            sid: 1000,
            threads: vec![pid],
        })?;
        let pm_path = dir.join(ImageKind::Pagemap.file_name(pid.into()));
        let mut pm = ImageWriter::create(&pm_path, ImageKind::Pagemap)?;
        pm.write_entry(&PagemapHead { pages_id: pid })?;
        let mut vmas = Vec::new();
        let mut addr = 0x7f00_0000_0000u64 + (u64::from(t) << 32);
        for e in 0..a.entries {
            let n = pages_per_task / a.entries + u64::from(e < pages_per_task % a.entries);
            pm.write_entry(&PagemapEntry {
                vaddr: addr,
                compat_nr_pages: 0,
                in_parent: None,
                flags: Some(if e % 3 == 0 { 4 } else { 6 }),
                nr_pages: Some(n),
            })?;
            vmas.push(VmaEntry {
                start: addr,
                end: addr + (n + 1) * PAGE,
                pgoff: 0,
                shmid: 0,
                prot: 3,
                flags: 0x22,
                status: 0x201,
                fd: -1,
                ..Default::default()
            });
            addr += (n + 2) * PAGE;
        }
        pm.finish()?;
        let mut mm =
            ImageWriter::create(dir.join(ImageKind::Mm.file_name(pid.into())), ImageKind::Mm)?;
        mm.write_entry(&MmEntry {
            exe_file_id: 1,
            vmas,
            dumpable: Some(1),
            ..Default::default()
        })?;
        mm.finish()?;
        let pages = std::fs::File::create(dir.join(ImageKind::Pages.file_name(pid.into())))?;
        pages.set_len(pages_per_task * PAGE)?;
        page_bytes += pages_per_task * PAGE;
        files.push(pm_path);
        files.push(dir.join(ImageKind::Mm.file_name(pid.into())));
    }
    pstree.finish()?;
    files.push(dir.join("pstree.img"));
    Ok((files, page_bytes))
}

fn run_each(files: &[PathBuf], cmd: &mut dyn FnMut(&Path) -> Command) -> Result<Duration, Failure> {
    let start = Instant::now();
    for f in files {
        let status = cmd(f).stdout(Stdio::null()).status()?;
        if !status.success() {
            return Err(format!("decode of {} failed", f.display()).into());
        }
    }
    Ok(start.elapsed())
}

const PY_LOOP: &str = "
import sys, json, time, pycriu
files = sys.argv[1:]
start = time.monotonic()
n = 0
for f in files:
    with open(f, 'rb') as fh:
        n += len(json.dumps(pycriu.images.load(fh)))
print(time.monotonic() - start, n)
";

fn report(label: &str, ours: Duration, theirs: Duration) {
    println!("{label}:");
    println!("  ours   : {:9.3} s", ours.as_secs_f64());
    println!("  python : {:9.3} s", theirs.as_secs_f64());
    println!(
        "  ratio  : {:9.1}x",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() -> Result<(), Failure> {
    let a = parse()?;
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = std::env::temp_dir().join(format!("crit-bench-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            tmp.clone()
        }
    };
    let ours_bin = std::env::current_exe()?.with_file_name("crit");
    if !ours_bin.is_file() {
        return Err(format!(
            "{} not found: build the crit binary too",
            ours_bin.display()
        )
        .into());
    }
    let (files, page_bytes) = synthesise(&dir, &a)?;
    let image_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "dump: {} tasks x {} runs/VMAs, {:.2} GiB of pages (sparse), {} images of {:.1} MiB in {}",
        a.tasks,
        a.entries,
        page_bytes as f64 / f64::from(1u32 << 30),
        files.len(),
        image_bytes as f64 / f64::from(1u32 << 20),
        dir.display()
    );

    let ours = run_each(&files, &mut |f| {
        let mut c = Command::new(&ours_bin);
        c.arg("decode").arg("-i").arg(f);
        c
    })?;
    let theirs = run_each(&files, &mut |f| {
        let mut c = Command::new(PYTHON);
        c.arg(PY_CRIT).arg("decode").arg("-i").arg(f);
        c
    })?;
    report("decode, one process per image", ours, theirs);

    let start = Instant::now();
    let mut ours_len = 0;
    for f in &files {
        let bytes = std::fs::read(f)?;
        ours_len += decode_image(&bytes, f, DecodeOptions::default())?
            .to_text(false)
            .len();
    }
    let ours = start.elapsed();
    let out = Command::new(PYTHON)
        .args(["-c", PY_LOOP])
        .args(&files)
        .output()?;
    if !out.status.success() {
        return Err(format!("python: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace();
    let secs: f64 = parts.next().ok_or("python printed nothing")?.parse()?;
    let py_len: usize = parts.next().ok_or("python printed no length")?.parse()?;
    report(
        "decode, all images in one process (library vs pycriu.images.load)",
        ours,
        Duration::from_secs_f64(secs),
    );
    println!("  JSON   : {ours_len} bytes (ours), {py_len} bytes (python, which drops nr_pages)");

    if !a.keep && a.dir.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
