//! x86-64 registers in CRIU's `thread_info_x86` layout (CRIU's
//! `criu/arch/x86/crtools.c` `save_task_regs`, `compel/arch/x86`).
//!
//! General registers come from `PTRACE_GETREGS` unchanged (a task stopped in
//! a syscall keeps its raw `ax`/`orig_ax`/`ip`, which restore uses to
//! restart the call). The FPU state comes from `NT_X86_XSTATE`, a standard
//! (non-compacted) XSAVE area:
//!
//! ```text
//!   0 fcw fsw ftw fop | 8 rip | 16 rdp | 24 mxcsr mxcsr_mask
//!  32 st_space[32 x u32] | 160 xmm_space[64 x u32] | 416 padding
//! 512 xsave header: xstate_bv (u64), ...
//!     components at the offsets CPUID leaf 0xd gives
//! ```

use criu_proto::images::{
    UserDescT, UserX86CetEntry, UserX86FpregsEntry, UserX86RegsEntry, UserX86RegsMode,
    UserX86XsaveEntry,
};

use crate::arch::x86_64::CpuInfo;
use crate::arch::UserRegs;
use crate::sys::cpuid::cpuid;
use crate::sys::task_query::UserDesc;

/// `OSXSAVE` feature bit (cpuid 1 ecx 27).
const OSXSAVE: u32 = 4 * 32 + 27;
/// `SHSTK` feature bit (cpuid 7.0 ecx 7).
const SHSTK: u32 = 11 * 32 + 7;
/// First GDT TLS slot on x86-64.
pub const GDT_ENTRY_TLS_MIN: u32 = 12;
/// Number of TLS slots.
pub const GDT_ENTRY_TLS_NUM: u32 = 3;

/// General registers in image form.
pub fn gpregs(r: &UserRegs) -> UserX86RegsEntry {
    UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(UserX86RegsMode::Native as i32),
    }
}

fn u16_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]).into())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}
fn words32(b: &[u8], off: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| u32_at(b, off + 4 * i)).collect()
}
fn words64(b: &[u8], off: usize, n: usize) -> Vec<u64> {
    (0..n).map(|i| u64_at(b, off + 8 * i)).collect()
}

/// Where XSAVE component `i` (below 64) sits in the standard format (asked
/// with `cpuid` once per component).
fn component_offset(i: u32) -> usize {
    static OFFSETS: [std::sync::OnceLock<usize>; 64] = [const { std::sync::OnceLock::new() }; 64];
    *OFFSETS[i as usize % 64].get_or_init(|| cpuid(0xd, i).ebx as usize)
}

/// The CPU features that decide which components CRIU stores.
#[derive(Debug, Clone, Copy)]
pub struct FpuFeatures {
    /// `OSXSAVE`: the `xsave` sub-message is written.
    pub osxsave: bool,
    /// Shadow stacks: a `cet` entry is written.
    pub shstk: bool,
    /// User XSAVE components the CPU supports (bit per component).
    pub xfeatures: u64,
}

impl FpuFeatures {
    /// What this machine has (asked once: `cpuid` may trap to a
    /// hypervisor, and every dumped thread needs the answer).
    pub fn host() -> FpuFeatures {
        static HOST: std::sync::OnceLock<FpuFeatures> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| match CpuInfo::host() {
            Ok(c) => FpuFeatures {
                osxsave: c.has(OSXSAVE),
                shstk: c.has(SHSTK),
                xfeatures: c.xfeatures_mask,
            },
            Err(_) => FpuFeatures {
                osxsave: false,
                shstk: false,
                xfeatures: 0,
            },
        })
    }
}

/// FPU/SSE/AVX state from an `NT_X86_XSTATE` buffer.
pub fn fpregs(x: &[u8], f: FpuFeatures) -> UserX86FpregsEntry {
    let mut e = UserX86FpregsEntry {
        cwd: u16_at(x, 0),
        swd: u16_at(x, 2),
        twd: u16_at(x, 4),
        fop: u16_at(x, 6),
        rip: u64_at(x, 8),
        rdp: u64_at(x, 16),
        mxcsr: u32_at(x, 24),
        mxcsr_mask: u32_at(x, 28),
        st_space: words32(x, 32, 32),
        xmm_space: words32(x, 160, 64),
        padding: Vec::new(),
        xsave: None,
    };
    if f.osxsave {
        let has = |i: u32| f.xfeatures & (1 << i) != 0;
        let mut xs = UserX86XsaveEntry {
            xstate_bv: u64_at(x, 512),
            ..Default::default()
        };
        if has(2) {
            xs.ymmh_space = words32(x, component_offset(2), 64);
        }
        if has(3) {
            xs.bndreg_state = words64(x, component_offset(3), 8);
        }
        if has(4) {
            xs.bndcsr_state = words64(x, component_offset(4), 8);
        }
        if has(5) {
            xs.opmask_reg = words64(x, component_offset(5), 8);
        }
        if has(6) {
            xs.zmm_upper = words64(x, component_offset(6), 64);
        }
        if has(7) {
            xs.hi16_zmm = words64(x, component_offset(7), 128);
        }
        if has(9) {
            xs.pkru = words32(x, component_offset(9), 2);
        }
        if f.shstk {
            xs.cet = Some(UserX86CetEntry { cet: 0, ssp: 0 });
        }
        e.xsave = Some(xs);
    }
    e
}

/// A TLS slot in image form.
pub(crate) fn tls(d: &UserDesc) -> UserDescT {
    let bit = |n: u32| d.flags & (1 << n) != 0;
    UserDescT {
        entry_number: d.entry_number,
        base_addr: d.base_addr,
        limit: d.limit,
        seg_32bit: bit(0),
        contents_h: bit(2),
        contents_l: bit(1),
        read_exec_only: bit(3),
        limit_in_pages: bit(4),
        seg_not_present: bit(5),
        usable: bit(6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fxsave_fields() {
        let mut x = vec![0u8; 576];
        x[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        x[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        x[28..32].copy_from_slice(&0x2ffffu32.to_le_bytes());
        x[160..164].copy_from_slice(&7u32.to_le_bytes());
        x[512..520].copy_from_slice(&2u64.to_le_bytes());
        let no_xsave = FpuFeatures {
            osxsave: false,
            shstk: false,
            xfeatures: 0,
        };
        let e = fpregs(&x, no_xsave);
        assert_eq!((e.cwd, e.mxcsr, e.mxcsr_mask), (895, 8064, 196607));
        assert_eq!(e.st_space.len(), 32);
        assert_eq!(e.xmm_space.len(), 64);
        assert_eq!(e.xmm_space[0], 7);
        assert!(e.xsave.is_none());
        let sse_only = FpuFeatures {
            osxsave: true,
            shstk: false,
            xfeatures: 3,
        };
        let xs = fpregs(&x, sse_only).xsave.expect("xsave");
        assert_eq!(xs.xstate_bv, 2);
        assert!(xs.ymmh_space.is_empty() && xs.cet.is_none());
    }

    #[test]
    fn empty_tls_slot_like_criu() {
        let d = UserDesc {
            entry_number: 12,
            base_addr: 0,
            limit: 0,
            flags: (1 << 3) | (1 << 5),
        };
        let t = tls(&d);
        assert!(t.read_exec_only && t.seg_not_present);
        assert!(!t.seg_32bit && !t.usable && !t.contents_h && !t.contents_l);
    }
}
