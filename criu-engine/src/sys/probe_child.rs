//! A throw-away child process for the ptrace probes of `kerndat`.
//!
//! The child installs an allow-everything seccomp filter (so that
//! `PTRACE_SECCOMP_GET_FILTER` has something to report), tells the parent it is
//! ready through a pipe, and sleeps until it is killed. [`ProbeChild`] kills
//! and reaps it on drop.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, pipe2, read, write, ForkResult, Pid};

/// A paused child process, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct ProbeChild {
    pid: Pid,
    seccomp: bool,
}

impl ProbeChild {
    /// Forks the child and waits until it has set itself up.
    pub(crate) fn spawn() -> nix::Result<Self> {
        let (rd, wr) = pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: the child runs only `child_main`, which makes raw syscalls
        // (prctl, write, pause, _exit): async-signal-safe, no allocation, no
        // locks, so forking a multi-threaded parent is sound.
        match unsafe { fork() }? {
            ForkResult::Child => child_main(&wr),
            ForkResult::Parent { child } => {
                drop(wr);
                // Killed and reaped on every early return below.
                let mut guard = Self {
                    pid: child,
                    seccomp: false,
                };
                let mut byte = [0u8; 1];
                let n = loop {
                    match read(rd.as_fd(), &mut byte) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other?,
                    }
                };
                if n != 1 {
                    return Err(nix::errno::Errno::ECHILD);
                }
                guard.seccomp = byte[0] == 1;
                Ok(guard)
            }
        }
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether the child managed to install its seccomp filter.
    pub(crate) fn has_seccomp_filter(&self) -> bool {
        self.seccomp
    }
}

impl Drop for ProbeChild {
    fn drop(&mut self) {
        // The child never exits by itself, so it is still ours to reap; a
        // failure here would only mean it already died.
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, Some(WaitPidFlag::__WALL));
    }
}

/// Body of the forked child: never returns.
fn child_main(ready: &OwnedFd) -> ! {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let ok = u8::from(install_allow_filter());
    let _ = write(ready, &[ok]);
    loop {
        // SAFETY: pause() has no arguments and only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Installs a one-instruction seccomp filter that allows every syscall.
fn install_allow_filter() -> bool {
    let mut insns = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return false;
    }
    // SAFETY: `prog` points to `insns`, both alive for the call; the kernel
    // copies the program.
    unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            std::ptr::from_ref(&prog),
            0,
            0,
        ) == 0
    }
}
