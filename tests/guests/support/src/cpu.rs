//! CPU helpers for guests: CPUID, fenced RDTSC, Cordon detection, the DONE hypercall and
//! ending a run (hypercall under Cordon, Bochs magic breakpoint natively).

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

/// CPUID leaf where hypervisors report their vendor signature.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// Cordon's vendor signature in EBX, ECX, EDX of [`HYPERVISOR_LEAF`].
pub const CORDON_SIGNATURE: &[u8; 12] = b"CordonCordon";
/// Hypercall number (EAX of `vmcall`) that reports the guest's result and ends the VM.
pub const HYPERCALL_DONE: u32 = 1;

/// Runs CPUID with the given leaf and subleaf.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// The initial APIC ID of this CPU (CPUID.1:EBX bits 31:24).
pub fn initial_apic_id() -> u32 {
    cpuid(1, 0).ebx >> 24
}

/// Whether EBX, ECX, EDX of the hypervisor leaf spell Cordon's signature.
pub fn is_cordon_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&ecx.to_le_bytes());
    vendor[8..12].copy_from_slice(&edx.to_le_bytes());
    &vendor == CORDON_SIGNATURE
}

/// Whether this guest runs under Cordon (hypervisor leaf returns "CordonCordon").
pub fn running_under_cordon() -> bool {
    let leaf = cpuid(HYPERVISOR_LEAF, 0);
    is_cordon_signature(leaf.ebx, leaf.ecx, leaf.edx)
}

/// Reads the TSC between two LFENCEs, so earlier instructions have completed and later
/// ones have not started.
pub fn rdtsc_fenced() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: LFENCE and RDTSC only read the time-stamp counter (CR4.TSD is clear in
    // the guests' ring 0).
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "lfence",
            out("eax") low,
            out("edx") high,
            options(nostack, preserves_flags),
        );
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Ends the run under Cordon: `vmcall` DONE with EBX = 0 (pass) or 1 (fail) and
/// ECX = the number of emulated instructions the guest executed.
///
/// # Safety
/// Only under Cordon (see [`running_under_cordon`]): elsewhere `vmcall` raises #UD.
pub unsafe fn hypercall_done(passed: bool, trapped_instructions: u32) {
    // SAFETY: the caller checked that Cordon is there; the hypercall only reads
    // EAX/EBX/ECX and ends the VM.
    unsafe {
        asm!(
            "xchg rbx, {verdict}",
            "vmcall",
            "xchg rbx, {verdict}",
            verdict = inout(reg) u64::from(!passed) => _,
            in("eax") HYPERCALL_DONE,
            in("ecx") trapped_instructions,
            options(nostack),
        );
    }
}

/// Bochs's magic breakpoint (`xchg bx, bx` with `magic_break: enabled=1`): the debugger
/// stops and runs the next command of its rc file (`quit`). A no-op elsewhere.
pub fn bochs_magic_breakpoint() {
    // SAFETY: exchanging BX with itself changes nothing.
    unsafe { asm!("xchg bx, bx", options(nomem, nostack, preserves_flags)) };
}

/// Stops this CPU for good (interrupts off, HLT loop).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stop this CPU until the next NMI/SMI.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Ends the run: under Cordon the DONE hypercall with the verdict and the count of
/// trapped instructions, natively the Bochs magic breakpoint; then halts.
pub fn finish(passed: bool, trapped_instructions: u32) -> ! {
    if running_under_cordon() {
        // SAFETY: Cordon is there, so `vmcall` is its hypercall.
        unsafe { hypercall_done(passed, trapped_instructions) };
    } else {
        bochs_magic_breakpoint();
    }
    halt_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_the_cordon_signature() {
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let s = CORDON_SIGNATURE;
        assert!(is_cordon_signature(
            word(&s[0..4]),
            word(&s[4..8]),
            word(&s[8..12])
        ));
        // KVM's signature and a zeroed leaf are not Cordon.
        let kvm = b"KVMKVMKVM\0\0\0";
        assert!(!is_cordon_signature(
            word(&kvm[0..4]),
            word(&kvm[4..8]),
            word(&kvm[8..12])
        ));
        assert!(!is_cordon_signature(0, 0, 0));
    }

    #[test]
    fn fenced_tsc_advances() {
        let first = rdtsc_fenced();
        let second = rdtsc_fenced();
        assert!(second >= first);
    }
}
