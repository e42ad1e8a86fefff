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
    .balign 4096
