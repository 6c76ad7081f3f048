//! x86-64 CPU identification in CRIU's layout.
//!
//! CRIU counterparts: `compel/arch/x86/src/lib/cpu.c` (`compel_cpuid`,
//! `compel_fpuid`), `compel/arch/x86/src/lib/include/uapi/asm/cpu.h` (the
//! capability word layout, an on-disk ABI of `cpuinfo.img`) and the
//! instruction mask of `criu/arch/x86/cpu.c`.
//!
//! Capability words (32 bits each, `NCAPINTS` = 19 in version 2):
//!
//! ```text
//!  0 cpuid 1 edx           7 Linux-defined (0)     14 cpuid 6 eax
//!  1 cpuid 8000_0001 edx   8 Linux-defined (0)     15 cpuid 8000_000a edx
//!  2 Transmeta (0)         9 cpuid 7.0 ebx         16 cpuid f.0 edx
//!  3 Linux-defined         10 cpuid d.1 eax        17 cpuid 8000_0007 ebx
//!  4 cpuid 1 ecx           11 cpuid 7.0 ecx        18 cpuid 7.0 edx
//!  5 Centaur (0)           12 cpuid f.1 edx
//!  6 cpuid 8000_0001 ecx   13 cpuid 8000_0008 ebx
//! ```
//!
//! # References
//!
//! - Intel SDM vol. 2A, CPUID; AMD APM vol. 3, CPUID

use crate::sys::cpuid::cpuid;

mod regs;

pub use regs::*;

/// Capability words in image version 1.
pub(crate) const NCAPINTS_V1: usize = 12;
/// Capability words in image version 2 (what we write).
pub(crate) const NCAPINTS_V2: usize = 19;
/// Capability words we keep.
pub(crate) const NCAPINTS: usize = NCAPINTS_V2;
/// The capability layout version we write.
pub(crate) const CAPABILITY_VER: u32 = 2;

/// Feature bit numbers (`word * 32 + bit`) used by the engine.
pub(crate) mod feature {
    pub(crate) const FPU: u32 = 0;
    pub(crate) const FXSR: u32 = 24;
    pub(crate) const XMM: u32 = 25;
    pub(crate) const REP_GOOD: u32 = 3 * 32 + 16;
    pub(crate) const NOPL: u32 = 3 * 32 + 20;
    pub(crate) const CPUID: u32 = 3 * 32 + 25;
    pub(crate) const XSAVE: u32 = 4 * 32 + 26;
    pub(crate) const OSXSAVE: u32 = 4 * 32 + 27;
    pub(crate) const AVX: u32 = 4 * 32 + 28;
    pub(crate) const ERMS: u32 = 9 * 32 + 9;
    pub(crate) const MPX: u32 = 9 * 32 + 14;
    pub(crate) const AVX512F: u32 = 9 * 32 + 16;
    pub(crate) const INTEL_PT: u32 = 9 * 32 + 25;
    pub(crate) const XSAVES: u32 = 10 * 32 + 3;
    pub(crate) const PKU: u32 = 11 * 32 + 3;
    pub(crate) const HDC: u32 = 14 * 32 + 13;
    pub(crate) const CQM_LLC: u32 = 16 * 32 + 1;
}

/// Instruction-level features compared by `cpu_cap` INS, as `(word, bits)`.
#[rustfmt::skip]
const INS_BITS: &[(usize, &[u32])] = &[
    // fpu tsc cx8 sep cmov clflush mmx fxsr sse sse2
    (0, &[0, 4, 8, 11, 15, 19, 23, 24, 25, 26]),
    // syscall mmxext rdtscp 3dnowext 3dnow
    (1, &[11, 22, 27, 30, 31]),
    // rep_good nopl
    (3, &[16, 20]),
    // sse3 pclmulqdq monitor ssse3 cx16 sse4.1 sse4.2 movbe popcnt aes xsave
    // osxsave avx f16c rdrand
    (4, &[0, 1, 3, 9, 13, 19, 20, 22, 23, 25, 26, 27, 28, 29, 30]),
    // abm sse4a misalignsse 3dnowprefetch xop fma4 tbm
    (6, &[5, 6, 7, 8, 11, 16, 21]),
    // fsgsbase bmi1 hle avx2 bmi2 erms rtm mpx avx512f avx512dq rdseed adx
    // clflushopt avx512pf avx512er avx512cd sha_ni avx512bw avx512vl
    (9, &[0, 3, 4, 5, 8, 9, 11, 14, 16, 17, 18, 19, 23, 26, 27, 28, 29, 30, 31]),
    // xsaveopt xsavec xgetbv1
    (10, &[0, 1, 2]),
    // avx512vbmi avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg
    // tme avx512_vpopcntdq rdpid
    (11, &[1, 6, 8, 9, 10, 11, 12, 13, 14, 22]),
    // clzero
    (13, &[0]),
    // avx512_4vnniw avx512_4fmaps
    (18, &[2, 3]),
];

