/* The segments guest's 32-bit phase (AT&T syntax): protected mode, paging off, run as
 * guest_phase32 by guest-support's _start on the BSP before long mode.
 *
 * It loads its own GDT (the support's selectors 0x08/0x10/0x18 plus the test segments,
 * ring-3 segments and a TSS for the ring-0 stack), its own 32-bit IDT whose handlers
 * record vector and error code and resume the case (longjmp-style: the saved ESP and a
 * resume address), then runs the cases in the order of main.rs CASES. Each case writes
 * one record [vector (0xff: none), error code, ticks, value low, value high, fault EIP] to
 * seg_records; the segment-load cases (loads32.s) follow the limit cases. Every
 * instruction that touches trapped memory and is not expected to fault is written as
 * SEG_TRAPPED and counted in seg_trapped. At the end it restores the support's GDT.
 *
 * Test segments (all in VGA text memory, trapped):
 *   0x20 small data   base 0xb8100 limit 0xff  read/write
 *   0x28 read-only    base 0xb8200 limit 0xff  read only
 *   0x30 expand-down  base 0xb8000 limit 0xfff read/write, B=0: offsets 0x1000..0xffff
 *   0x4b ring-3 stack base 0xb8400 limit 0xff  read/write, DPL 3
 * Ring 3: code 0x3b, flat data 0x43; TSS 0x50 (ESP0 = seg_ring0_stack_top).
 * Segment loads (loads32.s; bases set at run time):
 *   0x58 probe data  base seg_probe_data  limit 0xff  read/write
 *   0x60 alt stack   base seg_alt_stack   limit 0xfff read/write
 *   0x68 LDT         base seg_ldt         limit 7     (LDT selector 0x04: data, base
 *                    seg_probe_ldt_data, limit 0xff)
 *   0x70 not-present data
 * A source word for MOVS/PUSH lives at {SOURCE} (flat, trapped).
 */

    .macro SEG_TRAPPED insn:vararg
    \insn
    pushfl
    incl seg_trapped
    popfl
    .endm

    .section .data.seg_phase32, "aw"
    .balign 16
seg_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            /* 0x08 flat code32 */
    .quad 0x00cf92000000ffff            /* 0x10 flat data */
    .quad 0x00af9a000000ffff            /* 0x18 code64 */
    .quad 0x0040920b810000ff            /* 0x20 small data */
    .quad 0x0040900b820000ff            /* 0x28 read-only */
    .quad 0x0000960b80000fff            /* 0x30 expand-down */
    .quad 0x00cffa000000ffff            /* 0x38 ring-3 code32 */
    .quad 0x00cff2000000ffff            /* 0x40 ring-3 flat data */
    .quad 0x0040f20b840000ff            /* 0x48 ring-3 stack */
seg_gdt_tss:
    .quad 0                             /* 0x50 TSS, built at run time */
    .global seg_gdt_probe, seg_gdt_alt_stack, seg_gdt_ldt
seg_gdt_probe:
    .quad 0x00409300000000ff            /* 0x58 probe data, base set at run time */
seg_gdt_alt_stack:
    .quad 0x0040930000000fff            /* 0x60 alt stack, base set at run time */
seg_gdt_ldt:
    .quad 0x0000820000000007            /* 0x68 LDT, base set at run time */
    .quad 0x00401300000000ff            /* 0x70 data, not present */
seg_gdt_end:
    .balign 8
seg_gdt_pointer:
    .short seg_gdt_end - seg_gdt - 1
    .long seg_gdt
    .balign 8
seg_idt_pointer:
    .short 32 * 8 - 1
    .long seg_idt
    .balign 8
seg_idt:
    .skip 32 * 8
    .balign 16
seg_tss:
    .long 0                             /* previous task link */
    .long seg_ring0_stack_top           /* ESP0 */
    .long 0x10                          /* SS0 */
    .skip 104 - 12 - 4
    .short 0
    .short 104                          /* I/O map base: none */
    .global seg_records
seg_records:
    .skip {CASES} * {RECORD}
    .global seg_trapped
seg_trapped:
    .long 0
    .global seg_rep_copied
seg_rep_copied:                         /* the 8 bytes case 12 copied, read back flat */
    .long 0, 0
seg_current:                            /* the record of the running case */
    .long 0
seg_saved_esp:
    .long 0
seg_resume:
    .long 0
seg_start_tsc:
    .long 0
    .balign 16
