//! Test fixture for `tests/inject.rs`: installs a seccomp filter that kills
//! the process on any `mmap`, prints `ready`, then echoes standard input to
//! standard output line by line until end of file.
//!
//! An injected `mmap` only survives this filter when the tracer set
//! `PTRACE_O_SUSPEND_SECCOMP`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Set up every buffer before the filter: after it, allocating through
    // mmap would kill us.
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut line = String::with_capacity(4096);

    let filter = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_mmap, vec![])]),
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        std::env::consts::ARCH.try_into()?,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program)?;

    output.write_all(b"ready\n")?;
    output.flush()?;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        output.write_all(line.as_bytes())?;
        output.flush()?;
    }
}
