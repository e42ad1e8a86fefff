//! Fills a vCPU's VMCS: execution controls, host state (this core), and the
//! guest's initial state (the multiboot2 handoff: flat 32-bit protected mode).

use super::fields::{self as f, entry_ctl, exit_ctl, pin, primary, secondary};
use super::insn::{self, VmxFail};
use crate::cpu::PerCpu;
use crate::regs;

const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
const IA32_VMX_EXIT_CTLS: u32 = 0x483;
const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_PAT: u32 = 0x277;
const IA32_FS_BASE: u32 = 0xc000_0100;

/// MSRs the guest and the host both use that VMX does not switch: swapped
/// through the VM-exit store/load and VM-entry load areas.
pub const SWITCHED_MSRS: [u32; 4] = [
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0084, // FMASK
    0xc000_0102, // KERNEL_GS_BASE
];
/// Offset of the host MSR values within the per-CPU MSR area frame.
pub const HOST_MSR_OFFSET: u64 = 0x800;

/// CR0.NE: fixed to 1 under VMX; the guest sees its own value through the
/// read shadow (Linux clears it).
pub const CR0_NE: u64 = 1 << 5;
/// CR4.VMXE: set for VMX operation, hidden from the guest.
pub const CR4_VMXE: u64 = 1 << 13;

/// What the guest starts with.
#[derive(Clone, Copy, Debug)]
pub struct GuestStart {
    pub rip: u64,
    pub rax: u64,
    pub rbx: u64,
    pub eptp: u64,
    pub vpid: u16,
    /// An AP's vCPU starts in wait-for-SIPI.
    pub wait_for_sipi: bool,
}

/// The allowed settings of one control field: (must be 1, may be 1).
fn allowed(msr: u32, true_msr: u32) -> (u32, u32) {
    // SAFETY: the VMX capability MSRs exist (VMX support was checked).
    let basic = unsafe { regs::rdmsr(IA32_VMX_BASIC) };
    let msr = if basic & (1 << 55) != 0 {
        true_msr
    } else {
        msr
    };
    // SAFETY: as above.
    let value = unsafe { regs::rdmsr(msr) };
    (value as u32, (value >> 32) as u32)
}

/// Adjusts `wanted` to what the CPU allows, and checks the `required` bits
/// survived.
fn adjust(wanted: u32, required: u32, (must, may): (u32, u32)) -> Result<u32, VmcsError> {
    let value = (wanted | must) & may;
    if value & required != required {
        return Err(VmcsError::ControlUnsupported(required & !value));
    }
    Ok(value)
}

#[derive(Clone, Copy, Debug)]
pub enum VmcsError {
    Vmx(VmxFail),
    ControlUnsupported(u32),
}

impl core::fmt::Display for VmcsError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            VmcsError::Vmx(fail) => write!(f, "VMX instruction failed: {fail:?}"),
            VmcsError::ControlUnsupported(bits) => {
                write!(f, "the CPU cannot set required control bits {bits:#x}")
            }
        }
    }
}

impl From<VmxFail> for VmcsError {
    fn from(fail: VmxFail) -> Self {
        VmcsError::Vmx(fail)
    }
}

/// Creates and fills the VMCS for this CPU's vCPU, leaving it current.
///
/// # Safety
/// VMX is on; `cpu.vmcs`, `cpu.msr_area` and `msr_bitmap` are zeroed frames
/// reserved for this purpose.
pub unsafe fn setup(
    cpu: &mut PerCpu,
    msr_bitmap: u64,
    start: &GuestStart,
) -> Result<(), VmcsError> {
    // SAFETY: the VMCS frame is ours; the revision id goes in its first dword.
    unsafe {
        (cpu.vmcs as *mut u32).write_volatile(super::revision_id());
        insn::vmclear(cpu.vmcs)?;
        insn::vmptrld(cpu.vmcs)?;
    }
    setup_controls(cpu, msr_bitmap, start)?;
    setup_host(cpu)?;
    setup_guest(start)?;
    Ok(())
}

