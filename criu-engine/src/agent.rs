//! The ptrace work of a dump runs in an agent process forked from the
//! worker, so that killing the worker never leaves a task stopped, traced
//! or carrying the injection stub (no CRIU counterpart: CRIU's worker
//! traces the tasks itself, and when it dies the kernel detaches them with
//! whatever registers and mappings the dump had put in place).
//!
//! The worker (the process the client talks to) forks the agent before
//! anything is seized, then only relays the notifications the agent asks
//! for, over a socket pair, until the agent reports its result. The agent
//! seizes, dumps and releases the tree on its one thread. When the worker
//! dies, the pair closes: the agent's next notification fails, or its next
//! check of [`worker_gone`] sees it reparented, and the dump unwinds the
//! way any failed dump does (stub cured, registers put back, tasks
//! detached, no `inventory.img`). The agent holds no copy of the client's
//! socket, so the client sees the worker's death as a closed connection.
//!
//! Messages on the pair (one `SOCK_SEQPACKET` datagram each): the agent
//! sends `N`, a flag and a pid (LE `i32`) then the script name, and gets
//! one byte back (1 = acknowledged); it ends with `O` (success) or `E`, a
//! flag and a `cr_errno` (LE `i32`) then the error text.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use criu_transport::requests::RequestCtx;
use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::notify::Notify;

/// Largest datagram on the pair (an error chain is short).
const MAX_MSG: usize = 64 * 1024;

/// Pid of the worker that forked this process, when this is an agent.
static WORKER: AtomicI32 = AtomicI32::new(0);

/// Failures of running work in an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The socket pair or the agent process cannot be created.
    #[error("cannot start the dump agent")]
    Spawn(#[source] Errno),
    /// The agent ended without reporting a result.
    #[error("the dump agent {pid} died without a result ({status})")]
    Died {
        /// The agent.
        pid: i32,
        /// How it ended, as `waitpid` told.
        status: String,
    },
    /// The work failed in the agent; `message` is its whole error chain.
    #[error("{message}")]
    Failed {
        /// Error text with its causes.
        message: String,
        /// The `cr_errno` of the failure, if any.
        cr_errno: Option<i32>,
    },
}

impl AgentError {
    /// The `cr_errno` a CRIU client expects for this failure.
    pub fn cr_errno(&self) -> Option<i32> {
        match self {
            AgentError::Failed { cr_errno, .. } => *cr_errno,
            _ => None,
        }
    }
}

/// Whether this process is an agent whose worker is gone (the agent was
/// reparented): the work should unwind at once.
pub fn worker_gone() -> bool {
    let worker = WORKER.load(Ordering::Relaxed);
    worker != 0 && nix::unistd::getppid().as_raw() != worker
}

/// Runs `work` in a forked agent; notifications it sends are relayed to
/// the client of `ctx` when `relay` is set (and acknowledged otherwise).
/// Returns once the agent has reported and exited.
pub(crate) fn run(
    ctx: &mut dyn RequestCtx,
    relay: bool,
    work: impl FnOnce(&mut dyn Notify) -> Result<(), crate::error::Error>,
) -> Result<(), AgentError> {
    let (worker_end, agent_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(AgentError::Spawn)?;
    let worker = nix::unistd::getpid();
    let client_ino = ctx.socket_inode();
    match crate::sys::fork::fork_single_threaded().map_err(AgentError::Spawn)? {
        ForkResult::Child => {
            drop(worker_end);
            agent_main(worker, client_ino, agent_end, work)
        }
        ForkResult::Parent { child } => {
            drop(agent_end);
            let result = relay_until_done(ctx, relay, &worker_end);
            drop(worker_end);
            let status = reap(child);
            result.unwrap_or_else(|| {
                Err(AgentError::Died {
                    pid: child.as_raw(),
                    status,
                })
            })
        }
    }
}

/// Serves the agent's notifications; `None` when it went away without a
/// result.
fn relay_until_done(
    ctx: &mut dyn RequestCtx,
    relay: bool,
    sock: &OwnedFd,
) -> Option<Result<(), AgentError>> {
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let n = match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                tracing::error!(%errno, "cannot read from the dump agent");
                return None;
            }
        };
        let msg = &buf[..n];
        match msg.first() {
            Some(b'N') if msg.len() >= 6 => {
                let pid =
                    (msg[1] != 0).then(|| i32::from_le_bytes([msg[2], msg[3], msg[4], msg[5]]));
                let script = String::from_utf8_lossy(&msg[6..]);
                let ok = !relay || ctx.notify(&script, pid, None).success;
                if !ok {
                    tracing::error!("notification {script} failed on the client side");
                }
                if send(sock, &[u8::from(ok)]).is_err() {
                    return None;
                }
            }
            Some(b'O') => return Some(Ok(())),
            Some(b'E') if msg.len() >= 6 => {
                let errno = i32::from_le_bytes([msg[2], msg[3], msg[4], msg[5]]);
                return Some(Err(AgentError::Failed {
                    message: String::from_utf8_lossy(&msg[6..]).into_owned(),
                    cr_errno: (msg[1] != 0).then_some(errno),
                }));
            }
            _ => {
                tracing::error!(len = n, "malformed message from the dump agent");
                return None;
            }
        }
    }
}

