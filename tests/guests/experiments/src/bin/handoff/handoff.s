/* The handoff experiment's loops, assembled twice from one macro: handoff_worker32
 * (.code32, protected mode, through guest-support's call_protected32) and
 * handoff_worker64 (.code64, System V: EDI = role), AT&T syntax.
 *
 * In: EAX = role (handoff_worker64: EDI) (0: the writer, 1 and 2: the exchangers). Uses the shared block at
 * {SHARED} (layout: main.rs, HandoffShared). X = {X} is VGA text memory (trapped), so
 * every access to it is one emulated instruction; EBX counts them.
 *   role 0: N times: spin (at most {SPIN_LIMIT} loads) until X reads 0, store 1, count;
 *           then set `done`.
 *   role 1, 2: repeat XCHG X with 0 (at most {XCHG_LIMIT} times) and count each old 1,
 *           until `done` was set before an XCHG that returned 0.
 * Out: counters[role], accesses[role], ticks[role] (RDTSC); timeouts += 1 if a bound
 * ran out. handoff_worker32 clobbers EAX, EBX, ECX, EDX, ESI, EDI, EBP.
 */

    .macro HANDOFF_BODY index
    mov %eax, %ebp                      /* role */
    lfence
    rdtsc
    lfence
    mov %eax, {SHARED} + {TICKS}(,\index,8)        /* start, replaced by the ticks */
    mov %edx, {SHARED} + {TICKS} + 4(,\index,8)
    xor %ebx, %ebx                      /* emulated accesses */
    xor %edi, %edi                      /* count */
    test %ebp, %ebp
    jnz 20f
    mov ${N}, %esi                      /* handoffs left */
1:  mov ${SPIN_LIMIT}, %ecx
2:  mov {X}, %eax                       /* trapped load */
    inc %ebx
    test %eax, %eax
    jz 3f
    dec %ecx
    jnz 2b
    lock incl {SHARED} + {TIMEOUTS}
    jmp 4f
3:  movl $1, {X}                        /* trapped store */
    inc %ebx
    inc %edi
    dec %esi
    jnz 1b
4:  lock incl {SHARED} + {DONE}
    jmp 29f
20: mov ${XCHG_LIMIT}, %esi
21: mov {SHARED} + {DONE}, %edx
    xor %eax, %eax
    xchg %eax, {X}                      /* trapped, locked */
    inc %ebx
    cmp $1, %eax
    jne 22f
    inc %edi
22: test %edx, %edx
    jz 23f
    test %eax, %eax
    jz 29f
23: dec %esi
    jnz 21b
    lock incl {SHARED} + {TIMEOUTS}
29: mov %edi, {SHARED} + {COUNTERS}(,\index,4)
    mov %ebx, {SHARED} + {ACCESSES}(,\index,4)
    lfence
    rdtsc
    lfence
    sub {SHARED} + {TICKS}(,\index,8), %eax
    sbb {SHARED} + {TICKS} + 4(,\index,8), %edx
    mov %eax, {SHARED} + {TICKS}(,\index,8)
    mov %edx, {SHARED} + {TICKS} + 4(,\index,8)
    .endm

    .section .text.handoff_worker32, "ax"
    .code32
    .global handoff_worker32
handoff_worker32:
    HANDOFF_BODY %ebp
    ret

    .section .text.handoff_worker64, "ax"
    .code64
    .global handoff_worker64
handoff_worker64:                       /* System V: EDI = role; keeps RBX, RBP */
    push %rbx
    push %rbp
    mov %edi, %eax
    HANDOFF_BODY %rbp
    pop %rbp
    pop %rbx
    ret