fn setup_controls(cpu: &mut PerCpu, msr_bitmap: u64, start: &GuestStart) -> Result<(), VmcsError> {
    // NMIs exit: the core uses them to make another CPU's vCPU leave the
    // guest; guest NMIs are reflected.
    let pin = adjust(
        pin::NMI_EXITING,
        pin::NMI_EXITING,
        allowed(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS),
    )?;
    let wanted_primary = primary::USE_MSR_BITMAPS | primary::ACTIVATE_SECONDARY;
    let primary = adjust(
        wanted_primary,
        wanted_primary,
        allowed(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS),
    )?;
    let required_secondary = secondary::ENABLE_EPT | secondary::UNRESTRICTED_GUEST;
    // SAFETY: the MSR exists when secondary controls are allowed.
    let secondary_may = (unsafe { regs::rdmsr(IA32_VMX_PROCBASED_CTLS2) } >> 32) as u32;
    let optional_secondary = (secondary::ENABLE_VPID
        | secondary::ENABLE_RDTSCP
        | secondary::ENABLE_INVPCID
        | secondary::ENABLE_XSAVES)
        & secondary_may;
    let secondary = adjust(
        required_secondary | optional_secondary,
        required_secondary,
        (0, secondary_may),
    )?;
    // VM exit always sets DR7 to 0x400 and clears IA32_DEBUGCTL: the guest's
    // are saved at exits and loaded at entries, so they survive exits and the
    // core sees DEBUGCTL.BTF (single-step traps, vm::end_instruction).
    let wanted_exit = exit_ctl::SAVE_DEBUG_CONTROLS
        | exit_ctl::HOST_ADDRESS_SPACE_64
        | exit_ctl::SAVE_EFER
        | exit_ctl::LOAD_EFER
        | exit_ctl::SAVE_PAT
        | exit_ctl::LOAD_PAT;
    let exit = adjust(
        wanted_exit,
        exit_ctl::SAVE_DEBUG_CONTROLS
            | exit_ctl::HOST_ADDRESS_SPACE_64
            | exit_ctl::SAVE_EFER
            | exit_ctl::LOAD_EFER,
        allowed(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS),
    )?;
    let wanted_entry = entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT;
    let entry = adjust(
        wanted_entry,
        entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_EFER,
        allowed(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS),
    )?;

    insn::vmwrite(f::PIN_BASED_CONTROLS, u64::from(pin))?;
    insn::vmwrite(f::PRIMARY_CONTROLS, u64::from(primary))?;
    insn::vmwrite(f::SECONDARY_CONTROLS, u64::from(secondary))?;
    insn::vmwrite(f::EXIT_CONTROLS, u64::from(exit))?;
    insn::vmwrite(f::ENTRY_CONTROLS, u64::from(entry))?;
    insn::vmwrite(f::EXCEPTION_BITMAP, 0)?;
    insn::vmwrite(f::CR3_TARGET_COUNT, 0)?;
    insn::vmwrite(f::MSR_BITMAP, msr_bitmap)?;
    insn::vmwrite(f::EPT_POINTER, start.eptp)?;
    if secondary & secondary::ENABLE_VPID != 0 {
        insn::vmwrite(f::VPID, u64::from(start.vpid))?;
    }
    insn::vmwrite(f::CR0_GUEST_HOST_MASK, CR0_NE)?;
    insn::vmwrite(f::CR0_READ_SHADOW, CR0_NE)?;
    insn::vmwrite(f::CR4_GUEST_HOST_MASK, CR4_VMXE)?;
    insn::vmwrite(f::CR4_READ_SHADOW, 0)?;

    // The guest's values of the switched MSRs start at zero (the area is
    // zeroed); the host's are the current ones.
    let guest_area = cpu.msr_area;
    let host_area = cpu.msr_area + HOST_MSR_OFFSET;
    for (n, &msr) in SWITCHED_MSRS.iter().enumerate() {
        let entry = n as u64 * 16;
        // SAFETY: the MSR area frame belongs to this CPU; the MSRs exist
        // (long mode with SYSCALL).
        unsafe {
            ((guest_area + entry) as *mut u32).write_volatile(msr);
            ((host_area + entry) as *mut u32).write_volatile(msr);
            ((host_area + entry + 8) as *mut u64).write_volatile(regs::rdmsr(msr));
        }
    }
    let count = SWITCHED_MSRS.len() as u64;
    insn::vmwrite(f::VM_EXIT_MSR_STORE_ADDR, guest_area)?;
    insn::vmwrite(f::EXIT_MSR_STORE_COUNT, count)?;
    insn::vmwrite(f::VM_ENTRY_MSR_LOAD_ADDR, guest_area)?;
    insn::vmwrite(f::ENTRY_MSR_LOAD_COUNT, count)?;
    insn::vmwrite(f::VM_EXIT_MSR_LOAD_ADDR, host_area)?;
    insn::vmwrite(f::EXIT_MSR_LOAD_COUNT, count)?;
    Ok(())
}

