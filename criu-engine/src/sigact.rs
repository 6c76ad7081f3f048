//! Signal dispositions as `sa_entry`s (CRIU's parasite `dump_sigact` and
//! `criu/sigact.c`).
//!
//! The 62 catchable signals of x86-64 (1..=64 without `SIGKILL` and
//! `SIGSTOP`) are asked with an injected `rt_sigaction(sig, NULL, old, 8)`
//! each (in the batch of [`crate::task_core::Queried::ask`]), the kernel's
//! `struct sigaction` landing in the injection scratch:
//!
//! ```text
//! 0 handler   8 flags   16 restorer   24 mask   (u64 each)
//! ```

use criu_proto::images::SaEntry;

/// Highest signal number on x86-64.
pub const SIGMAX: u32 = 64;

/// The signals CRIU stores, in image order.
pub fn dumped_signals() -> impl Iterator<Item = u32> {
    (1..=SIGMAX).filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32)
}

/// Bytes of the kernel's `struct sigaction`.
pub const RAW_LEN: usize = 32;

/// Decodes the kernel's `struct sigaction` (32 bytes).
pub fn decode(raw: &[u8; RAW_LEN]) -> SaEntry {
    let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    SaEntry {
        sigaction: w(0),
        flags: w(1),
        restorer: w(2),
        mask: w(3),
        compat_sigaction: Some(false),
        mask_extended: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_two_signals_in_criu_order() {
        let v: Vec<u32> = dumped_signals().collect();
        assert_eq!(v.len(), 62);
        assert_eq!(v[8], 10, "entry 8 is SIGUSR1");
        assert_eq!(v[30], 33);
        assert!(!v.contains(&9) && !v.contains(&19));
    }

    #[test]
    fn decodes_kernel_layout() {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&0x5555_0000_1234u64.to_le_bytes());
        raw[8..16].copy_from_slice(&0x0400_0004u64.to_le_bytes());
        raw[16..24].copy_from_slice(&0x7f00_0000_0010u64.to_le_bytes());
        raw[24..].copy_from_slice(&(1u64 << 11).to_le_bytes());
        let e = decode(&raw);
        assert_eq!(e.sigaction, 0x5555_0000_1234);
        assert_eq!(e.flags, 0x0400_0004);
        assert_eq!(e.restorer, 0x7f00_0000_0010);
        assert_eq!(e.mask, 1 << 11);
        assert_eq!(e.compat_sigaction, Some(false));
    }
}
