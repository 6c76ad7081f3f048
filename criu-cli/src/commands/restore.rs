//! `criu restore -D DIR [-d] [--pidfile F] [options]`.

use std::io::Write;

use criu_engine::config::Config;
use criu_engine::notify::NoNotify;
use criu_engine::restore;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// With `-d` the restored tree is left running on its own and the exit
/// status is 0 once it runs. Without it `criu` stays the tree's parent, as
/// CRIU does, and exits with the root task's status when it ends.
pub fn run(cfg: &Config) -> u8 {
    let (ro, log_guard) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let outcome = match restore::run(&ro, &mut NoNotify) {
        Ok(outcome) => outcome,
        Err(e) => return super::fail(&e),
    };
    tracing::info!(pid = outcome.root_pid, "Restore finished successfully");
    if let Some(path) = &ro.pidfile {
        let written = std::fs::File::create(path)
            .and_then(|mut f| f.write_all(outcome.root_pid.to_string().as_bytes()));
        if let Err(e) = written {
            tracing::error!("cannot write pidfile {}: {e}", path.display());
            eprintln!("Error: cannot write pidfile {}: {e}", path.display());
            return 1;
        }
    }
    drop(log_guard);
    if ro.restore_detached {
        return 0;
    }
    wait_root(outcome.root_pid)
}

/// Waits for the restored root and turns its end into an exit status.
fn wait_root(pid: i32) -> u8 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return u8::try_from(code & 0xff).unwrap_or(1),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return u8::try_from(128 + (sig as i32)).unwrap_or(1)
            }
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("Error: cannot wait for the restored task {pid}: {e}");
                return 1;
            }
        }
    }
}
