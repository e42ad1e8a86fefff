/* Cordon test guests: the AP start-up path (AT&T syntax).
 *
 * guest_ap_trampoline_start..end is copied by the BSP to the SIPI page (physical
 * {TRAMPOLINE}); an AP starts there in real mode with CS = page >> 4, IP = 0. It loads
 * the guests' GDT (guest_gdt from entry.s), enters 32-bit protected mode at
 * guest_ap_entry32, takes the next AP slot (1, 2, ...) and its stack, and enters long
 * mode on guest_pml4 through guest_enter_long_mode, calling
 * guest_ap_main64(slot, 0) (Rust, smp.rs).
 */

    .section .text.guest_ap_trampoline, "ax"
    .code16
    .global guest_ap_trampoline_start
    .global guest_ap_trampoline_end
guest_ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl guest_ap_gdt_pointer16 - guest_ap_trampoline_start
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $guest_ap_entry32
    .balign 8
guest_ap_gdt_pointer16:             /* 32-bit form: limit, base */
    .short 31
    .long guest_gdt
guest_ap_trampoline_end:

    .section .data.guest_ap_slots, "aw"
    .balign 4
    .global guest_ap_next_slot
guest_ap_next_slot:
    .long 0

    .section .bss.guest_ap_stacks, "aw", @nobits
    .balign 16
guest_ap_stacks:
    .skip {MAX_APS} * {STACK_SIZE}

    .section .text.guest_ap_entry, "ax"
    .code32
guest_ap_entry32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $1, %eax
    lock xadd %eax, guest_ap_next_slot
    cmp ${MAX_APS}, %eax
    jae 9f
    lea 1(%eax), %edi                   /* slot: 1, 2, ... */
    mov %edi, %esp
    imul ${STACK_SIZE}, %esp
    add $guest_ap_stacks, %esp          /* top of this slot's stack */
    xor %esi, %esi
    mov $guest_ap_main64, %ebx
    jmp guest_enter_long_mode
9:  cli                                 /* more APs than slots: park this one */
    hlt
    jmp 9b

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
