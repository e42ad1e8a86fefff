//! The application processors' start-up code: real mode at the SIPI page,
//! then protected mode, then long mode on the core's page tables, then a jump
//! to `ap_entry` with the stack and CPU index the boot CPU left in the page.

use core::arch::global_asm;

/// Physical address the trampoline is copied to (SIPI vector 7).
pub const BASE: u64 = 0x7000;

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .set TRAMPOLINE_BASE, 0x7000
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_trampoline_cr3
    .global ap_trampoline_stack
    .global ap_trampoline_index
    .global ap_trampoline_entry
    .code16
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (TRAMPOLINE_BASE + ap_gdt_pointer - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(TRAMPOLINE_BASE + ap_protected - ap_trampoline_start)

    .code32
ap_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    # CR4: PAE, OSFXSR, OSXMMEXCPT (Rust code uses SSE); CR0: MP on, EM off.
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl (TRAMPOLINE_BASE + ap_trampoline_cr3 - ap_trampoline_start), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    movl %cr0, %eax
    andl $~(1 << 2), %eax
    orl $((1 << 31) | (1 << 1)), %eax
    movl %eax, %cr0
    ljmpl $0x18, $(TRAMPOLINE_BASE + ap_long - ap_trampoline_start)

    .code64
ap_long:
    movq (TRAMPOLINE_BASE + ap_trampoline_stack - ap_trampoline_start), %rsp
    movq (TRAMPOLINE_BASE + ap_trampoline_index - ap_trampoline_start), %rdi
    movq (TRAMPOLINE_BASE + ap_trampoline_entry - ap_trampoline_start), %rax
    xorl %ebp, %ebp
    jmpq *%rax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdt_pointer:
    .word 31
    .long TRAMPOLINE_BASE + ap_gdt - ap_trampoline_start
    .balign 8
ap_trampoline_cr3:
    .quad 0
ap_trampoline_stack:
    .quad 0
ap_trampoline_index:
    .quad 0
ap_trampoline_entry:
    .quad 0
ap_trampoline_end:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_stack: u8;
    static ap_trampoline_index: u8;
    static ap_trampoline_entry: u8;
}

/// Offset of a trampoline symbol from its start.
fn offset(symbol: *const u8) -> u64 {
    symbol as u64 - (&raw const ap_trampoline_start) as u64
}

/// Copies the trampoline to [`BASE`] with the given page tables and entry.
///
/// # Safety
/// The page at [`BASE`] is free RAM no one else uses while APs start.
pub unsafe fn install(cr3: u64, entry: u64) {
    let start = &raw const ap_trampoline_start;
    let length = offset(&raw const ap_trampoline_end) as usize;
    // SAFETY: per the caller, the target page is ours; the source is the
    // kernel image.
    unsafe {
        core::ptr::copy_nonoverlapping(start, BASE as *mut u8, length);
        ((BASE + offset(&raw const ap_trampoline_cr3)) as *mut u64).write_volatile(cr3);
        ((BASE + offset(&raw const ap_trampoline_entry)) as *mut u64).write_volatile(entry);
    }
}

/// Sets the stack and CPU index the next AP starts with.
///
/// # Safety
/// `install` ran, and no AP is between SIPI and reading these fields.
pub unsafe fn prepare(stack_top: u64, index: u64) {
    // SAFETY: the fields lie in the installed trampoline page.
    unsafe {
        ((BASE + offset(&raw const ap_trampoline_stack)) as *mut u64).write_volatile(stack_top);
        ((BASE + offset(&raw const ap_trampoline_index)) as *mut u64).write_volatile(index);
    }
}
