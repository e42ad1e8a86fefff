/* Cordon test guests: multiboot2 header, 32-bit entry, identity page tables and the
 * switch to long mode (AT&T syntax, assembled once into every guest binary).
 *
 * Symbols a guest provides:
 *   guest_main64(magic: u32, info: u32) -> !   64-bit Rust entry (System V ABI)
 *   guest_phase32 (optional, 32-bit, near call) code run before paging is turned on;
 *                 may clobber every register except esp and the segment registers.
 * Symbols this file provides for other guests (APs, later phases):
 *   guest_gdt_pointer, guest_build_identity_map, guest_enter_long_mode,
 *   guest_pml4, guest_multiboot_magic, guest_multiboot_info, guest_stack_top.
 */

/* ---- multiboot2 header: magic, architecture 0 (i386), length, checksum, end tag ---- */
    .section .multiboot2, "a"
    .balign 8
guest_mb2_header:
    .long 0xe85250d6
    .long 0
    .long guest_mb2_header_end - guest_mb2_header
    .long 0x17adaf2a - (guest_mb2_header_end - guest_mb2_header)  /* 2^32 - magic - len */
    .short 0                /* end tag: type 0, flags 0, size 8 */
    .short 0
    .long 8
guest_mb2_header_end:

/* ---- GDT: the selectors match Cordon's guest handoff (0x08 code32, 0x10 data) ---- */
    .section .data.guest_gdt, "aw"
    .balign 16
    .global guest_gdt
guest_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code, ring 0 */
    .quad 0x00cf92000000ffff    /* 0x10: flat data, ring 0 */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code, ring 0 */
guest_gdt_end:
    .balign 8
    .global guest_gdt_pointer
guest_gdt_pointer:              /* usable by lgdt in 32- and in 64-bit mode */
    .short guest_gdt_end - guest_gdt - 1
    .quad guest_gdt

    .global guest_multiboot_magic
    .global guest_multiboot_info
guest_multiboot_magic:
    .long 0
guest_multiboot_info:
    .long 0

/* ---- boot stack and the identity page tables (zeroed by _start) ---- */
    .section .bss.guest_stack, "aw", @nobits
    .balign 16
guest_stack_bottom:
    .skip {STACK_SIZE}
    .global guest_stack_top
guest_stack_top:

    .section .bss.guest_page_tables, "aw", @nobits
    .balign 4096
    .global guest_pml4
guest_pml4:
    .skip 4096
guest_pdpt:
    .skip 4096
guest_page_directories:         /* four directories: 4 GiB in 2 MiB pages */
    .skip 4 * 4096

/* ---- 32-bit entry: EAX = multiboot2 magic, EBX = information block, paging off ---- */
    .section .text.guest_entry, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    mov %eax, %ebp                      /* keep the magic; ebx keeps the info pointer */
    lgdt guest_gdt_pointer
    ljmp $0x08, $7f
7:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $__bss_start, %edi              /* zero .bss: a loader need not */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov %ebp, guest_multiboot_magic
    mov %ebx, guest_multiboot_info
    mov $guest_stack_top, %esp
    call guest_phase32
    call guest_build_identity_map
    mov $guest_main64, %ebx
    mov guest_multiboot_magic, %edi
    mov guest_multiboot_info, %esi
    jmp guest_enter_long_mode

/* Default 32-bit phase for guests that have none (a strong definition wins). */
    .weak guest_phase32
guest_phase32:
    ret

/* Identity map of [0, 4 GiB) in 2 MiB pages, present + writable; [3 GiB, 4 GiB) (device
 * space: local APIC, I/O APIC) also PCD + PWT, i.e. uncached. Clobbers eax, ecx. */
    .global guest_build_identity_map
guest_build_identity_map:
    mov $guest_pdpt + 0x3, %eax
    mov %eax, guest_pml4
    mov $guest_page_directories + 0x3, %eax
    xor %ecx, %ecx
2:  mov %eax, guest_pdpt(,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jb 2b
    xor %ecx, %ecx
3:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                      /* P | RW | PS */
    cmp $0x600, %ecx                    /* 0x600 * 2 MiB = 3 GiB */
    jb 4f
    or $0x18, %eax                      /* PWT | PCD */
4:  mov %eax, guest_page_directories(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 3b
    ret

/* Enter long mode on the tables at guest_pml4 and call the 64-bit function at EBX with
 * EDI, ESI as its first two arguments, on the current stack. Never returns. Needs the
 * GDT at guest_gdt_pointer loaded and protected mode with paging off. */
    .global guest_enter_long_mode
guest_enter_long_mode:
    mov %cr4, %eax
    or $0x620, %eax                     /* PAE | OSFXSR | OSXMMEXCPT (Rust code uses SSE) */
    mov %eax, %cr4
    mov $guest_pml4, %eax
    mov %eax, %cr3
    push %ebx
    mov $0x80000001, %eax
    cpuid
    xor %ebx, %ebx
    bt $20, %edx                        /* NX supported: set EFER.NXE too */
    setc %bl
    shl $11, %ebx
    or $0x100, %ebx                     /* EFER.LME */
    mov $0xc0000080, %ecx
    rdmsr
    or %ebx, %eax
    wrmsr
    pop %ebx
    mov %cr0, %eax
    and $0xfffffffb, %eax               /* EM off */
    or $0x80000003, %eax                /* PG | MP | PE */
    mov %eax, %cr0
    ljmp $0x18, $5f
    .code64
5:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov %ebx, %ebx                      /* upper halves are undefined after the switch */
    mov %edi, %edi
    mov %esi, %esi
    mov %esp, %esp
    and $-16, %rsp
    call *%rbx
6:  cli
    hlt
    jmp 6b
