//! The `cpuid` instruction.

/// The four registers one `cpuid` leaf returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cpuid {
    pub(crate) eax: u32,
    pub(crate) ebx: u32,
    pub(crate) ecx: u32,
    pub(crate) edx: u32,
}

/// Runs `cpuid` for `leaf` / `subleaf`.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    // Newer toolchains declare the intrinsic safe; the block keeps the MSRV
    // (where it is still `unsafe fn`) building.
    #[allow(unused_unsafe)]
    // SAFETY: every x86-64 CPU implements `cpuid`; it only reads
    // identification registers and touches no memory.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}
