/* The page-ring experiment's sweeps, assembled twice from one macro (AT&T syntax):
 * ring_worker64 (.code64, System V: EDI = role, RSI = V) on the 4-level tables, and
 * ring_worker32 (.code32, protected mode through guest-support's call_protected32,
 * EAX = role) which turns on PAE paging with the tables at {PAE_PDPT}, sweeps
 * V = {V32}, and turns paging off again.
 *
 * role 0: {CX_PASSES} times, for each of the {WORDS} dwords at V, V+4, ..., V+0x1ffc:
 *         LOCK CMPXCHG8B adding {P} to the low and {Q} to the high dword, retried
 *         until it succeeds (a failed compare loads the current value); the first
 *         attempt at each address expects 0. Gives up after {FAIL_LIMIT} failures.
 *         Publishes the dword it works on in `position` (counted from the start of the
 *         phase; the chaser takes it modulo {WORDS}) and sets `done0` at the end.
 * role 1: until `done0`: each time `position` changes, LOCK XADD of {R} to that dword
 *         and the next one (the two a CMPXCHG8B there touches), at most {MAX_XADDS}
 *         per dword, counted per dword in the byte array `xadds`.
 * Out (block at {SHARED}, layout: main.rs RingShared): accesses[role] (emulated
 * instructions), failures (CMPXCHG8B compares that failed), timeouts, xadds.
 * ring_worker32 clobbers EAX, EBX, ECX, EDX, ESI, EDI, EBP.
 */

    .macro RING_BODY ptr, index
    xor %ebp, %ebp                      /* emulated instructions */
    test %eax, %eax
    jnz 20f
    movl ${CX_PASSES}, {SHARED} + {PASSES_LEFT}
    movl $0, {SHARED} + {POSITION}
10: mov ${WORDS}, %edi
11: xor %eax, %eax                      /* expect 0: the failure loads the value */
    xor %edx, %edx
12: mov %eax, %ebx
    add ${P}, %ebx
    mov %edx, %ecx
    add ${Q}, %ecx
    lock cmpxchg8b (\ptr)
    lea 1(%ebp), %ebp                   /* keeps ZF */
    jz 13f
    incl {SHARED} + {FAILURES}
    cmpl ${FAIL_LIMIT}, {SHARED} + {FAILURES}
    jb 12b
    lock incl {SHARED} + {TIMEOUTS}
    jmp 19f
13: add $4, \ptr
    incl {SHARED} + {POSITION}
    dec %edi
    jnz 11b
    sub ${RING_BYTES}, \ptr
    decl {SHARED} + {PASSES_LEFT}
    jnz 10b
19: mov %ebp, {SHARED} + {ACCESSES}
    lock incl {SHARED} + {DONE0}
    jmp 29f
20: mov $-1, %edi                       /* the position last chased */
21: mov {SHARED} + {DONE0}, %edx       /* chase vCPU 0 until it is done */
    test %edx, %edx
    jnz 28f
    mov {SHARED} + {POSITION}, %ebx     /* the dword vCPU 0 works on */
    cmp %ebx, %edi
    je 21b                              /* once per position */
    mov %ebx, %edi
    and ${WORD_MASK}, %ebx
    mov $2, %ecx                        /* that dword and the next one */
22: cmpb ${MAX_XADDS}, {SHARED} + {XADDS}(,\index,1)
    jae 23f
    mov ${R}, %eax
    lock xadd %eax, (\ptr,\index,4)
    inc %ebp
    incb {SHARED} + {XADDS}(,\index,1)
23: inc %ebx
    and ${WORD_MASK}, %ebx
    dec %ecx
    jnz 22b
    jmp 21b
28: mov %ebp, {SHARED} + {ACCESSES} + 4
29:
    .endm

    .section .text.ring_worker64, "ax"
    .code64
    .global ring_worker64
ring_worker64:
    push %rbx
    push %rbp
    mov %edi, %eax
    RING_BODY %rsi, %rbx
    pop %rbp
    pop %rbx
    ret

    .section .text.ring_worker32, "ax"
    .code32
    .global ring_worker32
ring_worker32:
    mov %eax, %ebp
    mov %cr4, %ecx
    or $0x20, %ecx                      /* PAE */
    mov %ecx, %cr4
    mov ${PAE_PDPT} + {PAE_PDPT_OFFSET}, %ecx
    mov %ecx, %cr3
    mov %cr0, %ecx
    or $0x80000000, %ecx                /* PG: PAE paging (EFER.LME is off) */
    mov %ecx, %cr0
    jmp 1f
1:  mov %ebp, %eax
    mov ${V32}, %esi
    RING_BODY %esi, %ebx
    mov %cr0, %ecx
    and $0x7fffffff, %ecx
    mov %ecx, %cr0
    ret

    /* A crate's global_asm blocks share one assembler stream: leave it in
       64-bit mode for whatever comes next. */
    .code64
