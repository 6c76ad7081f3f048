//! `fork(2)` for a single-threaded process (the page server daemon).

use nix::unistd::ForkResult;

/// Forks; refuses (`EDEADLK`) when the process has more than one thread,
/// since the child then runs ordinary Rust code (allocation, locks) that
/// is only sound after forking a single-threaded process.
pub(crate) fn fork_single_threaded() -> nix::Result<ForkResult> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|_| nix::errno::Errno::EIO)?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or(nix::errno::Errno::EIO)?;
    if threads != 1 {
        return Err(nix::errno::Errno::EDEADLK);
    }
    // SAFETY: the process has a single thread, so no lock can be held by a
    // thread that does not exist in the child.
    unsafe { nix::unistd::fork() }
}
