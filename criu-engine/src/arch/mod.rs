//! Architecture-specific details kept apart from the generic engine.
//!
//! CRIU counterparts: `compel/arch/*` and `criu/arch/*`.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
