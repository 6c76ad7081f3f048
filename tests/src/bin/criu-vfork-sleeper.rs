//! A process that cannot be stopped: it starts a child with
//! `CLONE_VM | CLONE_VFORK | CLONE_PARENT` that never execs, so it waits for
//! that child in a killable sleep that ptrace cannot interrupt, and it has
//! no child of its own (the child is its sibling). The child sleeps until
//! killed. Used to check that a dump honours `timeout`.

fn main() {
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT | libc::SIGCHLD;
    // SAFETY: the child shares our memory and stack (no new stack is given,
    // as with vfork); it only makes raw `pause` syscalls in a loop and never
    // returns from this function, so it writes nothing of ours but the
    // stack slots of those calls, which we do not use again.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if pid == 0 {
        loop {
            // SAFETY: `pause` takes no arguments and touches no memory.
            unsafe { libc::syscall(libc::SYS_pause) };
        }
    }
    // We get here only once the child died (or the clone failed).
    std::process::exit(i32::from(pid < 0));
}
