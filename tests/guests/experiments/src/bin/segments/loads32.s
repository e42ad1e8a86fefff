/* The segments guest's 32-bit segment-register loads (AT&T syntax), called by
 * phase32.s with its GDT and IDT loaded; uses its CASE_BEGIN/CASE_END/SEG_TRAPPED.
 *
 * Every selector and far pointer lies in VGA text memory (trapped), so each load exits
 * to the emulator, which reads the descriptor (GDT or LDT), checks it and returns the
 * loaded register for the core to write into the VMCS. A value case records
 * [value low = a word read through the new segment, value high = the selector read
 * back]; the bases lie in guest RAM, so the read itself does not exit.
 *
 * Trapped words (flat):
 *   {W_DS}  0x58  mov to DS            {W_SS}  0x60  mov to SS
 *   {W_LDT} 0x04  LDT selector         {W_NP}  0x70  not present
 *   {W_PAST} 0x200 past the GDT limit  {W_NULL} 0   null, to SS
 *   {W_SS_FLAT} 0x10 to SS with TF set
 *   {FP_FS} far pointer 12:0x58        {FP_SS} far pointer 0x100:0x60
 *   {TRAPPED_STACK} a stack slot holding 0x58, for POP ES/FS/GS
 */

/* Puts the 32-bit base \symbol into the descriptor at \descriptor (base bits zero). */
    .macro SET_BASE descriptor, symbol
    mov $\symbol, %eax
    mov %eax, %edx
    shl $16, %eax
    or %eax, \descriptor
    mov %edx, %eax
    shr $16, %eax
    and $0xff, %eax
    and $0xff000000, %edx
    or %edx, %eax
    or %eax, \descriptor + 4
    .endm

/* Records [value low, value high] = [EAX, EDX] in the running case's record, with every
 * memory operand through SS (flat in the cases that use this). */
    .macro RECORD_VALUE
    mov %ss:seg_current, %ecx
    mov %eax, %ss:12(%ecx)
    mov %edx, %ss:16(%ecx)
    .endm

/* After a stack case (CASE_END ran on the case's SS:ESP): records the word the push
 * left at the top of seg_alt_stack and the SS selector, then restores the flat stack.
 * A faulted case keeps the record the handler left. */
    .macro STACK_CASE_DONE
    xor %edx, %edx
    mov %ss, %dx
    mov $0x10, %eax
    mov %eax, %ss
    mov seg_saved_esp, %esp
    mov seg_alt_stack + 0xfc, %eax
    mov seg_current, %ecx
    cmpl $0xff, (%ecx)
    jne 1f
    mov %eax, 12(%ecx)
    mov %edx, 16(%ecx)
1:
    .endm

    .section .data.seg_loads32, "aw"
    .balign 16
seg_probe_data:                         /* 0x58's base */
    .long 0, 0, {PROBE_A}, {PROBE_B}
    .skip 256 - 16
seg_probe_ldt_data:                     /* the LDT segment's base */
    .long 0, 0, {PROBE_LDT}, 0
    .skip 256 - 16
seg_ldt:
    .quad 0x00409300000000ff            /* LDT selector 0x04: data, base set at run time */
    .balign 16
seg_alt_stack:                          /* 0x60's base */
    .skip 4096

    .section .text.seg_loads32, "ax"
    .code32

    .global seg_loads32
seg_loads32:
    SET_BASE seg_gdt_probe, seg_probe_data
    SET_BASE seg_gdt_alt_stack, seg_alt_stack
    SET_BASE seg_gdt_ldt, seg_ldt
    SET_BASE seg_ldt, seg_probe_ldt_data
    SEG_TRAPPED movl $0x58, {W_DS}
    SEG_TRAPPED movl $0x60, {W_SS}
    SEG_TRAPPED movl $0x10, {W_SS_FLAT}
    SEG_TRAPPED movl $0x04, {W_LDT}
    SEG_TRAPPED movl $0x70, {W_NP}
    SEG_TRAPPED movl $0x200, {W_PAST}
    SEG_TRAPPED movl $0, {W_NULL}
    SEG_TRAPPED movl $12, {FP_FS}
    SEG_TRAPPED movw $0x58, {FP_FS} + 4
    SEG_TRAPPED movl $0x100, {FP_SS}
    SEG_TRAPPED movw $0x60, {FP_SS} + 4

