/* The segments guest's single-step cases (AT&T syntax), called by phase32.s after the
 * segment loads, with its GDT, IDT and flat selectors loaded; uses its seg_idt and
 * seg_trapped.
 *
 * With RFLAGS.TF set, the CPU raises a single-step #DB (DR6.BS set) after each
 * instruction, and after each iteration of a REP string instruction (EIP still at it
 * until the last one). Under Cordon the emulated instruction never runs on the CPU:
 * the core must leave the trap pending when it resumes the guest. Each case runs with
 * this file's #DB handler in IDT entry 1, which logs [EIP, DR6, ECX, EFLAGS] of each
 * trap in the case's record, clears DR6, and clears TF in the saved EFLAGS at the case's
 * stop EIP (or once the log is full, so a missing or misplaced trap cannot single-step
 * the rest of the guest).
 *
 * A fault case runs with this file's #GP handler in IDT entry 13 too: it records the
 * vector and resumes at the stop EIP with TF clear; an emulator-injected fault ends the
 * instruction without a single-step trap.
 *
 * Record ({STEP_RECORD} bytes): [traps, stop EIP, value read back, fault vector (0xff:
 * none)] then {STEP_LOG} entries [EIP, DR6, ECX, EFLAGS].
 * Trapped words: {STEP_STORE} (TF set), {STEP_STORE_CLEAR} (TF clear), {STEP_REP} (the
 * REP STOSB's three bytes).
 */

/* Starts single-step case \index: its record becomes the handler's, \stop its stop EIP. */
    .macro STEP_CASE index, stop
    movl $seg_step_records + \index * {STEP_RECORD}, seg_step_record
    mov seg_step_record, %edx
    movl $\stop, 4(%edx)
    movl $0xff, 12(%edx)
    mov $0xffff0ff0, %eax               /* DR6 without stale bits (case 24 left BS) */
    mov %eax, %dr6
    .endm

/* Sets TF: the first trap follows the instruction after the POPF. */
    .macro SET_TF
    pushfl
    orl $0x100, (%esp)
    popfl
    .endm

    .section .data.seg_single_step32, "aw"
    .balign 16
    .global seg_step_records
seg_step_records:
    .skip {STEP_CASES} * {STEP_RECORD}
seg_step_record:                        /* the running case's record */
    .long 0
seg_step_saved_gates:                   /* phase32.s's IDT entries 1 and 13 */
    .long 0, 0, 0, 0

    .section .text.seg_single_step32, "ax"
    .code32

seg_step_db:
    push %eax
    push %ecx                           /* the trapped code's ECX, logged */
    push %edx
    mov seg_step_record, %edx
    mov (%edx), %eax
    cmp ${STEP_LOG}, %eax
    jae 1f
    shl $4, %eax
    lea 16(%edx,%eax), %eax             /* the next log entry */
    mov 12(%esp), %ecx                  /* EIP */
    mov %ecx, (%eax)
    mov %dr6, %ecx
    mov %ecx, 4(%eax)
    mov 4(%esp), %ecx                   /* ECX */
    mov %ecx, 8(%eax)
    mov 20(%esp), %ecx                  /* EFLAGS */
    mov %ecx, 12(%eax)
1:  incl (%edx)
    mov $0xffff0ff0, %eax
    mov %eax, %dr6
    mov 12(%esp), %eax
    cmp 4(%edx), %eax
    je 2f
    cmpl ${STEP_LOG}, (%edx)
    jb 3f
2:  andl $~0x100, 20(%esp)              /* stop single-stepping */
3:  pop %edx
    pop %ecx
    pop %eax
    iretl

seg_step_gp:
    push %eax
    push %edx
    mov seg_step_record, %edx
    movl $13, 12(%edx)
    mov 4(%edx), %eax
    mov %eax, 12(%esp)                  /* resume at the stop EIP */
    andl $~0x100, 20(%esp)              /* with TF clear */
    pop %edx
    pop %eax
    add $4, %esp                        /* the error code */
    iretl

/* Points IDT entry \vector at \handler (interrupt gate, selector 0x08). */
    .macro STEP_GATE vector, handler
    mov $\handler, %eax
    mov %eax, %edx
    and $0xffff, %eax
    or $0x00080000, %eax
    mov %eax, seg_idt + \vector * 8
    and $0xffff0000, %edx
    or $0x8e00, %edx
    mov %edx, seg_idt + \vector * 8 + 4
    .endm

    .global seg_single_step32
seg_single_step32:
    mov seg_idt + 8, %eax
    mov %eax, seg_step_saved_gates
    mov seg_idt + 12, %eax
    mov %eax, seg_step_saved_gates + 4
    mov seg_idt + 13 * 8, %eax
    mov %eax, seg_step_saved_gates + 8
    mov seg_idt + 13 * 8 + 4, %eax
    mov %eax, seg_step_saved_gates + 12
    STEP_GATE 1, seg_step_db
    STEP_GATE 13, seg_step_gp

/* 0 an emulated store with TF set: one #DB, EIP after the store, DR6.BS */
    STEP_CASE 0, seg_step_store_next
    xor %ecx, %ecx                      /* logged: 0 */
    SET_TF
    movl ${STEP_STORE_VALUE}, {STEP_STORE}
    .global seg_step_store_next
seg_step_store_next:
    incl seg_trapped
    SEG_TRAPPED mov {STEP_STORE}, %eax
    mov %eax, seg_step_records + 0 * {STEP_RECORD} + 8

/* 1 the same store with TF clear: no #DB */
    STEP_CASE 1, seg_step_clear_next
    movl ${STEP_CLEAR_VALUE}, {STEP_STORE_CLEAR}
seg_step_clear_next:
    incl seg_trapped
    SEG_TRAPPED mov {STEP_STORE_CLEAR}, %eax
    mov %eax, seg_step_records + 1 * {STEP_RECORD} + 8

/* 2 REP STOSB of three bytes with TF set: a #DB after each iteration, EIP at the REP
 * STOSB with ECX 2 and 1, then after it with ECX 0 */
    SEG_TRAPPED movl $0, {STEP_REP}
    STEP_CASE 2, seg_step_rep_next
    mov ${STEP_REP}, %edi
    mov $3, %ecx
    mov $0x5a, %al
    cld
    SET_TF
    .global seg_step_rep_eip
seg_step_rep_eip:
    rep stosb
    .global seg_step_rep_next
seg_step_rep_next:
    incl seg_trapped
    SEG_TRAPPED mov {STEP_REP}, %eax
    mov %eax, seg_step_records + 2 * {STEP_RECORD} + 8

/* 3 MOVSL with TF set from the trapped source word to ES:0xfe of the small segment
 * (limit 0xff): the read exits, the emulator injects #GP(0) for the write; no #DB */
    mov $0x20, %ax
    mov %ax, %es
    mov ${SOURCE}, %esi
    mov $0xfe, %edi
    STEP_CASE 3, seg_step_fault_next
    SET_TF
    movsl
seg_step_fault_next:
    mov $0x10, %eax
    mov %eax, %es

    mov seg_step_saved_gates, %eax
    mov %eax, seg_idt + 8
    mov seg_step_saved_gates + 4, %eax
    mov %eax, seg_idt + 12
    mov seg_step_saved_gates + 8, %eax
    mov %eax, seg_idt + 13 * 8
    mov seg_step_saved_gates + 12, %eax
    mov %eax, seg_idt + 13 * 8 + 4
    ret

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
