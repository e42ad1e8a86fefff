/* demo guest, 32-bit protected mode with paging off: LAPIC and VGA checks (AT&T syntax).
 *
 * Called by guest-support's _start as guest_phase32 (flat segments, stack set up, DF=0).
 * Each check leaves its two reported values in EAX and EDX and calls demo_record, which
 * appends (passed, EAX, EDX, 0) to demo_phase32_results (order: demo_guest::phase32::CHECKS).
 * DEMO_EXPECT* count failed comparisons in demo_phase32_mismatches; a check passed when
 * none failed. Every instruction that touches trapped memory (LAPIC page, VGA text) is
 * written as DEMO_TRAPPED, which counts it in demo_phase32_trapped (flags preserved).
 */

    .macro DEMO_TRAPPED insn:vararg
    \insn
    pushfl
    incl demo_phase32_trapped
    popfl
    .endm

    .macro DEMO_EXPECT reg, value
    cmpl $\value, \reg
    je 8f
    incl demo_phase32_mismatches
8:
    .endm

    .macro DEMO_EXPECT_SAME a, b
    cmpl \a, \b
    je 8f
    incl demo_phase32_mismatches
8:
    .endm

    /* EAX holds the result; EDX reports the expected value it is compared with. */
    .macro DEMO_GOT_EXPECTED value
    mov $\value, %edx
    DEMO_EXPECT_SAME %eax, %edx
    .endm

    .macro DEMO_EXPECT_RANGE reg, low, high
    cmpl $\low, \reg
    jb 8f
    cmpl $\high, \reg
    jbe 9f
8:  incl demo_phase32_mismatches
9:
    .endm

    .section .data.demo_phase32, "aw"
    .balign 16
    .global demo_phase32_results
demo_phase32_results:
    .skip {RECORDS} * 16
    .global demo_phase32_recorded
demo_phase32_recorded:
    .long 0
    .global demo_phase32_trapped
demo_phase32_trapped:
    .long 0
demo_phase32_mismatches:
    .long 0
demo_phase32_pattern:               /* source of REP MOVSB to VGA */
    .byte 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
    .byte 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10
demo_phase32_copy:                  /* destination of REP MOVSB from VGA */
    .skip 16

    .section .text.demo_phase32, "ax"
    .code32

/* Appends (passed, EAX, EDX, 0) (bounded by the table size) and resets the mismatches. */
demo_record:
    mov demo_phase32_recorded, %ecx
    cmp ${RECORDS}, %ecx
    jae 2f
    shl $4, %ecx
    mov %eax, demo_phase32_results + 4(%ecx)
    mov %edx, demo_phase32_results + 8(%ecx)
    movl $0, demo_phase32_results + 12(%ecx)
    xor %eax, %eax
    cmpl $0, demo_phase32_mismatches
    sete %al
    mov %eax, demo_phase32_results(%ecx)
    incl demo_phase32_recorded
2:  movl $0, demo_phase32_mismatches
    ret

    .global guest_phase32
guest_phase32:
/* lapic-id: ID register bits 31:24 == CPUID.1:EBX[31:24] */
    DEMO_TRAPPED mov {LAPIC_ID}, %esi
    shr $24, %esi
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov %esi, %eax
    mov %ebx, %edx
    DEMO_EXPECT_SAME %eax, %edx
    call demo_record

/* lapic-version: version 0x10..0x15, max LVT entry 3..7 */
    DEMO_TRAPPED mov {LAPIC_VERSION}, %eax
    mov %eax, %edx
    shr $16, %edx
    and $0xff, %edx
    and $0xff, %eax
    DEMO_EXPECT_RANGE %eax, {VERSION_MIN}, {VERSION_MAX}
    DEMO_EXPECT_RANGE %edx, {MAX_LVT_MIN}, {MAX_LVT_MAX}
    call demo_record

/* tpr: write 0x50, read it back, restore 0 */
    DEMO_TRAPPED movl $0x50, {LAPIC_TPR}
    DEMO_TRAPPED mov {LAPIC_TPR}, %eax
    DEMO_TRAPPED movl $0, {LAPIC_TPR}
    and $0xff, %eax
    DEMO_GOT_EXPECTED 0x50
    call demo_record

/* mov8: immediate store, load into AL */
    DEMO_TRAPPED movb $0xa5, {VGA} + 0x100
    xor %eax, %eax
    DEMO_TRAPPED mov {VGA} + 0x100, %al
    DEMO_GOT_EXPECTED 0xa5
    call demo_record

/* mov16: register store, load into AX */
    mov $0xbeef, %ecx
    DEMO_TRAPPED mov %cx, {VGA} + 0x102
    xor %eax, %eax
    DEMO_TRAPPED mov {VGA} + 0x102, %ax
    DEMO_GOT_EXPECTED 0xbeef
    call demo_record

/* mov32: EAX to moffs32 (opcode A3), register-indirect load */
    mov $0x12345678, %eax
    DEMO_TRAPPED mov %eax, {VGA} + 0x104
    mov ${VGA} + 0x104, %edi
    xor %eax, %eax
    DEMO_TRAPPED mov (%edi), %eax
    DEMO_GOT_EXPECTED 0x12345678
    call demo_record