/* 13 mov DS from trapped memory, then a read through DS (base 0x58's) */
    CASE_BEGIN 13
    mov {W_DS}, %ds
    incl %ss:seg_trapped
    mov %ds:8, %eax
    xor %edx, %edx
    mov %ds, %dx
    RECORD_VALUE
    mov $0x10, %eax
    mov %eax, %ds
    CASE_END

/* 14 mov SS from trapped memory; the next instruction sets ESP and the stack works */
    CASE_BEGIN 14
    mov {W_SS}, %ss
    mov $0x100, %esp
    incl seg_trapped
    pushl ${STACK_A}
    CASE_END
    STACK_CASE_DONE

/* 15-17 POP ES/FS/GS with the stack in trapped memory, then a read through the segment */
    SEG_TRAPPED movl $0x58, {TRAPPED_STACK}
    CASE_BEGIN 15
    mov ${TRAPPED_STACK}, %esp
    pop %es
    mov seg_saved_esp, %esp
    incl seg_trapped
    mov %es:8, %eax
    xor %edx, %edx
    mov %es, %dx
    RECORD_VALUE
    CASE_END

    CASE_BEGIN 16
    mov ${TRAPPED_STACK}, %esp
    pop %fs
    mov seg_saved_esp, %esp
    incl seg_trapped
    mov %fs:8, %eax
    xor %edx, %edx
    mov %fs, %dx
    RECORD_VALUE
    CASE_END
    mov %eax, %fs                       /* 0x10 from CASE_END */

    CASE_BEGIN 17
    mov ${TRAPPED_STACK}, %esp
    pop %gs
    mov seg_saved_esp, %esp
    incl seg_trapped
    mov %gs:8, %eax
    xor %edx, %edx
    mov %gs, %dx
    RECORD_VALUE
    CASE_END
    mov %eax, %gs

/* 18 LFS from a trapped far pointer: offset 12 into EBX, FS = 0x58; read FS:[EBX] */
    CASE_BEGIN 18
    lfs {FP_FS}, %ebx
    incl seg_trapped
    mov %fs:(%ebx), %eax
    xor %edx, %edx
    mov %fs, %dx
    RECORD_VALUE
    CASE_END
    mov %eax, %fs

/* 19 LSS from a trapped far pointer: SS:ESP = 0x60:0x100, and the stack works */
    CASE_BEGIN 19
    lss {FP_SS}, %esp
    incl seg_trapped
    pushl ${STACK_B}
    CASE_END
    STACK_CASE_DONE

/* 20 an LDT selector (TI = 1): DS from the LDT, read through it */
    mov $0x68, %eax
    lldt %ax
    CASE_BEGIN 20
    mov {W_LDT}, %ds
    incl %ss:seg_trapped
    mov %ds:8, %eax
    xor %edx, %edx
    mov %ds, %dx
    RECORD_VALUE
    mov $0x10, %eax
    mov %eax, %ds
    CASE_END
    xor %eax, %eax
    lldt %ax

/* 21-23 faults the emulator raises: #NP(0x70), #GP(0x200), #GP(0) for a null SS. After
 * a wrong success the flat selectors are put back before CASE_END uses them. */
    CASE_BEGIN 21
    mov {W_NP}, %ds
    mov $0x10, %eax
    mov %eax, %ds
    CASE_END

    CASE_BEGIN 22
    mov {W_PAST}, %ds
    mov $0x10, %eax
    mov %eax, %ds
    CASE_END

    CASE_BEGIN 23
    mov {W_NULL}, %ss
    mov $0x10, %eax
    mov %eax, %ss
    CASE_END

/* 24 MOV SS with TF set (by POPF, so the trap would follow the MOV SS): the CPU holds
 * the single-step trap until the instruction after MOV SS has run. Under Cordon the
 * emulated MOV SS leaves blocking by MOV SS and a pending single-step trap in the VMCS;
 * the #DB must report the EIP after that next instruction. The gate clears TF. */
    CASE_BEGIN 24
    pushfl
    orl $0x100, (%esp)
    popfl
    mov {W_SS_FLAT}, %ss
    incl seg_trapped                    /* the instruction after MOV SS */
    .global seg_single_step_eip
seg_single_step_eip:
    nop
    nop
    CASE_END
    ret

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