fn setup_host(cpu: &PerCpu) -> Result<(), VmcsError> {
    use crate::arch::gdt;
    insn::vmwrite(f::HOST_CR0, regs::cr0())?;
    insn::vmwrite(f::HOST_CR3, regs::cr3())?;
    insn::vmwrite(f::HOST_CR4, regs::cr4())?;
    insn::vmwrite(f::HOST_CS_SELECTOR, u64::from(gdt::KERNEL_CODE))?;
    for field in [
        f::HOST_SS_SELECTOR,
        f::HOST_DS_SELECTOR,
        f::HOST_ES_SELECTOR,
    ] {
        insn::vmwrite(field, u64::from(gdt::KERNEL_DATA))?;
    }
    insn::vmwrite(f::HOST_FS_SELECTOR, 0)?;
    insn::vmwrite(f::HOST_GS_SELECTOR, 0)?;
    insn::vmwrite(f::HOST_TR_SELECTOR, u64::from(gdt::TSS))?;
    // SAFETY: reading FS base and the PAT/EFER MSRs has no side effects.
    unsafe {
        insn::vmwrite(f::HOST_FS_BASE, regs::rdmsr(IA32_FS_BASE))?;
        insn::vmwrite(f::HOST_IA32_PAT, regs::rdmsr(IA32_PAT))?;
        insn::vmwrite(f::HOST_IA32_EFER, regs::rdmsr(IA32_EFER))?;
    }
    insn::vmwrite(f::HOST_GS_BASE, cpu.self_ptr)?;
    let gdtr = regs::sgdt();
    insn::vmwrite(f::HOST_GDTR_BASE, gdtr.base)?;
    insn::vmwrite(f::HOST_TR_BASE, tss_base(gdtr.base))?;
    insn::vmwrite(f::HOST_IDTR_BASE, regs::sidt().base)?;
    insn::vmwrite(f::HOST_SYSENTER_CS, 0)?;
    insn::vmwrite(f::HOST_SYSENTER_ESP, 0)?;
    insn::vmwrite(f::HOST_SYSENTER_EIP, 0)?;
    insn::vmwrite(f::HOST_RSP, cpu.kernel_stack_top)?;
    insn::vmwrite(
        f::HOST_RIP,
        super::entry::vm_exit_entry as *const () as usize as u64,
    )?;
    Ok(())
}