seg_ring0_stack:
    .skip 4096
seg_ring0_stack_top:
seg_ring3_stack:
    .skip 1024
seg_ring3_stack_top:

    .section .text.seg_phase32, "ax"
    .code32

/* Exception stubs, 16 bytes apart: push a zero error code where the CPU pushes none. */
    .balign 16
seg_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    push $0
    .endif
    push $\vector
    jmp seg_fault_common
    .endr

/* Records vector, error code and EIP (vector 6, the UD2 that ends a ring-3 case, as "no
 * fault") in the running case's record, then resumes it on its saved ring-0 stack. */
seg_fault_common:
    mov %ss:(%esp), %eax
    mov %ss:4(%esp), %edx
    mov %ss:8(%esp), %ebx               /* the EIP the exception reports */
    mov $0x10, %ecx
    mov %ecx, %ds
    mov %ecx, %es
    mov %ecx, %ss
    cmp $6, %eax
    jne 1f
    mov $0xff, %eax
    xor %edx, %edx
1:  mov seg_current, %ecx
    mov %eax, (%ecx)
    mov %edx, 4(%ecx)
    mov %ebx, 20(%ecx)
    mov seg_saved_esp, %esp
    jmp *seg_resume

/* Case prologue: ECX = record; sets the resume point (label 9 of the case), saves ESP,
 * clears the record to "no fault" and starts the clock. */
    .macro CASE_BEGIN index
    movl $seg_records + \index * {RECORD}, seg_current
    movl $9f, seg_resume
    mov %esp, seg_saved_esp
    mov seg_current, %ecx
    movl $0xff, (%ecx)
    movl $0, 4(%ecx)
    movl $0, 12(%ecx)
    movl $0, 16(%ecx)
    movl $0, 20(%ecx)
    lfence
    rdtsc
    lfence
    mov %eax, seg_start_tsc
    .endm

/* Case epilogue at label 9: ticks into the record, flat data segments back. */
    .macro CASE_END
9:  lfence
    rdtsc
    lfence
    sub seg_start_tsc, %eax
    mov seg_current, %ecx
    mov %eax, 8(%ecx)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    .endm

/* Runs the code at \entry in ring 3 (flat code and data, stack segment \ss with ESP
 * \esp); the code ends with UD2 (recorded as "no fault") unless it faults first. */
    .macro RING3 entry, ss, esp
    push $\ss
    push $\esp
    pushfl
    push $0x3b
    push $\entry
    iretl
    .endm

    .global guest_phase32
guest_phase32:
    push %ebp
    lgdt seg_gdt_pointer
    ljmp $0x08, $1f
1:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    /* the TSS descriptor: base seg_tss, limit 103, type 9 (available 32-bit), DPL 0 */
    mov $seg_tss, %eax
    mov %eax, %edx
    shl $16, %eax
    or $103, %eax
    mov %eax, seg_gdt_tss
    mov %edx, %eax
    shr $16, %eax
    and $0xff, %eax
    mov %edx, %ecx
    and $0xff000000, %ecx
    or %ecx, %eax
    or $0x00008900, %eax
    mov %eax, seg_gdt_tss + 4
    mov $0x50, %ax
    ltr %ax
    /* the IDT: 32 interrupt gates to the stubs */
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $4, %eax
    add $seg_stubs, %eax
    mov %eax, %edx
    and $0xffff, %eax
    or $0x00080000, %eax
    mov %eax, seg_idt(,%ecx,8)
    and $0xffff0000, %edx
    or $0x8e00, %edx
    mov %edx, seg_idt + 4(,%ecx,8)
    inc %ecx
    cmp $32, %ecx
    jb 2b
    lidt seg_idt_pointer

    /* the source word of the MOVS/PUSH cases, and the read-only segment's word */
    SEG_TRAPPED movl ${SOURCE_VALUE}, {SOURCE}
    SEG_TRAPPED movl ${RO_VALUE}, 0xb8210

/* 0 small-in-limit: store at the last in-limit dword, read it back flat */
    mov $0x20, %ax
    mov %ax, %es
    CASE_BEGIN 0
    SEG_TRAPPED movl ${SMALL_VALUE}, %es:0xfc
    CASE_END
    SEG_TRAPPED mov 0xb81fc, %eax
    mov %eax, seg_records + 0 * {RECORD} + 12

