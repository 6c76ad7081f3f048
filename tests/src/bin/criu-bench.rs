//! The RPC benchmark of `scripts/bench`: VERSION round trips through a swrk
//! worker (spawn + request + exit) and through the service, as medians, with
//! ratios against baselines measured in the same run: the cost of starting
//! any process (`/bin/true`), and a reference CRIU when `CRIU_REF` names one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criu_proto::rpc::CriuReqType as T;
use criu_tests::{req, Service, TempDir};
use criu_transport::client::Client;

const SWRK_ROUNDS: usize = 200;
const SERVICE_ROUNDS: usize = 1000;
/// Pause before each idle-service request: longer than starting a spare worker.
const IDLE_PAUSE: Duration = Duration::from_millis(5);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median of `rounds` runs of `f`, which returns the time it measured.
fn measure(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    // One warm-up round (page cache, dynamic loader).
    f();
    median((0..rounds).map(|_| f()).collect())
}

/// Median wall time of `rounds` runs of `f`.
fn time(rounds: usize, mut f: impl FnMut()) -> Duration {
    measure(rounds, || {
        let start = Instant::now();
        f();
        start.elapsed()
    })
}

fn swrk_round_trip(binary: &Path) -> Duration {
    time(SWRK_ROUNDS, || {
        let client = Client::spawn_swrk(binary, &[]).expect("spawn worker");
        let resp = client.call(&req(T::Version)).expect("VERSION");
        assert!(resp.success);
        let status = client.wait().expect("wait");
        assert!(status.success());
    })
}

/// VERSION round trips through a service: `pause` between requests lets an
/// idle service get ready again (latency of one request); no pause measures
/// back-to-back requests (each still served by a new worker process).
fn service_round_trip(socket: &Path, pause: Duration) -> Duration {
    measure(SERVICE_ROUNDS, || {
        std::thread::sleep(pause);
        let start = Instant::now();
        let client = Client::connect(socket).expect("connect");
        let resp = client.call(&req(T::Version)).expect("VERSION");
        assert!(resp.success);
        start.elapsed()
    })
}

fn reference_service(criu: &Path) -> (std::process::Child, PathBuf, TempDir) {
    let dir = TempDir::new("bench-ref");
    let socket = dir.path().join("ref.sock");
    let child = Command::new(criu)
        .arg("service")
        .arg("--address")
        .arg(&socket)
        .spawn()
        .expect("start reference service");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "reference service never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, socket, dir)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let dir = std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("binary directory")
        .to_owned();
    let reference = std::env::var_os("CRIU_REF").map(PathBuf::from);

    let spawn = time(SWRK_ROUNDS, || {
        assert!(Command::new("/bin/true").status().expect("spawn").success());
    });
    println!(
        "baseline: spawn+exit of /bin/true        median {:>9.1} us",
        us(spawn)
    );

    let ref_swrk = reference.as_deref().map(swrk_round_trip);
    if let Some(r) = ref_swrk {
        println!(
            "reference criu swrk VERSION round trip   median {:>9.1} us",
            us(r)
        );
    }
    for name in ["criu", "criu-swrk"] {
        let ours = swrk_round_trip(&dir.join(name));
        let mut line = format!(
            "{name:<10} swrk VERSION round trip     median {:>9.1} us  ({:.2}x process start)",
            us(ours),
            ours.as_secs_f64() / spawn.as_secs_f64()
        );
        if let Some(r) = ref_swrk {
            line += &format!("  ({:.2}x reference)", ours.as_secs_f64() / r.as_secs_f64());
        }
        println!("{line}");
    }

    for (label, pause) in [("idle", IDLE_PAUSE), ("back-to-back", Duration::ZERO)] {
        let ref_service = reference.as_deref().map(|criu| {
            let (mut child, socket, _dir) = reference_service(criu);
            let t = service_round_trip(&socket, pause);
            let _ = child.kill();
            let _ = child.wait();
            t
        });
        if let Some(r) = ref_service {
            println!(
                "reference criu service VERSION, {label:<12} median {:>9.1} us",
                us(r)
            );
        }
        for name in ["criu-serviced", "criu"] {
            let service = Service::start(&dir.join(name));
            let ours = service_round_trip(&service.socket, pause);
            let mut line = format!(
                "{name:<13} service VERSION, {label:<12} median {:>9.1} us",
                us(ours)
            );
            if label == "idle" {
                line += "  (target < 1000 us)";
            }
            if let Some(r) = ref_service {
                line += &format!("  ({:.2}x reference)", ours.as_secs_f64() / r.as_secs_f64());
            }
            println!("{line}");
        }
    }
}
