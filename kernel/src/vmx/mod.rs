//! VMX operation: feature checks, VMXON, and the VMCS of the one vCPU each
//! physical CPU runs.

pub mod entry;
pub mod fields;
pub mod insn;
pub mod vmcs;

use crate::regs;
use core::fmt;

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;

/// Why VMX cannot be used on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxUnavailable {
    NoVmx,
    DisabledByFirmware,
    NoEpt,
    NoUnrestrictedGuest,
    VmxonFailed(insn::VmxFail),
}

impl fmt::Display for VmxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VmxUnavailable::NoVmx => write!(f, "VMX not available (CPUID.1:ECX.VMX is clear)"),
            VmxUnavailable::DisabledByFirmware => {
                write!(
                    f,
                    "VMX not available (disabled and locked in IA32_FEATURE_CONTROL)"
                )
            }
            VmxUnavailable::NoEpt => write!(f, "VMX not available: the CPU has no EPT"),
            VmxUnavailable::NoUnrestrictedGuest => {
                write!(f, "VMX not available: the CPU has no unrestricted guest")
            }
            VmxUnavailable::VmxonFailed(fail) => {
                write!(f, "VMX not available: VMXON failed ({fail:?})")
            }
        }
    }
}

/// The VMCS revision identifier every VMX region starts with.
pub fn revision_id() -> u32 {
    // SAFETY: IA32_VMX_BASIC exists when CPUID reports VMX (checked first).
    (unsafe { regs::rdmsr(IA32_VMX_BASIC) } as u32) & 0x7fff_ffff
}

/// Checks that this CPU can run Cordon's guests (VMX, EPT, unrestricted guest).
pub fn check_support() -> Result<(), VmxUnavailable> {
    if regs::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Err(VmxUnavailable::NoVmx);
    }
    // SAFETY: the VMX capability MSRs exist when CPUID reports VMX.
    let secondary_allowed = unsafe { regs::rdmsr(IA32_VMX_PROCBASED_CTLS2) } >> 32;
    if secondary_allowed & u64::from(fields::secondary::ENABLE_EPT) == 0 {
        return Err(VmxUnavailable::NoEpt);
    }
    if secondary_allowed & u64::from(fields::secondary::UNRESTRICTED_GUEST) == 0 {
        return Err(VmxUnavailable::NoUnrestrictedGuest);
    }
    Ok(())
}

/// Enables VMX on this CPU: feature control, fixed CR0/CR4 bits, VMXON with the
/// zeroed frame `vmxon_region`.
///
/// # Safety
/// `check_support` succeeded on this CPU and `vmxon_region` is a zeroed frame
/// reserved for this CPU.
pub unsafe fn enable(vmxon_region: u64) -> Result<(), VmxUnavailable> {
    // SAFETY: the MSRs exist (VMX is supported); setting the lock with the
    // VMX-outside-SMX bit is what firmware would do.
    unsafe {
        let control = regs::rdmsr(IA32_FEATURE_CONTROL);
        if control & FEATURE_CONTROL_LOCKED == 0 {
            regs::wrmsr(
                IA32_FEATURE_CONTROL,
                control | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        } else if control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err(VmxUnavailable::DisabledByFirmware);
        }
        let cr0 =
            (regs::cr0() | regs::rdmsr(IA32_VMX_CR0_FIXED0)) & regs::rdmsr(IA32_VMX_CR0_FIXED1);
        regs::write_cr0(cr0);
        let cr4 = (regs::cr4() | CR4_VMXE | regs::rdmsr(IA32_VMX_CR4_FIXED0))
            & regs::rdmsr(IA32_VMX_CR4_FIXED1);
        regs::write_cr4(cr4);
        (vmxon_region as *mut u32).write_volatile(revision_id());
        insn::vmxon(vmxon_region).map_err(VmxUnavailable::VmxonFailed)
    }
}

/// CR0 and CR4 bits the guest may not see or clear freely: the VMX-fixed
/// ones. Returns (fixed0, fixed1) for CR0 and CR4 with PE/PG exempt
/// (unrestricted guest).
pub fn fixed_bits() -> ((u64, u64), (u64, u64)) {
    // SAFETY: the MSRs exist when VMX is supported.
    unsafe {
        let cr0_fixed0 = regs::rdmsr(IA32_VMX_CR0_FIXED0) & !(1 | (1 << 31));
        (
            (cr0_fixed0, regs::rdmsr(IA32_VMX_CR0_FIXED1)),
            (
                regs::rdmsr(IA32_VMX_CR4_FIXED0),
                regs::rdmsr(IA32_VMX_CR4_FIXED1),
            ),
        )
    }
}