/* movzx8, movzx16, movsx8, movsx16 of the word 0x80f1 */
    DEMO_TRAPPED movw $0x80f1, {VGA} + 0x108
    DEMO_TRAPPED movzbl {VGA} + 0x108, %eax
    DEMO_GOT_EXPECTED 0xf1
    call demo_record
    DEMO_TRAPPED movzwl {VGA} + 0x108, %eax
    DEMO_GOT_EXPECTED 0x80f1
    call demo_record
    DEMO_TRAPPED movsbl {VGA} + 0x108, %eax
    DEMO_GOT_EXPECTED 0xfffffff1
    call demo_record
    DEMO_TRAPPED movswl {VGA} + 0x108, %eax
    DEMO_GOT_EXPECTED 0xffff80f1
    call demo_record

/* add: 1000 + 234 (register) + 0x10000 (immediate) */
    DEMO_TRAPPED movl $1000, {VGA} + 0x110
    mov $234, %ecx
    DEMO_TRAPPED add %ecx, {VGA} + 0x110
    DEMO_TRAPPED addl $0x10000, {VGA} + 0x110
    DEMO_TRAPPED mov {VGA} + 0x110, %eax
    DEMO_GOT_EXPECTED 0x104d2
    call demo_record

/* or: 0xf0f00000 | 0x0000ff0f (immediate) */
    DEMO_TRAPPED movl $0xf0f00000, {VGA} + 0x114
    DEMO_TRAPPED orl $0x0000ff0f, {VGA} + 0x114
    DEMO_TRAPPED mov {VGA} + 0x114, %eax
    DEMO_GOT_EXPECTED 0xf0f0ff0f
    call demo_record

/* and: 0xffff00ff & 0x0f0f0f0f (immediate) */
    DEMO_TRAPPED movl $0xffff00ff, {VGA} + 0x118
    DEMO_TRAPPED andl $0x0f0f0f0f, {VGA} + 0x118
    DEMO_TRAPPED mov {VGA} + 0x118, %eax
    DEMO_GOT_EXPECTED 0x0f0f000f
    call demo_record

/* xchg: memory 0x11111111 <-> EAX 0x22222222 */
    DEMO_TRAPPED movl $0x11111111, {VGA} + 0x120
    mov $0x22222222, %eax
    DEMO_TRAPPED xchg %eax, {VGA} + 0x120
    DEMO_TRAPPED mov {VGA} + 0x120, %edx
    DEMO_EXPECT %eax, 0x11111111
    DEMO_EXPECT %edx, 0x22222222
    call demo_record

/* lock-xadd: memory 100, EAX 23 -> EAX 100, memory 123 */
    DEMO_TRAPPED movl $100, {VGA} + 0x124
    mov $23, %eax
    DEMO_TRAPPED lock xadd %eax, {VGA} + 0x124
    DEMO_TRAPPED mov {VGA} + 0x124, %edx
    DEMO_EXPECT %eax, 100
    DEMO_EXPECT %edx, 123
    call demo_record

/* lock-cmpxchg: 5 -> 9 succeeds (ZF=1); then expecting 5 fails (ZF=0, EAX = 9) */
    DEMO_TRAPPED movl $5, {VGA} + 0x128
    xor %ebx, %ebx
    mov $5, %eax
    mov $9, %ecx
    DEMO_TRAPPED lock cmpxchg %ecx, {VGA} + 0x128
    setz %bl
    mov $5, %eax
    mov $7, %ecx
    DEMO_TRAPPED lock cmpxchg %ecx, {VGA} + 0x128
    setnz %bh
    DEMO_TRAPPED mov {VGA} + 0x128, %edx
    DEMO_EXPECT %ebx, 0x101
    DEMO_EXPECT %eax, 9
    DEMO_EXPECT %edx, 9
    call demo_record

/* rep-stosb: 16 bytes of 0x5c; the dword after them stays 0 */
    DEMO_TRAPPED movl $0, {VGA} + 0x150
    mov ${VGA} + 0x140, %edi
    mov $16, %ecx
    mov $0x5c, %al
    DEMO_TRAPPED rep stosb
    DEMO_TRAPPED mov {VGA} + 0x140, %eax
    DEMO_TRAPPED mov {VGA} + 0x14c, %edx
    DEMO_TRAPPED mov {VGA} + 0x150, %ecx
    DEMO_EXPECT %eax, 0x5c5c5c5c
    DEMO_EXPECT %edx, 0x5c5c5c5c
    DEMO_EXPECT %ecx, 0
    call demo_record

/* rep-movsb-to-vga: 16 bytes from RAM */
    mov $demo_phase32_pattern, %esi
    mov ${VGA} + 0x160, %edi
    mov $16, %ecx
    DEMO_TRAPPED rep movsb
    DEMO_TRAPPED mov {VGA} + 0x160, %eax
    DEMO_TRAPPED mov {VGA} + 0x16c, %edx
    DEMO_EXPECT %eax, 0x04030201
    DEMO_EXPECT %edx, 0x100f0e0d
    call demo_record

/* rep-movsb-from-vga: the same 16 bytes back into RAM */
    mov ${VGA} + 0x160, %esi
    mov $demo_phase32_copy, %edi
    mov $16, %ecx
    DEMO_TRAPPED rep movsb
    mov demo_phase32_copy, %eax
    mov demo_phase32_copy + 12, %edx
    DEMO_EXPECT %eax, 0x04030201
    DEMO_EXPECT %edx, 0x100f0e0d
    call demo_record
    ret

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
