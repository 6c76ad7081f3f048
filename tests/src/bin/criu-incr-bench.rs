//! Incremental-dump benchmark: the frozen time of a final dump after three
//! pre-dumps (one per second) against a full dump, for a 1 GiB
//! `criu-workload` dirtying a given share of its memory per second; and the
//! page server's transfer rate on loopback against a plain TCP copy of the
//! same bytes measured in the same run. Images go to `/dev/shm`.
//!
//! `criu-incr-bench [MiB [PERCENT_PER_SECOND ...]]` (default: 1024 1 10 50).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn start_workload(log: &Path, mib: usize, dirty: &str) -> i32 {
    let out = Command::new(criu_tests::bin("criu-workload"))
        .arg(log)
        .arg(mib.to_string())
        .arg(format!("dirty={dirty}"))
        .stderr(Stdio::inherit())
        .output()
        .expect("start criu-workload");
    assert!(out.status.success(), "criu-workload failed");
    let pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("workload prints its pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(log).map_or(0, |t| t.lines().count()) < 2 {
        assert!(Instant::now() < deadline, "workload never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

fn stats(dir: &Path) -> (Duration, Duration, u64) {
    let d = criu_tests::dump_stats(dir).expect("stats-dump with dump statistics");
    (
        Duration::from_micros(u64::from(d.frozen_time)),
        Duration::from_micros(u64::from(d.memdump_time)),
        d.pages_written,
    )
}

fn criu(args: &[&str], dir: &Path) {
    let status = Command::new(criu_tests::bin("criu"))
        .args(args)
        .args(["-D", dir.to_str().unwrap(), "-o", "log", "-v2"])
        .status()
        .expect("run criu");
    assert!(
        status.success(),
        "criu {args:?} failed (see {}/log)",
        dir.display()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn incremental(work: &Path, mib: usize, percent: f64) {
    // The workload dirties `dirty` % of its pages every 100 ms.
    let dirty = format!("{}", percent / 10.0);
    let log = work.join("workload.log");
    let _ = std::fs::remove_file(&log);
    let pid = start_workload(&log, mib, &dirty);
    let p = pid.to_string();
    let dir = |n: &str| {
        let d = work.join(n);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let full = dir("full");
    criu(&["dump", "-t", &p, "--leave-running"], &full);
    let (full_frozen, _, full_pages) = stats(&full);
    let _ = std::fs::remove_dir_all(&full);
    let mut parent: Option<String> = None;
    for i in 1..=3 {
        let d = dir(&format!("pre{i}"));
        let mut args = vec!["pre-dump", "-t", &p];
        let prev;
        if let Some(par) = &parent {
            prev = format!("../{par}");
            args.extend(["--prev-images-dir", &prev]);
        }
        criu(&args, &d);
        parent = Some(format!("pre{i}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let last = dir("last");
    criu(
        &[
            "dump",
            "-t",
            &p,
            "--prev-images-dir",
            "../pre3",
            "--leave-running",
        ],
        &last,
    );
    let (frozen, _, pages) = stats(&last);
    criu_tests::kill_and_reap(pid);
    println!(
        "{mib:>5} MiB {percent:>5.1} %/s   full dump frozen {:>8.1} ms ({full_pages} pages)   \
         after 3 pre-dumps frozen {:>7.1} ms ({pages} pages)   ratio {:>5.1} %",
        ms(full_frozen),
        ms(frozen),
        100.0 * frozen.as_secs_f64() / full_frozen.as_secs_f64()
    );
    for d in ["pre1", "pre2", "pre3", "last"] {
        let _ = std::fs::remove_dir_all(work.join(d));
    }
}

/// Seconds to copy `bytes` from memory over a loopback TCP connection into
/// a file in `dir`.
fn plain_tcp(bytes: usize, dir: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = dir.join("tcp-copy");
    let receiver = std::thread::spawn(move || {
        let (mut sk, _) = listener.accept().unwrap();
        let mut file = std::fs::File::create(&path).unwrap();
        let mut buf = vec![0u8; MIB];
        loop {
            let n = sk.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).unwrap();
        }
        let _ = std::fs::remove_file(&path);
    });
    let data = vec![0x5au8; bytes];
    let start = Instant::now();
    let mut sk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sk.write_all(&data).unwrap();
    drop(sk);
    receiver.join().unwrap();
    start.elapsed()
}

fn page_server_rate(work: &Path, mib: usize) {
    let log = work.join("workload.log");
    let _ = std::fs::remove_file(&log);
    let pid = start_workload(&log, mib, "0");
    let d = work.join("ps");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let mut server = Command::new(criu_tests::bin("criu"))
        .args([
            "page-server",
            "--port",
            "0",
            "-D",
            d.to_str().unwrap(),
            "-o",
            "ps.log",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().to_owned();
    criu(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "--page-server",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
        ],
        &d,
    );
    assert!(server.wait().unwrap().success(), "page server failed");
    let (_, memdump, pages) = stats(&d);
    criu_tests::kill_and_reap(pid);
    let bytes = pages as usize * 4096;
    let plain = plain_tcp(bytes, work);
    let gibs = |t: Duration| bytes as f64 / (1u64 << 30) as f64 / t.as_secs_f64();
    println!(
        "page server on loopback: {:.2} GiB/s ({pages} pages in {:.1} ms); plain TCP copy \
         of the same bytes: {:.2} GiB/s; ratio {:.0} %",
        gibs(memdump),
        ms(memdump),
        gibs(plain),
        100.0 * gibs(memdump) / gibs(plain)
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn main() {
    criu_tests::become_subreaper();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map_or(1024, |a| a.parse().expect("MiB"));
    let rates: Vec<f64> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|a| a.parse().expect("percent"))
            .collect()
    } else {
        vec![1.0, 10.0, 50.0]
    };
    let work = Path::new("/dev/shm").join(format!("criu-incr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    for r in rates {
        incremental(&work, mib, r);
    }
    page_server_rate(&work, mib);
    let _ = std::fs::remove_dir_all(&work);
}