/// The base address of the TSS from its 16-byte descriptor in the GDT.
fn tss_base(gdt_base: u64) -> u64 {
    let at = gdt_base + u64::from(crate::arch::gdt::TSS);
    // SAFETY: the GDT is loaded and contains the TSS descriptor at this selector.
    let (low, high) = unsafe {
        (
            (at as *const u64).read_volatile(),
            ((at + 8) as *const u64).read_volatile(),
        )
    };
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

fn setup_guest(start: &GuestStart) -> Result<(), VmcsError> {
    const CODE32: u64 = 0xc09b;
    const DATA32: u64 = 0xc093;
    const UNUSABLE: u64 = 1 << 16;
    for segment in 0..6 {
        let (selector, rights) = if segment == 1 {
            (0x08, CODE32)
        } else {
            (0x10, DATA32)
        };
        insn::vmwrite(f::segment_field(f::GUEST_ES_SELECTOR, segment), selector)?;
        insn::vmwrite(f::segment_field(f::GUEST_ES_BASE, segment), 0)?;
        insn::vmwrite(f::segment_field(f::GUEST_ES_LIMIT, segment), 0xffff_ffff)?;
        insn::vmwrite(f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, segment), rights)?;
    }
    insn::vmwrite(f::GUEST_LDTR_SELECTOR, 0)?;
    insn::vmwrite(f::GUEST_LDTR_BASE, 0)?;
    insn::vmwrite(f::GUEST_LDTR_LIMIT, 0)?;
    insn::vmwrite(f::GUEST_LDTR_ACCESS_RIGHTS, UNUSABLE)?;
    insn::vmwrite(f::GUEST_TR_SELECTOR, 0)?;
    insn::vmwrite(f::GUEST_TR_BASE, 0)?;
    insn::vmwrite(f::GUEST_TR_LIMIT, 0xff)?;
    insn::vmwrite(f::GUEST_TR_ACCESS_RIGHTS, 0x8b)?;
    insn::vmwrite(f::GUEST_GDTR_BASE, 0)?;
    insn::vmwrite(f::GUEST_GDTR_LIMIT, 0)?;
    insn::vmwrite(f::GUEST_IDTR_BASE, 0)?;
    insn::vmwrite(f::GUEST_IDTR_LIMIT, 0)?;

    let ((cr0_fixed0, _), (cr4_fixed0, _)) = super::fixed_bits();
    // PE and ET as the multiboot2 handoff leaves them, plus the VMX-fixed bits.
    insn::vmwrite(f::GUEST_CR0, 0x11 | cr0_fixed0)?;
    insn::vmwrite(f::GUEST_CR3, 0)?;
    insn::vmwrite(f::GUEST_CR4, cr4_fixed0)?;
    insn::vmwrite(f::GUEST_DR7, 0x400)?;
    insn::vmwrite(f::GUEST_IA32_DEBUGCTL, 0)?;
    insn::vmwrite(f::GUEST_RSP, 0)?;
    insn::vmwrite(f::GUEST_RIP, start.rip)?;
    insn::vmwrite(f::GUEST_RFLAGS, 0x2)?;
    insn::vmwrite(f::GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
    insn::vmwrite(f::GUEST_INTERRUPTIBILITY, 0)?;
    // An AP's vCPU waits for the guest's SIPI, as the CPU itself does after
    // the firmware's INIT.
    let activity = if start.wait_for_sipi {
        crate::smp::ACTIVITY_WAIT_FOR_SIPI
    } else {
        0
    };
    insn::vmwrite(f::GUEST_ACTIVITY_STATE, activity)?;
    insn::vmwrite(f::GUEST_SYSENTER_CS, 0)?;
    insn::vmwrite(f::GUEST_SYSENTER_ESP, 0)?;
    insn::vmwrite(f::GUEST_SYSENTER_EIP, 0)?;
    insn::vmwrite(f::VMCS_LINK_POINTER, u64::MAX)?;
    insn::vmwrite(f::GUEST_IA32_PAT, 0x0007_0406_0007_0406)?;
    insn::vmwrite(f::GUEST_IA32_EFER, 0)?;
    insn::vmwrite(f::ENTRY_INTERRUPTION_INFO, 0)?;
    Ok(())
}

/// The non-segment state of a vCPU after INIT, for the start at a SIPI
/// (unrestricted guest runs it in real mode).
pub fn reset_to_real_mode(cpu: &mut PerCpu) {
    use crate::exits::{read, write};
    let ((cr0_fixed0, _), (cr4_fixed0, _)) = super::fixed_bits();
    write(cpu, f::GUEST_CR0, 0x10 | cr0_fixed0);
    write(cpu, f::CR0_READ_SHADOW, 0);
    write(cpu, f::GUEST_CR3, 0);
    write(cpu, f::GUEST_CR4, cr4_fixed0);
    write(cpu, f::CR4_READ_SHADOW, 0);
    write(cpu, f::GUEST_IA32_EFER, 0);
    let controls = read(f::ENTRY_CONTROLS) & !u64::from(entry_ctl::IA32E_GUEST);
    write(cpu, f::ENTRY_CONTROLS, controls);
    for (base, limit) in [
        (f::GUEST_GDTR_BASE, f::GUEST_GDTR_LIMIT),
        (f::GUEST_IDTR_BASE, f::GUEST_IDTR_LIMIT),
    ] {
        write(cpu, base, 0);
        write(cpu, limit, 0xffff);
    }
    write(cpu, f::GUEST_LDTR_SELECTOR, 0);
    write(cpu, f::GUEST_LDTR_ACCESS_RIGHTS, 1 << 16);
    write(cpu, f::GUEST_TR_SELECTOR, 0);
    write(cpu, f::GUEST_TR_BASE, 0);
    write(cpu, f::GUEST_TR_LIMIT, 0xffff);
    write(cpu, f::GUEST_TR_ACCESS_RIGHTS, 0x8b);
    write(cpu, f::GUEST_RFLAGS, 0x2);
    write(cpu, f::GUEST_DR7, 0x400);
    write(cpu, f::GUEST_IA32_DEBUGCTL, 0);
    write(cpu, f::GUEST_INTERRUPTIBILITY, 0);
    write(cpu, f::GUEST_PENDING_DEBUG_EXCEPTIONS, 0);
    write(cpu, f::ENTRY_INTERRUPTION_INFO, 0);
}
