//! Kernel probes on this machine (Linux 6.18, x86-64, root).

use criu_engine::kerndat::{KernelFeatures, Privileges};

#[test]
fn dump_values() {
    let t = std::time::Instant::now();
    let kf = KernelFeatures::probe();
    eprintln!("{:?}", t.elapsed());
    eprintln!("{kf:#?}");
    eprintln!("{:#?}", Privileges::probe());
}