/// Per-word mask of the instruction-level features.
pub(crate) fn ins_mask() -> [u32; NCAPINTS] {
    let mut mask = [0u32; NCAPINTS];
    for &(word, bits) in INS_BITS {
        for &bit in bits {
            mask[word] |= 1 << bit;
        }
    }
    mask
}

/// XSAVE components and the CPUID feature that must be present for each.
const XSAVE_CPUID_FEATURES: [u32; 11] = [
    feature::FPU,
    feature::XMM,
    feature::AVX,
    feature::MPX,
    feature::MPX,
    feature::AVX512F,
    feature::AVX512F,
    feature::AVX512F,
    feature::INTEL_PT,
    feature::PKU,
    feature::HDC,
];
/// FP | SSE | YMM | BNDREGS | BNDCSR | OPMASK | ZMM_Hi256 | Hi16_ZMM | PKRU.
const XFEATURE_MASK_USER: u64 = 0x2ff;
/// The "supervisor" mask exactly as CRIU 4.2 computes it: the PT mask (bit 8)
/// OR-ed with the *index* of HDC (10) rather than its mask, which also clears
/// SSE (bit 1) and BNDREGS (bit 3). Reproduced so that our `xfeatures_mask`
/// equals CRIU's for the same CPU.
const XFEATURE_MASK_SUPERVISOR_AS_CRIU: u64 = (1 << 8) | 10;
const XFEATURE_MASK_FPSSE: u64 = 0x3;

/// CPU vendors CRIU knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` or `HygonGenuine`.
    Amd,
}

/// What CRIU records about a CPU (`compel_cpuinfo_t`, the parts that reach
/// the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuInfo {
    pub(crate) vendor: Vendor,
    pub(crate) family: u32,
    pub(crate) model: u32,
    pub(crate) stepping: u32,
    pub(crate) capability: [u32; NCAPINTS],
    pub(crate) model_id: String,
    pub(crate) xfeatures_mask: u64,
    pub(crate) xsave_size: u32,
    pub(crate) xsave_size_max: u32,
}

/// Whether feature bit `f` is set in `caps`.
pub(crate) fn test_bit(caps: &[u32; NCAPINTS], f: u32) -> bool {
    let word = (f / 32) as usize;
    word < NCAPINTS && caps[word] & (1 << (f % 32)) != 0
}

impl CpuInfo {
    fn set(&mut self, f: u32) {
        self.capability[(f / 32) as usize] |= 1 << (f % 32);
    }

    fn clear(&mut self, f: u32) {
        self.capability[(f / 32) as usize] &= !(1 << (f % 32));
    }

    /// Whether the CPU has feature bit `f`.
    pub(crate) fn has(&self, f: u32) -> bool {
        test_bit(&self.capability, f)
    }

