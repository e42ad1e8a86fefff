//! Thin wrappers over the VMX instructions, turning the VMfail conventions
//! (CF for VMfailInvalid, ZF for VMfailValid) into `Result`s.

use core::arch::asm;

/// A VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxFail {
    /// No current VMCS (VMfailInvalid).
    Invalid,
    /// VMfailValid: the VM-instruction error number from the VMCS.
    Valid(u64),
}

fn check(rflags: u64) -> Result<(), VmxFail> {
    if rflags & 1 != 0 {
        Err(VmxFail::Invalid)
    } else if rflags & (1 << 6) != 0 {
        Err(VmxFail::Valid(
            vmread(super::fields::VM_INSTRUCTION_ERROR).unwrap_or(0),
        ))
    } else {
        Ok(())
    }
}

/// Enters VMX operation with the VMXON region at physical `region`.
///
/// # Safety
/// CR4.VMXE is set, the region is a zeroed 4 KiB frame with the revision id
/// written, and nothing else uses it.
pub unsafe fn vmxon(region: u64) -> Result<(), VmxFail> {
    let rflags: u64;
    // SAFETY: the caller guarantees the VMXON preconditions; the instruction
    // only reads the 8-byte operand on our stack.
    unsafe {
        asm!("vmxon [{0}]", "pushfq", "pop {1}", in(reg) &region, out(reg) rflags);
    }
    check(rflags)
}

/// Clears the VMCS at physical `vmcs` (sets its launch state to clear).
///
/// # Safety
/// `vmcs` is a VMCS region owned by this CPU.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmxFail> {
    let rflags: u64;
    // SAFETY: per the caller; reads the operand from our stack only.
    unsafe {
        asm!("vmclear [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags);
    }
    check(rflags)
}

/// Makes the VMCS at physical `vmcs` current.
///
/// # Safety
/// `vmcs` is an initialised VMCS region owned by this CPU.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmxFail> {
    let rflags: u64;
    // SAFETY: per the caller; reads the operand from our stack only.
    unsafe {
        asm!("vmptrld [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags);
    }
    check(rflags)
}

/// Reads a field of the current VMCS.
pub fn vmread(field: u64) -> Result<u64, VmxFail> {
    let value: u64;
    let rflags: u64;
    // SAFETY: VMREAD has no memory operands here and fails cleanly (flags)
    // when there is no current VMCS or the field does not exist.
    unsafe {
        asm!("vmread {0}, {1}", "pushfq", "pop {2}", out(reg) value, in(reg) field, out(reg) rflags);
    }
    if rflags & 0x41 != 0 {
        return Err(if rflags & 1 != 0 {
            VmxFail::Invalid
        } else {
            VmxFail::Valid(0)
        });
    }
    Ok(value)
}

/// Writes a field of the current VMCS.
pub fn vmwrite(field: u64, value: u64) -> Result<(), VmxFail> {
    let rflags: u64;
    // SAFETY: VMWRITE changes only the current VMCS, which only takes effect
    // at the next VM entry; failures are reported in the flags.
    unsafe {
        asm!("vmwrite {0}, {1}", "pushfq", "pop {2}", in(reg) field, in(reg) value, out(reg) rflags);
    }
    check(rflags)
}

/// Invalidates all EPT-derived translations for `eptp` (single-context INVEPT).
pub fn invept_single(eptp: u64) -> Result<(), VmxFail> {
    let descriptor: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: INVEPT only drops cached translations; the descriptor is on our stack.
    unsafe {
        asm!("invept {0}, [{1}]", "pushfq", "pop {2}", in(reg) 1u64, in(reg) &descriptor, out(reg) rflags);
    }
    check(rflags)
}