/* 1 small-beyond-limit-mov: the CPU checks the limit itself */
    mov $0x20, %ax
    mov %ax, %es
    CASE_BEGIN 1
    movl $1, %es:0xfe
    CASE_END

/* 2 small-beyond-limit-movs: the source read (trapped) exits first */
    mov $0x20, %ax
    mov %ax, %es
    mov ${SOURCE}, %esi
    mov $0xfe, %edi
    CASE_BEGIN 2
    movsl
    CASE_END

/* 3 read-only-read */
    mov $0x28, %ax
    mov %ax, %es
    CASE_BEGIN 3
    SEG_TRAPPED mov %es:0x10, %eax
    mov seg_current, %ecx
    mov %eax, 12(%ecx)
    CASE_END

/* 4 read-only-write-mov */
    mov $0x28, %ax
    mov %ax, %es
    CASE_BEGIN 4
    movl $1, %es:0x10
    CASE_END

/* 5 read-only-write-movs */
    mov $0x28, %ax
    mov %ax, %es
    mov ${SOURCE}, %esi
    mov $0x10, %edi
    CASE_BEGIN 5
    movsl
    CASE_END

/* 6 expand-down-in-limit: offset 0x1000 is the first valid one (0xb9000) */
    mov $0x30, %ax
    mov %ax, %es
    CASE_BEGIN 6
    SEG_TRAPPED movl ${EXPAND_DOWN_VALUE}, %es:0x1000
    CASE_END
    SEG_TRAPPED mov 0xb9000, %eax
    mov %eax, seg_records + 6 * {RECORD} + 12

/* 7 expand-down-below-limit-mov */
    mov $0x30, %ax
    mov %ax, %es
    CASE_BEGIN 7
    movl $1, %es:0xffc
    CASE_END

/* 8 expand-down-below-limit-movs */
    mov $0x30, %ax
    mov %ax, %es
    mov ${SOURCE}, %esi
    mov $0xffc, %edi
    CASE_BEGIN 8
    movsl
    CASE_END

/* 9 ring-3 stack push in limit: ESP 0x100 -> writes 0xb84fc */
    CASE_BEGIN 9
    RING3 seg_ring3_push_immediate, 0x4b, 0x100
    CASE_END
    cmpl $0xff, seg_records + 9 * {RECORD}
    jne 4f
    incl seg_trapped                    /* the push went through */
4:
    SEG_TRAPPED mov 0xb84fc, %eax
    mov %eax, seg_records + 9 * {RECORD} + 12

/* 10 ring-3 stack push beyond the limit (ESP 2): the CPU's #SS */
    CASE_BEGIN 10
    RING3 seg_ring3_push_immediate, 0x4b, 0x2
    CASE_END

/* 11 ring-3 PUSH of a trapped word with ESP 2: the read exits first, the emulator's #SS */
    CASE_BEGIN 11
    RING3 seg_ring3_push_memory, 0x4b, 0x2
    CASE_END

/* 12 rep-movsb-into-limit: 16 bytes from the trapped source to ES:0xf8 (small, limit
 * 0xff): the emulator copies 8, retires them with EIP kept, and faults the 9th; the
 * record's value is EDI at the fault (0x100 when exactly 8 bytes went through). */
    SEG_TRAPPED movl ${SOURCE_HIGH_VALUE}, {SOURCE} + 4
    mov $0x20, %ax
    mov %ax, %es
    mov ${SOURCE}, %esi
    mov $0xf8, %edi
    mov $16, %ecx
    CASE_BEGIN 12
    rep movsb
    CASE_END
    mov seg_current, %ecx
    mov %edi, 12(%ecx)
    SEG_TRAPPED mov 0xb81f8, %eax
    mov %eax, seg_rep_copied
    SEG_TRAPPED mov 0xb81fc, %eax
    mov %eax, seg_rep_copied + 4

    call seg_loads32
    call seg_single_step32

    lgdt guest_gdt_pointer
    ljmp $0x08, $3f
3:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    pop %ebp
    ret

/* Ring-3 bodies: load the ring-3 flat data selector, make the access, end with UD2. */
seg_ring3_push_immediate:
    mov $0x43, %eax
    mov %eax, %ds
    mov %eax, %es
    pushl ${STACK_VALUE}                /* counted by the caller when it did not fault */
    ud2

seg_ring3_push_memory:
    mov $0x43, %eax
    mov %eax, %ds
    mov %eax, %es
    pushl {SOURCE}
    ud2

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
