//! VM-exit dispatch: the exits the core handles itself (CPUID, control
//! registers, XSETBV, VMCALL) and the ones it forwards (EPT violations on
//! trapped memory) or ends the VM for.

use crate::cpu::PerCpu;
use crate::vmx::fields::{self as f, reason};
use crate::vmx::insn::{vmread, vmwrite};
use crate::{regs, vm};

/// Rust half of the VM-exit entry point.
pub extern "C" fn handle_vm_exit(cpu: &mut PerCpu) -> ! {
    cpu.launched = 1;
    cpu.guest.gprs[4] = read(f::GUEST_RSP);
    let exit_reason = read(f::EXIT_REASON) as u32;
    if exit_reason & reason::ENTRY_FAILED != 0 {
        vm::stop(
            cpu,
            format_args!("VM entry failed, exit reason {:#x}", exit_reason),
        );
    }
    let basic_reason = exit_reason & 0xffff;
    if basic_reason != reason::INIT {
        cpu.started_by_sipi = false;
    }
    match basic_reason {
        reason::EPT_VIOLATION => crate::forward::ept_violation(cpu),
        reason::CPUID => handle_cpuid(cpu),
        reason::VMCALL => crate::hypercall::handle(cpu),
        reason::CR_ACCESS => crate::control_regs::handle(cpu),
        reason::XSETBV => handle_xsetbv(cpu),
        reason::INVD => vm::skip_instruction(cpu),
        reason::GETSEC => vm::inject_exception(cpu, 6, None),
        reason::EXCEPTION_OR_NMI => crate::smp::handle_nmi(cpu),
        reason::INIT => crate::smp::handle_init(cpu),
        reason::SIPI => crate::smp::handle_sipi(cpu),
        reason::TRIPLE_FAULT => vm::stop(cpu, format_args!("guest triple fault")),
        reason::EPT_MISCONFIG => vm::stop(
            cpu,
            format_args!(
                "EPT misconfiguration at GPA {:#x}",
                read(f::GUEST_PHYSICAL_ADDRESS)
            ),
        ),
        other => vm::stop(
            cpu,
            format_args!(
                "unexpected VM exit, reason {} qualification {:#x}",
                other,
                read(f::EXIT_QUALIFICATION)
            ),
        ),
    }
}

/// Reached when VMLAUNCH/VMRESUME falls through.
pub extern "C" fn vm_entry_failed(cpu: &mut PerCpu, rflags: u64) -> ! {
    let error = read(f::VM_INSTRUCTION_ERROR);
    vm::stop(
        cpu,
        format_args!(
            "VM entry instruction failed: rflags {rflags:#x}, VM-instruction error {error}"
        ),
    )
}

/// Reads a VMCS field of the current VMCS (0 if it cannot be read, which the
/// caller's report then shows).
pub fn read(field: u64) -> u64 {
    vmread(field).unwrap_or(0)
}

/// Writes a VMCS field; a failure stops the VM, as the VMCS is then unusable.
pub fn write(cpu: &mut PerCpu, field: u64, value: u64) {
    if let Err(fail) = vmwrite(field, value) {
        vm::stop(cpu, format_args!("VMWRITE {field:#x} failed: {fail:?}"));
    }
}

const CPUID_VMX: u32 = 1 << 5;
const CPUID_X2APIC: u32 = 1 << 21;
const CPUID_HYPERVISOR: u32 = 1 << 31;
/// The hypervisor vendor leaf: "CordonCordon".
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;

fn handle_cpuid(cpu: &mut PerCpu) -> ! {
    let leaf = cpu.guest.gprs[0] as u32;
    let subleaf = cpu.guest.gprs[1] as u32;
    let mut result = match leaf {
        HYPERVISOR_LEAF => [
            HYPERVISOR_LEAF,
            u32::from_le_bytes(*b"Cord"),
            u32::from_le_bytes(*b"onCo"),
            u32::from_le_bytes(*b"rdon"),
        ],
        0x4000_0001..=0x4fff_ffff => [0; 4],
        _ => regs::cpuid(leaf, subleaf),
    };
    if leaf == 1 {
        result[2] &= !CPUID_VMX;
        result[2] |= CPUID_HYPERVISOR;
        if crate::config().hide_x2apic() {
            result[2] &= !CPUID_X2APIC;
        }
    }
    for (n, value) in [0usize, 3, 1, 2].into_iter().zip(result) {
        cpu.guest.gprs[n] = u64::from(value);
    }
    vm::skip_instruction(cpu)
}

fn handle_xsetbv(cpu: &mut PerCpu) -> ! {
    let value = (cpu.guest.gprs[2] << 32) | (cpu.guest.gprs[0] & 0xffff_ffff);
    let index = cpu.guest.gprs[1] as u32;
    let supported = {
        let leaf = regs::cpuid(0xd, 0);
        u64::from(leaf[0]) | (u64::from(leaf[3]) << 32)
    };
    let avx512 = 0b111 << 5;
    let valid = index == 0
        && value & 1 != 0
        && value & !supported == 0
        && (value & 4 == 0 || value & 2 != 0)
        && (value & avx512 == 0 || (value & avx512 == avx512 && value & 4 != 0));
    if !valid {
        vm::inject_exception(cpu, 13, Some(0));
    }
    // SAFETY: the value was checked against what the CPU supports and the
    // architectural rules, so XSETBV cannot fault; the host only uses x87/SSE
    // state, which every valid XCR0 keeps.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32);
    }
    vm::skip_instruction(cpu)
}
