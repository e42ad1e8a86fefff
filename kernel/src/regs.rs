//! Raw access to control registers, MSRs and descriptor-table registers.

use core::arch::asm;

/// Reads model-specific register `msr`.
///
/// # Safety
/// The MSR exists on this CPU (reading a missing one raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: per the caller.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// The MSR exists and the value is valid for it and for the core's invariants.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

macro_rules! control_register {
    ($read:ident, $write:ident, $reg:literal) => {
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) value, options(nomem, nostack)) };
            value
        }

        /// # Safety
        /// The new value keeps the core's memory and mode invariants.
        pub unsafe fn $write(value: u64) {
            // SAFETY: per the caller.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) value, options(nostack)) };
        }
    };
}

control_register!(cr0, write_cr0, "cr0");
control_register!(cr3, write_cr3, "cr3");
control_register!(cr4, write_cr4, "cr4");
control_register!(cr2, write_cr2, "cr2");

/// Base and limit of a descriptor-table register.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct TableRegister {
    pub limit: u16,
    pub base: u64,
}

pub fn sgdt() -> TableRegister {
    let mut table = TableRegister { limit: 0, base: 0 };
    // SAFETY: SGDT stores 10 bytes into `table`.
    unsafe { asm!("sgdt [{}]", in(reg) &raw mut table, options(nostack)) };
    table
}

pub fn sidt() -> TableRegister {
    let mut table = TableRegister { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `table`.
    unsafe { asm!("sidt [{}]", in(reg) &raw mut table, options(nostack)) };
    table
}

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Invalidates the TLB entry for `address` on this CPU.
pub fn invlpg(address: u64) {
    // SAFETY: dropping a TLB entry is always safe.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack)) };
}
