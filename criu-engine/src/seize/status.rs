//! The few lines of `/proc/<pid>/status` that seizing needs.
//!
//! CRIU counterpart: `parse_pid_status` in `compel/src/lib/infect.c`.
//!
//! # References
//!
//! - [proc_pid_status(5)](https://man7.org/linux/man-pages/man5/proc_pid_status.5.html)

use crate::pstree::RealPid;

/// Scheduler state letter and signal masks of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TaskStatus {
    /// `State:` letter (`R`, `S`, `D`, `T`, `t`, `Z`, ...).
    pub(crate) state: char,
    /// `Seccomp:` mode (0 disabled, 1 strict, 2 filter).
    pub(crate) seccomp_mode: u32,
    /// `SigPnd:` signals pending for the thread.
    pub(crate) sigpnd: u64,
    /// `ShdPnd:` signals pending for the whole process.
    pub(crate) shdpnd: u64,
    /// `SigBlk:` blocked signals.
    pub(crate) sigblk: u64,
}

impl TaskStatus {
    /// Parses the text of a status file; unknown or missing lines leave the
    /// defaults (state `?`).
    pub(crate) fn parse(text: &str) -> Self {
        let mut st = Self {
            state: '?',
            ..Self::default()
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).unwrap_or(0);
            match key {
                "State" => st.state = value.chars().next().unwrap_or('?'),
                "Seccomp" => st.seccomp_mode = value.parse().unwrap_or(0),
                "SigPnd" => st.sigpnd = hex(),
                "ShdPnd" => st.shdpnd = hex(),
                "SigBlk" => st.sigblk = hex(),
                _ => {}
            }
        }
        st
    }

    /// Reads `/proc/<pid>/status` (which also exists for non-leader tids).
    pub(crate) fn read(pid: RealPid) -> std::io::Result<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/status")).map(|t| Self::parse(&t))
    }

    /// Whether `sig` is pending for the thread or the process.
    pub(crate) fn pending(&self, sig: nix::sys::signal::Signal) -> bool {
        let bit = 1u64 << (sig as i32 - 1);
        (self.sigpnd | self.shdpnd) & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_needed_lines() {
        let text = "Name:\tcat\nState:\tT (stopped)\nTgid:\t7\nSigPnd:\t0000000000000400\n\
                    ShdPnd:\t0000000000020000\nSigBlk:\t0000000000010000\nSeccomp:\t2\n";
        let st = TaskStatus::parse(text);
        assert_eq!(st.state, 'T');
        assert_eq!(st.seccomp_mode, 2);
        assert_eq!((st.sigpnd, st.shdpnd, st.sigblk), (0x400, 0x20000, 0x10000));
        assert!(st.pending(nix::sys::signal::Signal::SIGSEGV));
        assert!(st.pending(nix::sys::signal::Signal::SIGCONT));
        assert!(!st.pending(nix::sys::signal::Signal::SIGTRAP));
    }

    #[test]
    fn missing_lines_give_defaults() {
        let st = TaskStatus::parse("Name:\tx\n");
        assert_eq!(st.state, '?');
        assert_eq!(st.sigpnd, 0);
    }
}
