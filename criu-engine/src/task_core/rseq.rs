//! rseq registration of a frozen thread and the critical section it may
//! have been stopped in (CRIU's `dump_thread_rseq`, `read_rseq_cs` and
//! `fixup_thread_rseq` in `criu/cr-dump.c`).
//!
//! `PTRACE_GET_RSEQ_CONFIGURATION` gives the registered `struct rseq`; its
//! `rseq_cs` pointer is read from the thread's memory before anything is
//! injected (the kernel clears it when the thread next returns to user
//! mode outside the section). A thread stopped inside a restartable
//! section goes to the section's abort handler, in the image and in the
//! live thread; with `RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL` the pointer is
//! kept in the image instead, and the restore writes it back.
//!
//! ```text
//! struct rseq:    0 cpu_id_start  4 cpu_id  8 rseq_cs (u64)  16 flags
//! struct rseq_cs: 0 version  4 flags  8 start_ip  16 post_commit_offset  24 abort_ip
//! ```
//!
//! # References
//!
//! - [rseq(2)](https://man7.org/linux/man-pages/man2/rseq.2.html),
//!   `include/uapi/linux/rseq.h`

use criu_proto::images::RseqEntry;

use super::CoreError;
use crate::arch::RemoteAddr;
use crate::seize::SeizedTask;
use crate::sys::ptrace::rseq_configuration;

/// `RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL`.
const NO_RESTART_ON_SIGNAL: u32 = 1 << 1;

/// The parts of `struct rseq_cs` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalSection {
    /// `version` (only 0 exists).
    pub version: u32,
    /// `flags` of the section, or-ed with those of `struct rseq`.
    pub flags: u32,
    /// First instruction.
    pub start_ip: u64,
    /// Length up to the commit.
    pub post_commit_offset: u64,
    /// Where an interrupted section restarts.
    pub abort_ip: u64,
}

impl CriticalSection {
    /// Decodes `struct rseq_cs` (32 bytes), adding `rseq_flags`.
    pub fn decode(raw: &[u8; 32], rseq_flags: u32) -> CriticalSection {
        let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().expect("8 bytes"));
        CriticalSection {
            version: u32_at(0),
            flags: u32_at(4) | rseq_flags,
            start_ip: u64_at(8),
            post_commit_offset: u64_at(16),
            abort_ip: u64_at(24),
        }
    }

    /// Where a thread stopped at `ip` must go on: `Some(abort_ip)` when it
    /// is inside this restartable section.
    pub fn restart_at(&self, ip: u64) -> Option<u64> {
        let inside = ip >= self.start_ip
            && ip - self.start_ip < self.post_commit_offset
            && self.start_ip != 0;
        (inside && self.flags & NO_RESTART_ON_SIGNAL == 0).then_some(self.abort_ip)
    }
}

/// The thread's rseq entry (none when the kernel cannot say), and the abort
/// handler it must continue at if it was stopped inside a section.
pub fn capture(task: &SeizedTask, ip: u64) -> Result<(Option<RseqEntry>, Option<u64>), CoreError> {
    let Ok(conf) = rseq_configuration(task.pid().as_nix()) else {
        return Ok((None, None));
    };
    let mut entry = RseqEntry {
        rseq_abi_pointer: conf.rseq_abi_pointer,
        rseq_abi_size: conf.rseq_abi_size,
        signature: conf.signature,
        rseq_cs_pointer: None,
    };
    if conf.rseq_abi_pointer == 0 {
        return Ok((Some(entry), None));
    }
    let mut rseq = [0u8; 20];
    task.read_mem(RemoteAddr(conf.rseq_abi_pointer), &mut rseq)?;
    let cs_ptr = u64::from_le_bytes(rseq[8..16].try_into().expect("8 bytes"));
    if cs_ptr == 0 {
        return Ok((Some(entry), None));
    }
    let rseq_flags = u32::from_le_bytes(rseq[16..20].try_into().expect("4 bytes"));
    let mut raw = [0u8; 32];
    task.read_mem(RemoteAddr(cs_ptr), &mut raw)?;
    let cs = CriticalSection::decode(&raw, rseq_flags);
    if cs.version != 0 {
        return Err(CoreError::RseqVersion {
            pid: task.pid(),
            version: cs.version,
        });
    }
    if cs.flags & NO_RESTART_ON_SIGNAL != 0 {
        entry.rseq_cs_pointer = Some(cs_ptr);
    }
    Ok((Some(entry), cs.restart_at(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(flags: u32) -> [u8; 32] {
        let mut r = [0u8; 32];
        r[4..8].copy_from_slice(&flags.to_le_bytes());
        r[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        r[16..24].copy_from_slice(&0x40u64.to_le_bytes());
        r[24..32].copy_from_slice(&0x2000u64.to_le_bytes());
        r
    }

    #[test]
    fn inside_a_section_goes_to_abort() {
        let cs = CriticalSection::decode(&raw(0), 0);
        assert_eq!(cs.restart_at(0x1000), Some(0x2000));
        assert_eq!(cs.restart_at(0x103f), Some(0x2000));
        assert_eq!(cs.restart_at(0x1040), None, "after the commit");
        assert_eq!(cs.restart_at(0xfff), None);
    }

    #[test]
    fn no_restart_flag_from_either_struct() {
        let cs = CriticalSection::decode(&raw(NO_RESTART_ON_SIGNAL), 0);
        assert_eq!(cs.restart_at(0x1010), None);
        let cs = CriticalSection::decode(&raw(0), NO_RESTART_ON_SIGNAL);
        assert_eq!(cs.flags, NO_RESTART_ON_SIGNAL);
        assert_eq!(cs.restart_at(0x1010), None);
    }
}
