//! Control-register exits: the guest writing CR0.NE or CR4.VMXE, the bits the
//! core owns under VMX (and CR3 moves, should the CPU force CR3 exiting).

use crate::cpu::PerCpu;
use crate::exits::{read, write};
use crate::vm;
use crate::vmx::fields::{self as f, entry_ctl};
use crate::vmx::vmcs::{CR0_NE, CR4_VMXE};

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const GUEST_PDPTE0: u64 = 0x280a;

fn gpr(cpu: &PerCpu, index: usize) -> u64 {
    cpu.guest.gprs[index]
}

pub fn handle(cpu: &mut PerCpu) -> ! {
    let qualification = read(f::EXIT_QUALIFICATION);
    let cr = qualification & 0xf;
    let access = (qualification >> 4) & 3;
    let register = ((qualification >> 8) & 0xf) as usize;
    match (cr, access) {
        (0, 0) => write_cr0(cpu, gpr(cpu, register)),
        (4, 0) => write_cr4(cpu, gpr(cpu, register)),
        (3, 0) => {
            let value = gpr(cpu, register);
            write(cpu, f::GUEST_CR3, value);
            load_pdptes_if_pae(cpu);
        }
        (3, 1) => cpu.guest.gprs[register] = read(f::GUEST_CR3),
        _ => vm::stop(
            cpu,
            format_args!("unexpected control-register exit, qualification {qualification:#x}"),
        ),
    }
    vm::skip_instruction(cpu)
}

fn write_cr0(cpu: &mut PerCpu, value: u64) {
    let ((fixed0, fixed1), _) = crate::vmx::fixed_bits();
    if value & CR0_PG != 0 && value & CR0_PE == 0 || value >> 32 != 0 {
        vm::inject_exception(cpu, 13, Some(0));
    }
    let old = read(f::GUEST_CR0);
    let efer = read(f::GUEST_IA32_EFER);
    if value & CR0_PG != 0 && old & CR0_PG == 0 && efer & EFER_LME != 0 {
        if read(f::GUEST_CR4) & CR4_PAE == 0 {
            vm::inject_exception(cpu, 13, Some(0));
        }
        write(cpu, f::GUEST_IA32_EFER, efer | EFER_LMA);
        let controls = read(f::ENTRY_CONTROLS);
        write(
            cpu,
            f::ENTRY_CONTROLS,
            controls | u64::from(entry_ctl::IA32E_GUEST),
        );
    } else if value & CR0_PG == 0 && efer & EFER_LMA != 0 {
        write(cpu, f::GUEST_IA32_EFER, efer & !EFER_LMA);
        let controls = read(f::ENTRY_CONTROLS);
        write(
            cpu,
            f::ENTRY_CONTROLS,
            controls & !u64::from(entry_ctl::IA32E_GUEST),
        );
    }
    write(cpu, f::CR0_READ_SHADOW, value & CR0_NE);
    write(cpu, f::GUEST_CR0, (value | fixed0) & fixed1);
    load_pdptes_if_pae(cpu);
}

fn write_cr4(cpu: &mut PerCpu, value: u64) {
    if value & CR4_VMXE != 0 {
        // VMX is hidden from the guest: setting VMXE faults as without VMX.
        vm::inject_exception(cpu, 13, Some(0));
    }
    let (_, (fixed0, fixed1)) = crate::vmx::fixed_bits();
    let shadowed = value & CR4_VMXE;
    let real = (value | fixed0) & fixed1;
    if real & !CR4_VMXE != value & !CR4_VMXE {
        vm::inject_exception(cpu, 13, Some(0));
    }
    write(cpu, f::CR4_READ_SHADOW, shadowed);
    write(cpu, f::GUEST_CR4, real);
    load_pdptes_if_pae(cpu);
}

/// With PAE paging outside long mode, the CPU loads the four PDPTEs from CR3
/// when CR0, CR3 or CR4 change; an emulated change must do the same.
fn load_pdptes_if_pae(cpu: &mut PerCpu) {
    let cr0 = read(f::GUEST_CR0);
    let cr4 = read(f::GUEST_CR4);
    let efer = read(f::GUEST_IA32_EFER);
    if cr0 & CR0_PG == 0 || cr4 & CR4_PAE == 0 || efer & EFER_LMA != 0 {
        return;
    }
    let table = read(f::GUEST_CR3) & 0xffff_ffe0;
    for n in 0..4u64 {
        let Some(entry) = crate::guest::read_guest_u64(table + 8 * n) else {
            vm::stop(
                cpu,
                format_args!("PAE PDPT at {table:#x} is not in guest RAM"),
            );
        };
        write(cpu, GUEST_PDPTE0 + 2 * n, entry);
    }
}