    /// Identifies the CPU we run on. Fails only for vendors CRIU does not
    /// support, returning the vendor string.
    #[doc(alias = "compel_cpuid")]
    pub(crate) fn host() -> Result<Self, String> {
        let l0 = cpuid(0, 0);
        let level = l0.eax;
        let mut vendor_id = Vec::with_capacity(12);
        for reg in [l0.ebx, l0.edx, l0.ecx] {
            vendor_id.extend_from_slice(&reg.to_le_bytes());
        }
        let vendor = match &vendor_id[..] {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            other => return Err(String::from_utf8_lossy(other).into_owned()),
        };
        let mut c = Self {
            vendor,
            family: 4,
            model: 0,
            stepping: 0,
            capability: [0; NCAPINTS],
            model_id: String::new(),
            xfeatures_mask: 0,
            xsave_size: 0,
            xsave_size_max: 0,
        };
        if level >= 1 {
            let r = cpuid(1, 0);
            c.family = (r.eax >> 8) & 0xf;
            c.model = (r.eax >> 4) & 0xf;
            c.stepping = r.eax & 0xf;
            if c.family == 0xf {
                c.family += (r.eax >> 20) & 0xff;
            }
            if c.family >= 6 {
                c.model += ((r.eax >> 16) & 0xf) << 4;
            }
            c.capability[0] = r.edx;
            c.capability[4] = r.ecx;
        }
        if level >= 6 {
            c.capability[14] = cpuid(6, 0).eax;
        }
        if level >= 7 {
            let r = cpuid(7, 0);
            c.capability[9] = r.ebx;
            c.capability[11] = r.ecx;
            c.capability[18] = r.edx;
        }
        if level >= 0xd {
            c.capability[10] = cpuid(0xd, 1).eax;
        }
        if level >= 0xf {
            c.capability[16] = cpuid(0xf, 0).edx;
            if c.has(feature::CQM_LLC) {
                c.capability[12] = cpuid(0xf, 1).edx;
            }
        }
        let ext = cpuid(0x8000_0000, 0).eax;
        if ext & 0xffff_0000 == 0x8000_0000 && ext >= 0x8000_0001 {
            let r = cpuid(0x8000_0001, 0);
            c.capability[6] = r.ecx;
            c.capability[1] = r.edx;
        }
        if ext >= 0x8000_0004 {
            c.model_id = brand_string();
        }
        if ext >= 0x8000_0007 {
            c.capability[17] = cpuid(0x8000_0007, 0).ebx;
        }
        if ext >= 0x8000_000a {
            c.capability[15] = cpuid(0x8000_000a, 0).edx;
        }
        if ext >= 0x8000_0008 {
            c.capability[13] = cpuid(0x8000_0008, 0).ebx;
        }
        // Always true on x86-64.
        c.set(feature::CPUID);
        c.set(feature::NOPL);
        // The kernel hides XSAVE when leaf 0xd is missing.
        // (CRIU compares as signed: levels >= 0x8000_0000 count as negative.)
        if !(0xd..0x8000_0000).contains(&level) {
            c.clear(feature::XSAVE);
        }
        c.vendor_quirks();
        c.fill_xsave();
        Ok(c)
    }

    /// The few `early_init_{intel,amd}` adjustments CRIU mirrors.
    fn vendor_quirks(&mut self) {
        match self.vendor {
            Vendor::Intel => {
                if self.family == 15 {
                    self.clear(feature::REP_GOOD);
                    self.clear(feature::ERMS);
                } else if self.family == 6 {
                    self.set(feature::REP_GOOD);
                }
            }
            Vendor::Amd => {
                // Bit 31 of leaf 1 edx is a non-standard 3DNow flag on AMD.
                self.clear(31);
                if self.family >= 0x10 {
                    self.set(feature::REP_GOOD);
                }
                if self.family == 0xf {
                    let sig = cpuid(1, 0).eax;
                    if (0x0f48..0x0f50).contains(&sig) || sig >= 0x0f58 {
                        self.set(feature::REP_GOOD);
                    }
                }
            }
        }
    }

    /// XSAVE feature mask and frame sizes (`compel_fpuid`).
    #[doc(alias = "compel_fpuid")]
    fn fill_xsave(&mut self) {
        if !self.has(feature::FPU) || !self.has(feature::XSAVE) {
            return;
        }
        let r = cpuid(0xd, 0);
        self.xfeatures_mask = u64::from(r.eax) | (u64::from(r.edx) << 32);
        if self.xfeatures_mask & XFEATURE_MASK_FPSSE != XFEATURE_MASK_FPSSE {
            // CRIU gives up here, leaving the raw mask and no sizes.
            return;
        }
        for (i, &f) in XSAVE_CPUID_FEATURES.iter().enumerate() {
            if !self.has(f) {
                self.xfeatures_mask &= !(1 << i);
            }
        }
        self.xfeatures_mask &= XFEATURE_MASK_USER;
        self.xfeatures_mask &= !XFEATURE_MASK_SUPERVISOR_AS_CRIU;
        self.xsave_size = r.ebx;
        self.xsave_size_max = r.ecx;
    }
}

/// The 48-byte brand string of leaves 0x8000_0002..4, leading spaces removed,
/// cut at the first NUL.
fn brand_string() -> String {
    let mut raw = Vec::with_capacity(48);
    for leaf in 0x8000_0002..=0x8000_0004 {
        let r = cpuid(leaf, 0);
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            raw.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = &raw[..end];
    let start = text.iter().position(|&b| b != b' ').unwrap_or(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}
