//! The two halves of the world switch: the VM-exit entry point (HOST_RIP),
//! which saves the guest's GPRs and extended state before any Rust code runs,
//! and the path back into the guest, which restores them and executes
//! VMRESUME (or VMLAUNCH the first time).

use crate::cpu::{PerCpu, Registers};
use core::arch::naked_asm;
use core::mem::offset_of;

const GUEST: usize = offset_of!(PerCpu, guest) + offset_of!(Registers, gprs);
const XSAVE_PTR: usize = offset_of!(PerCpu, xsave_ptr);
const USE_XSAVE: usize = offset_of!(PerCpu, use_xsave);
const LAUNCHED: usize = offset_of!(PerCpu, launched);

/// VM exits land here, on this CPU's kernel stack with GS pointing at its
/// `PerCpu` (HOST_RSP and HOST_GS_BASE).
#[unsafe(naked)]
pub extern "C" fn vm_exit_entry() -> ! {
    naked_asm!(
        "mov gs:[{g} + 0*8], rax",
        "mov gs:[{g} + 1*8], rcx",
        "mov gs:[{g} + 2*8], rdx",
        "mov gs:[{g} + 3*8], rbx",
        "mov gs:[{g} + 5*8], rbp",
        "mov gs:[{g} + 6*8], rsi",
        "mov gs:[{g} + 7*8], rdi",
        "mov gs:[{g} + 8*8], r8",
        "mov gs:[{g} + 9*8], r9",
        "mov gs:[{g} + 10*8], r10",
        "mov gs:[{g} + 11*8], r11",
        "mov gs:[{g} + 12*8], r12",
        "mov gs:[{g} + 13*8], r13",
        "mov gs:[{g} + 14*8], r14",
        "mov gs:[{g} + 15*8], r15",
        "mov rdi, gs:[{xsave}]",
        "mov eax, -1",
        "mov edx, -1",
        "cmp qword ptr gs:[{use_xsave}], 0",
        "je 2f",
        "xsave64 [rdi]",
        "jmp 3f",
        "2:",
        "fxsave64 [rdi]",
        "3:",
        "mov rdi, gs:[0]",
        "xor ebp, ebp",
        "call {handler}",
        "ud2",
        g = const GUEST,
        xsave = const XSAVE_PTR,
        use_xsave = const USE_XSAVE,
        handler = sym crate::exits::handle_vm_exit,
    )
}

/// Restores the guest's extended state and GPRs from `cpu` and enters the
/// guest. Returns only if VM entry fails, to `crate::exits::vm_entry_failed`.
///
/// # Safety
/// The current VMCS is `cpu`'s and fully set up; GS points at `cpu`.
#[unsafe(naked)]
pub unsafe extern "C" fn enter_guest(cpu: &mut PerCpu) -> ! {
    naked_asm!(
        "mov rsp, [rdi + {stack}]",
        "mov rcx, gs:[{xsave}]",
        "mov eax, -1",
        "mov edx, -1",
        "cmp qword ptr gs:[{use_xsave}], 0",
        "je 2f",
        "xrstor64 [rcx]",
        "jmp 3f",
        "2:",
        "fxrstor64 [rcx]",
        "3:",
        "cmp qword ptr gs:[{launched}], 0",
        "mov rax, gs:[{g} + 0*8]",
        "mov rcx, gs:[{g} + 1*8]",
        "mov rdx, gs:[{g} + 2*8]",
        "mov rbx, gs:[{g} + 3*8]",
        "mov rbp, gs:[{g} + 5*8]",
        "mov rsi, gs:[{g} + 6*8]",
        "mov rdi, gs:[{g} + 7*8]",
        "mov r8, gs:[{g} + 8*8]",
        "mov r9, gs:[{g} + 9*8]",
        "mov r10, gs:[{g} + 10*8]",
        "mov r11, gs:[{g} + 11*8]",
        "mov r12, gs:[{g} + 12*8]",
        "mov r13, gs:[{g} + 13*8]",
        "mov r14, gs:[{g} + 14*8]",
        "mov r15, gs:[{g} + 15*8]",
        "je 4f",
        "vmresume",
        "jmp 5f",
        "4:",
        "vmlaunch",
        "5:",
        "pushfq",
        "pop rsi",
        "mov rdi, gs:[0]",
        "call {failed}",
        "ud2",
        stack = const offset_of!(PerCpu, kernel_stack_top),
        g = const GUEST,
        xsave = const XSAVE_PTR,
        use_xsave = const USE_XSAVE,
        launched = const LAUNCHED,
        failed = sym crate::exits::vm_entry_failed,
    )
}
