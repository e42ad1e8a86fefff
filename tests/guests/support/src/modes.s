/* Cordon test guests: a call from 64-bit mode into 32-bit protected mode with paging
 * off, and back (AT&T syntax).
 *
 * u32 guest_call_protected32(u32 function, u32 argument)   (System V ABI)
 * Leaves long mode (compatibility-mode code segment 0x08, CR0.PG off, EFER.LME off),
 * calls the 32-bit `function` with EAX = argument on the current stack (which must lie
 * below 4 GiB), and returns its EAX after re-entering long mode on guest_pml4.
 * `function` may clobber every general register except ESP, must keep DS/ES/SS = 0x10,
 * and must return with paging off; interrupts stay off and no exception may happen
 * (the 64-bit IDT is no use in protected mode).
 */

    .section .text.guest_call_protected32, "ax"
    .code64
    .global guest_call_protected32
guest_call_protected32:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %edi, %ebx
    mov %esi, %ebp
    lea 1f(%rip), %rax
    pushq $0x08
    push %rax
    lretq
    .code32
1:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr0, %eax
    and $0x7fffffff, %eax               /* paging off: long mode is inactive */
    mov %eax, %cr0
    mov $0xc0000080, %ecx
    rdmsr
    and $0xfffffeff, %eax               /* EFER.LME off */
    wrmsr
    mov %ebp, %eax
    call *%ebx
    push %eax                           /* the result */
    mov %cr4, %eax
    or $0x620, %eax                     /* PAE | OSFXSR | OSXMMEXCPT */
    mov %eax, %cr4
    mov $guest_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax                     /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    ljmp $0x18, $2f
    .code64
2:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %esp, %esp                      /* upper halves are undefined after the switch */
    mov (%rsp), %eax
    add $4, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
