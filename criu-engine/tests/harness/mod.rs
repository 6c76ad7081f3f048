//! A minimal test runner for the restore tests, which need a single-threaded
//! process (restore forks without exec and refuses a multi-threaded worker),
//! so they run with `harness = false` instead of libtest's thread pool.

/// Runs `cases` in order in this thread, as a child subreaper, after
/// `setup`; prints libtest-style lines and exits 1 if any case failed.
/// Arguments that do not start with `-` select cases by substring.
pub fn run(cases: &[(&str, fn())], setup: impl FnOnce()) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
    setup();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let ok = std::panic::catch_unwind(case).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}
