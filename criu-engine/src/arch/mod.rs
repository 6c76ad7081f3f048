//! Architecture-specific details kept apart from the generic engine.
//!
//! CRIU counterparts: `compel/arch/*` and `criu/arch/*`.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use x86_64::{nr, RemoteAddr, UserRegs};