/// Waits for the agent; describes how it ended.
fn reap(agent: Pid) -> String {
    loop {
        match waitpid(agent, None) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => return format!("exit status {code}"),
            Ok(WaitStatus::Signaled(_, sig, _)) => return format!("killed by {sig}"),
            Ok(_) => continue,
            Err(errno) => return format!("cannot wait: {errno}"),
        }
    }
}

fn send(sock: &OwnedFd, msg: &[u8]) -> nix::Result<()> {
    loop {
        match nix::sys::socket::send(sock.as_raw_fd(), msg, MsgFlags::empty()) {
            Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The agent's whole life: never returns into the worker's request loop.
fn agent_main(
    worker: Pid,
    client_ino: u64,
    sock: OwnedFd,
    work: impl FnOnce(&mut dyn Notify) -> Result<(), crate::error::Error>,
) -> ! {
    WORKER.store(worker.as_raw(), Ordering::Relaxed);
    close_sockets_by_inode(client_ino);
    let mut notify = AgentNotify { sock: &sock };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut notify)));
    let code = match outcome {
        Ok(Ok(())) => {
            let _ = send(&sock, b"O");
            0
        }
        Ok(Err(err)) => {
            let errno = err.cr_errno();
            let mut msg = vec![b'E', u8::from(errno.is_some())];
            msg.extend_from_slice(&errno.unwrap_or(0).to_le_bytes());
            let text = crate::worker::error_chain(&err);
            let room = MAX_MSG - msg.len();
            msg.extend_from_slice(&text.as_bytes()[..text.len().min(room)]);
            let _ = send(&sock, &msg);
            1
        }
        Err(_) => 2,
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// Closes this process's copies of the socket whose inode is `ino` (the
/// client's connection): only the worker may keep it open.
fn close_sockets_by_inode(ino: u64) {
    let want = format!("socket:[{ino}]");
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.as_os_str() == want.as_str()).then_some(fd)
        })
        .collect();
    for fd in fds {
        if let Err(errno) = crate::sys::clone3::close_raw(fd) {
            tracing::warn!(fd, %errno, "cannot close the client socket in the dump agent");
        }
    }
}

/// Notifications of the agent: a round trip to the worker, which fails
/// when the worker is gone.
struct AgentNotify<'a> {
    sock: &'a OwnedFd,
}

impl Notify for AgentNotify<'_> {
    fn notify(&mut self, script: &'static str, pid: Option<i32>) -> bool {
        if worker_gone() {
            return false;
        }
        let mut msg = vec![b'N', u8::from(pid.is_some())];
        msg.extend_from_slice(&pid.unwrap_or(0).to_le_bytes());
        msg.extend_from_slice(script.as_bytes());
        if send(self.sock, &msg).is_err() {
            return false;
        }
        let mut ack = [0u8; 1];
        loop {
            match nix::sys::socket::recv(self.sock.as_fd().as_raw_fd(), &mut ack, MsgFlags::empty())
            {
                Err(Errno::EINTR) => continue,
                Ok(1) => return ack[0] == 1,
                _ => return false,
            }
        }
    }
}
