/* The paging guest's probe bodies (AT&T syntax, System V). paging_movsq and
 * paging_cmpsq make one string access pair: the read at RSI (trapped VGA) exits first,
 * so the access at RDI is the emulator's to translate. The page paging_alias_page is
 * also mapped at a linear alias: paging_flip_then_load, run from there, ORs RDX into
 * its own PTE at RDI without INVLPG (the TLB keeps the old rights) and then loads from
 * trapped memory at RSI, so the emulator, fetching the instruction through the page
 * tables, sees the new rights. */

    .section .text.paging_probes, "ax"
    .code64
    .global paging_movsq
paging_movsq:
    movsq
    ret

    .global paging_cmpsq
paging_cmpsq:
    cmpsq
    ret

    .section .text.paging_alias_page, "ax"
    .balign 4096
    .global paging_alias_page
paging_alias_page:
    .global paging_flip_then_load
paging_flip_then_load:
    or %rdx, (%rdi)
    .global paging_flip_load
paging_flip_load:
    mov (%rsi), %eax
    ret

/* Ring-3 bodies (run from the page's user alias): one access, then UD2 back to ring 0. */
    .global paging_user_load
paging_user_load:
    mov (%rdi), %eax
    ud2
    .global paging_user_movsq
paging_user_movsq:
    movsq
    ud2
    .balign 4096

/* ---- ring 3 and back: a GDT with user segments and a 64-bit TSS, and an IDT whose
 * handlers record the exception and resume paging_ring3_probe's caller in ring 0. ---- */
    .section .data.paging_ring3, "aw"
    .balign 16
    .global paging_gdt
paging_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            /* 0x08 code32 (as guest-support's) */
    .quad 0x00cf92000000ffff            /* 0x10 data */
    .quad 0x00af9a000000ffff            /* 0x18 code64 */
    .quad 0x00cff2000000ffff            /* 0x20 user data */
    .quad 0x00affa000000ffff            /* 0x28 user code64 */
    .global paging_gdt_tss
paging_gdt_tss:
    .quad 0, 0                          /* 0x30 64-bit TSS, built at run time */
paging_gdt_end:
    .balign 8
    .global paging_gdt_pointer
paging_gdt_pointer:
    .short paging_gdt_end - paging_gdt - 1
    .quad paging_gdt
    .balign 16
    .global paging_tss
paging_tss:
    .long 0
    .quad paging_ring0_stack_top        /* RSP0 */
    .skip 104 - 12
    .balign 16
    .global paging_ring3_idt
paging_ring3_idt:
    .skip 32 * 16
    .global paging_ring3_vector
paging_ring3_vector:
    .quad 0
    .global paging_ring3_error
paging_ring3_error:
    .quad 0
    .global paging_ring3_cr2
paging_ring3_cr2:
    .quad 0
paging_ring3_saved_rsp:
    .quad 0
    .balign 16
paging_ring0_stack:
    .skip 8192
paging_ring0_stack_top:

    .section .text.paging_ring3, "ax"
    .balign 16
    .global paging_ring3_stubs
paging_ring3_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    push $0
    .endif
    push $\vector
    jmp paging_ring3_common
    .endr

/* Records vector, error code and CR2, and returns from paging_ring3_probe. */
paging_ring3_common:
    mov $0x10, %eax
    mov %eax, %ss
    pop %rax
    mov %rax, paging_ring3_vector(%rip)
    pop %rax
    mov %rax, paging_ring3_error(%rip)
    mov %cr2, %rax
    mov %rax, paging_ring3_cr2(%rip)
    mov paging_ring3_saved_rsp(%rip), %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* u64 paging_ring3_probe(rip, rsp, rdi3, rsi3) (System V): runs the ring-3 code at
 * `rip` on stack `rsp` with RDI = rdi3, RSI = rsi3; it ends in an exception (UD2 for
 * "done"), recorded in paging_ring3_vector/error/cr2. Needs paging_ring3_idt loaded. */
    .global paging_ring3_probe
paging_ring3_probe:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, paging_ring3_saved_rsp(%rip)
    movq $0xff, paging_ring3_vector(%rip)
    pushq $0x23                         /* user SS */
    push %rsi                           /* user RSP */
    pushfq
    pushq $0x2b                         /* user CS */
    push %rdi                           /* user RIP */
    mov %rdx, %rdi
    mov %rcx, %rsi
    iretq
