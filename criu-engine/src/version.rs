//! The CRIU release we implement, as VERSION requests and `criu --version`
//! report it.
//!
//! CRIU counterpart: `handle_version()` in `criu/cr-service.c` and the
//! `--version` branch of `criu/config.c`. Clients compute
//! `major * 10000 + minor * 100 + sublevel` and gate features on it
//! (rpc-protocol.md 9.1), so we report the release whose behaviour and image
//! format we match, with no `gitid` (which would make clients round up) and no
//! `sublevel` (0).

use criu_proto::rpc::CriuVersion;

/// `(major, minor)` of the CRIU release this engine is compatible with.
pub const CRIU_COMPAT: (i32, i32) = (4, 2);

/// Our own name and version, sent in `CriuVersion.name`.
fn name() -> String {
    format!("criu-rs {}", env!("CARGO_PKG_VERSION"))
}

/// The VERSION response payload.
#[doc(alias = "handle_version")]
pub fn version() -> CriuVersion {
    CriuVersion {
        major_number: CRIU_COMPAT.0,
        minor_number: CRIU_COMPAT.1,
        gitid: None,
        sublevel: None,
        extra: None,
        name: Some(name()),
    }
}

/// What `criu --version` prints: CRIU's `Version: X.Y` line (which scripts
/// parse), then our name.
pub fn version_string() -> String {
    format!(
        "Version: {}.{}\nName: {}\n",
        CRIU_COMPAT.0,
        CRIU_COMPAT.1,
        name()
    )
}
