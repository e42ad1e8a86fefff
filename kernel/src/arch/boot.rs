//! The multiboot2 header and the 32-bit entry from GRUB: zeroes .bss, builds the
//! boot page tables (identity map of 0-4 GiB in 2 MiB pages, the top 32 MiB with
//! caching disabled for the local APIC, I/O APIC and firmware), enables SSE,
//! PAE, NX and long mode, and calls `cordon_main(magic, multiboot_info)` in
//! 64-bit mode on a 64 KiB stack. The kernel keeps these page tables.

use core::arch::global_asm;

/// Size of the boot CPU's stack (in `.bss`).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

// Multiboot2 header (spec section 3.1): magic, architecture 0 (i386 protected
// mode), length, checksum; a module-alignment tag so modules start on a page;
// the end tag. No address tag: GRUB loads the ELF segments at their addresses.
global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
multiboot2_header:
    .long 0xe85250d6
    .long 0
    .long multiboot2_header_end - multiboot2_header
    .long 0x100000000 - (0xe85250d6 + (multiboot2_header_end - multiboot2_header))
    .short 6
    .short 0
    .long 8
    .short 0
    .short 0
    .long 8
multiboot2_header_end:
"#,
    options(att_syntax)
);

// The 32-bit entry. GRUB leaves us in flat 32-bit protected mode, paging off,
// EAX = multiboot2 magic, EBX = physical address of the information block.
global_asm!(
    r#"
    .section .text.boot32, "ax"
    .code32
    .global cordon_entry32
cordon_entry32:
    cli
    cld
    mov %eax, %ebp
    mov %ebx, %esi

    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $boot_stack_top, %esp
    push %ebp
    push %esi

    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb boot_no_long_mode
    mov $0x80000001, %eax
    cpuid
    test $0x20000000, %edx
    jz boot_no_long_mode
    mov %edx, %edi

    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4

    mov $boot_page_directories, %eax
    or $3, %eax
    mov %eax, boot_pdpt
    add $4096, %eax
    mov %eax, boot_pdpt + 8
    add $4096, %eax
    mov %eax, boot_pdpt + 16
    add $4096, %eax
    mov %eax, boot_pdpt + 24

    mov $boot_page_directories, %ebx
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    cmp $2032, %ecx
    jb 2f
    or $0x18, %eax
2:
    mov %eax, (%ebx,%ecx,8)
    movl $0, 4(%ebx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4

    mov $boot_pml4, %eax
    mov %eax, %cr3

    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    test $0x100000, %edi
    jz 3f
    or $0x800, %eax
3:
    wrmsr

    mov %cr0, %eax
    and $0xfffffffb, %eax
    or $0x80000023, %eax
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $boot_entry64

boot_no_long_mode:
    mov $boot_no_long_mode_message, %esi
    mov $0x3f8, %dx
4:
    lodsb
    test %al, %al
    jz 5f
    out %al, %dx
    jmp 4b
5:
    cli
    hlt
    jmp 5b

    .code64
boot_entry64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov boot_stack_top - 8, %esi
    mov boot_stack_top - 4, %edi
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    call cordon_main
6:
    cli
    hlt
    jmp 6b

    .section .rodata.boot32, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
boot_no_long_mode_message:
    .asciz "cordon: this CPU has no 64-bit long mode\r\n"

    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_page_directories
boot_page_directories:
    .skip 4 * 4096

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_pml4: u8;
    static boot_page_directories: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Physical address of the boot PML4 (CR3 of the kernel's own address space).
pub fn kernel_pml4() -> u64 {
    // Only the address of the linker-placed table is taken, nothing is read.
    core::ptr::addr_of!(boot_pml4) as u64
}

/// Physical address of the first of the four page directories that map 0-4 GiB
/// with 2 MiB pages (directory `n` maps `n` GiB to `n + 1` GiB).
pub fn kernel_page_directories() -> u64 {
    core::ptr::addr_of!(boot_page_directories) as u64
}

/// Physical range occupied by the kernel image (code, data and .bss).
pub fn kernel_image() -> core::ops::Range<u64> {
    core::ptr::addr_of!(__kernel_start) as u64..core::ptr::addr_of!(__kernel_end) as u64
}
