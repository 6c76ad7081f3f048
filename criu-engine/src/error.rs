//! The engine's crate-level error: gathers every module's error, and knows
//! the `cr_errno` a CRIU client expects for it (rpc-protocol.md 8.1).

/// Any failure of a request served by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Options of the request were refused (EBADRQC).
    #[error(transparent)]
    Opts(#[from] crate::opts::OptsError),
    /// A non-root service client asked for more than it may (EPERM).
    #[error(transparent)]
    Authz(#[from] crate::authz::AuthzError),
    /// The request's log could not be set up.
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// A kernel feature the engine needs is missing.
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    /// `cpuinfo.img` could not be written, read, or does not match this CPU.
    #[error(transparent)]
    Cpuinfo(#[from] crate::cpuinfo::CpuinfoError),
    /// The dump failed.
    #[error(transparent)]
    Dump(#[from] crate::dump::DumpError),
    /// The restore failed.
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    /// The dump agent failed, or the dump failed in it.
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    /// The page server failed to start.
    #[error(transparent)]
    PageServer(#[from] crate::page_server::PageServerActionError),
    /// A swrk worker was asked to dump its own requester, i.e. its parent.
    #[error(
        "The criu itself is within dumped tree: a self-dump needs a detached worker or the service"
    )]
    SelfDumpInTree,
    /// FEATURE_CHECK without a `features` message.
    #[error("feature check request carries no features to check")]
    NoFeatures,
    /// The request needs an images directory and none was derived.
    #[error("no images directory for this request")]
    NoImagesDir,
    /// WAIT_PID failed.
    #[error("cannot wait for pid {pid}")]
    WaitPid {
        /// The pid asked for.
        pid: u32,
        /// Why `waitpid` failed.
        #[source]
        source: nix::Error,
    },
    /// The client answered a notification negatively, or went away.
    #[error("notification {script} failed on the client side")]
    NotifyFailed {
        /// Name of the notification.
        script: &'static str,
    },
    /// The action is not implemented by the engine yet.
    #[error("{action} is not implemented yet by this engine")]
    NotImplemented {
        /// What was asked.
        action: &'static str,
    },
    /// EMPTY or NOTIFY reached the handler (the request loop filters them).
    #[error("invalid request type")]
    InvalidRequest,
}

impl Error {
    /// The `cr_errno` a CRIU client expects for this error, if any.
    pub fn cr_errno(&self) -> Option<i32> {
        match self {
            Error::Opts(e) => Some(e.cr_errno()),
            Error::Authz(e) => Some(e.cr_errno()),
            Error::Cpuinfo(e) => Some(e.cr_errno()).filter(|&errno| errno != 0),
            Error::NotImplemented { .. } => Some(libc::ENOSYS),
            Error::Dump(e) => e.cr_errno(),
            Error::Restore(e) => e.cr_errno(),
            Error::Agent(e) => e.cr_errno(),
            Error::NoImagesDir => Some(libc::EBADRQC),
            _ => None,
        }
    }
}
