//! The last step: the dumped registers and extended state (CRIU's final
//! `rt_sigreturn` of `criu/pie/restorer.c`, the sigframe built from the core
//! image in `criu/arch/x86/sigframe.c` and `criu/arch/x86/crtools.c`).
//!
//! Instead of a signal frame, the engine sets the registers at the
//! syscall-exit stop of the injected `munmap` of the stub, so the task leaves
//! the kernel straight into its own code. `fs_base`/`gs_base` travel with the
//! general registers; the FPU state is rebuilt as a standard-format XSAVE
//! area.
//!
//! # References
//!
//! - Intel SDM vol. 1, 13.4 "XSAVE area" (legacy region, header, components)

use std::sync::OnceLock;

use criu_proto::images::{UserX86FpregsEntry, UserX86RegsEntry};

use crate::arch::x86_64::{restart_adjusted, UserRegs};
use crate::sys::cpuid::cpuid;

/// Bytes of the FXSAVE (legacy) region.
const LEGACY: usize = 512;
/// Bytes of legacy region plus XSAVE header.
const LEGACY_AND_HEADER: usize = 576;
/// x87 and SSE state bits of `XSTATE_BV`.
const XFEATURE_FP_SSE: u64 = 0x3;

/// The general registers of the image, made ready to return to user mode:
/// a pending syscall restart is resolved and `orig_rax` is -1.
pub(crate) fn regs_from_image(g: &UserX86RegsEntry) -> UserRegs {
    let regs = UserRegs {
        r15: g.r15,
        r14: g.r14,
        r13: g.r13,
        r12: g.r12,
        rbp: g.bp,
        rbx: g.bx,
        r11: g.r11,
        r10: g.r10,
        r9: g.r9,
        r8: g.r8,
        rax: g.ax,
        rcx: g.cx,
        rdx: g.dx,
        rsi: g.si,
        rdi: g.di,
        orig_rax: g.orig_ax,
        rip: g.ip,
        cs: g.cs,
        eflags: g.flags,
        rsp: g.sp,
        ss: g.ss,
        fs_base: g.fs_base,
        gs_base: g.gs_base,
        ds: g.ds,
        es: g.es,
        fs: g.fs,
        gs: g.gs,
    };
    let mut regs = restart_adjusted(&regs);
    regs.orig_rax = u64::MAX;
    regs
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn words32(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn words64(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Builds the `NT_X86_XSTATE` buffer for `fp`, starting from `current` (the
/// task's present buffer, which has the right size and reserved bytes).
pub(crate) fn xstate_from_image(fp: &UserX86FpregsEntry, current: &[u8]) -> Vec<u8> {
    let mut buf = current.to_vec();
    if buf.len() < LEGACY_AND_HEADER {
        buf.resize(LEGACY_AND_HEADER, 0);
    }
    // Legacy FXSAVE region.
    put(
        &mut buf,
        0,
        &u16::try_from(fp.cwd & 0xffff).unwrap_or(0).to_le_bytes(),
    );
    put(
        &mut buf,
        2,
        &u16::try_from(fp.swd & 0xffff).unwrap_or(0).to_le_bytes(),
    );
    put(
        &mut buf,
        4,
        &u16::try_from(fp.twd & 0xffff).unwrap_or(0).to_le_bytes(),
    );
    put(
        &mut buf,
        6,
        &u16::try_from(fp.fop & 0xffff).unwrap_or(0).to_le_bytes(),
    );
    put(&mut buf, 8, &fp.rip.to_le_bytes());
    put(&mut buf, 16, &fp.rdp.to_le_bytes());
    put(&mut buf, 24, &fp.mxcsr.to_le_bytes());
    put(&mut buf, 28, &fp.mxcsr_mask.to_le_bytes());
    put(
        &mut buf,
        32,
        &words32(&fp.st_space[..32.min(fp.st_space.len())]),
    );
    put(
        &mut buf,
        160,
        &words32(&fp.xmm_space[..64.min(fp.xmm_space.len())]),
    );
    // XSAVE header: XSTATE_BV, then XCOMP_BV and reserved words all zero.
    buf[LEGACY + 8..LEGACY_AND_HEADER].fill(0);
    let supported = {
        let (eax, _, edx) = xsave_leaf(0);
        u64::from(eax) | (u64::from(edx) << 32)
    };
    let mut bv = XFEATURE_FP_SSE;
    if let Some(x) = &fp.xsave {
        let comps: [(u32, Vec<u8>); 7] = [
            (2, words32(&x.ymmh_space)),
            (3, words64(&x.bndreg_state)),
            (4, words64(&x.bndcsr_state)),
            (5, words64(&x.opmask_reg)),
            (6, words64(&x.zmm_upper)),
            (7, words64(&x.hi16_zmm)),
            (9, words32(&x.pkru)),
        ];
        bv = x.xstate_bv & XFEATURE_FP_SSE;
        for (bit, bytes) in comps {
            if bytes.is_empty() || supported & (1 << bit) == 0 || x.xstate_bv & (1 << bit) == 0 {
                continue;
            }
            let (eax, ebx, _) = xsave_leaf(bit);
            let (off, size) = (ebx as usize, eax as usize);
            if off < LEGACY_AND_HEADER || off + size > buf.len() {
                continue;
            }
            put(&mut buf, off, &bytes[..size.min(bytes.len())]);
            bv |= 1 << bit;
        }
    }
    put(&mut buf, LEGACY, &bv.to_le_bytes());
    buf
}

/// `cpuid` leaf 0xd, sub-leaf `sub` (below 64): `(eax, ebx, edx)`, asked
/// once per sub-leaf (`cpuid` may trap to a hypervisor, and every restored
/// thread needs it).
fn xsave_leaf(sub: u32) -> (u32, u32, u32) {
    static LEAVES: [OnceLock<(u32, u32, u32)>; 64] = [const { OnceLock::new() }; 64];
    *LEAVES[sub as usize % 64].get_or_init(|| {
        let r = cpuid(0xd, sub);
        (r.eax, r.ebx, r.edx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_proto::images::UserX86XsaveEntry;

    fn fpregs() -> UserX86FpregsEntry {
        UserX86FpregsEntry {
            cwd: 0x37f,
            mxcsr: 0x1f80,
            mxcsr_mask: 0x2ffff,
            st_space: vec![0; 32],
            xmm_space: (0..64).collect(),
            xsave: Some(UserX86XsaveEntry {
                xstate_bv: 0x7,
                ymmh_space: vec![0xabcd_ef01; 64],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_region_and_header() {
        let buf = xstate_from_image(&fpregs(), &[0xff; 1024]);
        assert_eq!(&buf[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(&buf[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&buf[160 + 4..160 + 8], &1u32.to_le_bytes());
        let bv = u64::from_le_bytes(buf[512..520].try_into().unwrap());
        assert_eq!(bv & 0x3, 0x3);
        assert!(
            buf[520..576].iter().all(|&b| b == 0),
            "xcomp_bv and reserved"
        );
        assert_eq!(buf.len(), 1024);
    }

    #[test]
    fn restart_is_resolved_and_orig_cleared() {
        let g = UserX86RegsEntry {
            ax: (-4i64) as u64,
            orig_ax: 230,
            ip: 0x1002,
            cs: 0x33,
            ss: 0x2b,
            ..Default::default()
        };
        let r = regs_from_image(&g);
        assert_eq!(r.rax as i64, -4);
        assert_eq!(r.rip, 0x1002);
        assert_eq!(r.orig_rax, u64::MAX);
        let g = UserX86RegsEntry {
            ax: (-512i64) as u64,
            ..g
        };
        let r = regs_from_image(&g);
        assert_eq!((r.rax, r.rip), (230, 0x1000));
    }
}
