/* The segments guest's 64-bit segment-load probes (AT&T syntax, System V ABI, called
 * through guest-support's probe_call, which keeps R12 and R13). Each makes one load
 * whose operand lies in trapped memory, uses the new register, puts the flat selector
 * (0x10) back and returns bits 31:0 = the word read or pushed, 47:32 = the selector
 * read back. FS and GS get an upper-half base first (IA32_FS_BASE / IA32_GS_BASE), so a
 * load that kept the old base's upper half reads unmapped memory and faults. */

    .section .text.seg_loads64, "ax"
    .code64

/* ECX = the base MSR: base 0xffff800000000000. Clobbers EAX, EDX. */
    .macro SCRAMBLE_BASE msr
    mov $\msr, %ecx
    xor %eax, %eax
    mov $0xffff8000, %edx
    wrmsr
    .endm

/* RAX |= \register's selector << 32; then \register = 0x10. Clobbers RCX. */
    .macro SELECTOR_AND_FLAT register
    xor %ecx, %ecx
    mov %\register, %cx
    shl $32, %rcx
    or %rcx, %rax
    mov $0x10, %ecx
    mov %ecx, %\register
    .endm

/* (RDI = selector address) -> DS */
    .global seg64_mov_ds
seg64_mov_ds:
    mov (%rdi), %ds
    xor %eax, %eax
    SELECTOR_AND_FLAT ds
    shr $32, %rax
    ret

/* (RDI = selector address, RSI = a word to push) -> pushed | SS << 32 */
    .global seg64_mov_ss
seg64_mov_ss:
    mov %rsp, %r8
    mov (%rdi), %ss
    mov %r8, %rsp                       /* the instruction after MOV SS */
    push %rsi
    pop %rax
    SELECTOR_AND_FLAT ss
    ret

/* (RDI = selector address, RSI = offset) -> FS:[RSI] | FS << 32 */
    .global seg64_mov_fs
seg64_mov_fs:
    SCRAMBLE_BASE 0xc0000100
    mov (%rdi), %fs
    mov %fs:(%rsi), %eax
    SELECTOR_AND_FLAT fs
    ret

/* (RDI = stack slot holding the selector, RSI = offset) -> FS:[RSI] | FS << 32 */
    .global seg64_pop_fs
seg64_pop_fs:
    SCRAMBLE_BASE 0xc0000100
    mov %rsp, %r8
    mov %rdi, %rsp
    pop %fs
    mov %r8, %rsp
    mov %fs:(%rsi), %eax
    SELECTOR_AND_FLAT fs
    ret

/* (RDI = stack slot holding the selector, RSI = offset) -> GS:[RSI] | GS << 32 */
    .global seg64_pop_gs
seg64_pop_gs:
    SCRAMBLE_BASE 0xc0000101
    mov %rsp, %r8
    mov %rdi, %rsp
    pop %gs
    mov %r8, %rsp
    mov %gs:(%rsi), %eax
    SELECTOR_AND_FLAT gs
    ret

/* (RDI = far pointer m16:32) -> FS:[offset] | FS << 32 */
    .global seg64_lfs
seg64_lfs:
    push %rbx
    SCRAMBLE_BASE 0xc0000100
    lfs (%rdi), %ebx
    mov %fs:(%rbx), %eax
    SELECTOR_AND_FLAT fs
    pop %rbx
    ret

/* (RDI = far pointer m16:32, RSI = a word to push) -> SS << 32 (the caller reads the
 * pushed word from the stack the far pointer names) */
    .global seg64_lss
seg64_lss:
    mov %rsp, %r8
    lss (%rdi), %esp
    push %rsi
    xor %eax, %eax
    mov %r8, %rsp
    SELECTOR_AND_FLAT ss
    ret
