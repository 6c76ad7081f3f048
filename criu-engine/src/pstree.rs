//! The process tree: for now only the two kinds of pid the engine handles.
//!
//! CRIU keeps both numbers in `struct pid` (`criu/include/pid.h`): `real` is
//! the pid in the engine's pid namespace, the one ptrace and `/proc` take;
//! `virt` is the pid the task sees in its own namespace, the one written to
//! images. Distinct types keep them from being mixed up.

use std::fmt;

use nix::unistd::Pid;

/// A host pid (or tid) the engine traces and finds in its own `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealPid(pub i32);

/// A pid as the task sees it in its pid namespace, as stored in images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtPid(pub i32);

impl RealPid {
    /// The same pid as `nix` wants it.
    pub fn as_nix(self) -> Pid {
        Pid::from_raw(self.0)
    }
}

impl fmt::Display for RealPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for VirtPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Pid> for RealPid {
    fn from(pid: Pid) -> Self {
        Self(pid.as_raw())
    }
}
