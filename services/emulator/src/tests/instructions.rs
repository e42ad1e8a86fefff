//! Instruction semantics against values worked out from the SDM: results,
//! status flags, RIP, and the exceptions each instruction can raise.

use super::guest::*;
use super::modes::long_bench;
use crate::fault::vector;
use crate::{EmulatorConfig, Exception, Outcome, Retired, emulate, emulate_with};
use abi::ExitMessage;

const DATA: u64 = 0x7000_0000;
const FRAME: u64 = 0x30_0000;
const CF: u64 = 0x1;
const PF: u64 = 0x4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const DF: u64 = 0x400;
const TF: u64 = 0x100;
const OF: u64 = 0x800;
const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;

/// Runs `code` with RBX = DATA, `memory` at DATA and `setup` applied.
fn run(code: &[u8], memory: &[u8], setup: impl FnOnce(&mut ExitMessage)) -> (Outcome, TestGuest) {
    let (mut guest, mut exit) = long_bench(code);
    exit.state.gprs[RBX] = DATA;
    guest.poke(FRAME, memory);
    setup(&mut exit);
    let outcome = emulate(&mut guest, &exit);
    (outcome, guest)
}

fn run_ok(
    code: &[u8],
    memory: &[u8],
    setup: impl FnOnce(&mut ExitMessage),
) -> (Retired, TestGuest) {
    let (outcome, guest) = run(code, memory, setup);
    (retired(outcome), guest)
}

/// (code, memory dword at DATA, RAX, CF in, expected memory dword, expected
/// status flags).
type AluCase = (&'static [u8], u32, u64, bool, u32, u64);

#[test]
fn alu_read_modify_write_flags() {
    let cases: &[AluCase] = &[
        // add [rbx], eax: 0xffffffff + 1
        (&[0x01, 0x03], 0xffff_ffff, 1, false, 0, CF | PF | AF | ZF),
        // add [rbx], eax: 0x7fffffff + 1 overflows
        (
            &[0x01, 0x03],
            0x7fff_ffff,
            1,
            false,
            0x8000_0000,
            PF | AF | SF | OF,
        ),
        // sub byte [rbx], al: 0x80 - 1
        (&[0x28, 0x03], 0x80, 1, false, 0x7f, AF | OF),
        // adc word [rbx], ax: 0x7fff + 0 + CF
        (
            &[0x66, 0x11, 0x03],
            0x7fff,
            0,
            true,
            0x8000,
            PF | AF | SF | OF,
        ),
        // sbb [rbx], eax: 0 - 0 - CF
        (&[0x19, 0x03], 0, 0, true, 0xffff_ffff, CF | PF | AF | SF),
        // and [rbx], eax
        (&[0x21, 0x03], 0xf0f0_f0f0, 0x0f0f_0f0f, true, 0, PF | ZF),
        // or [rbx], eax
        (&[0x09, 0x03], 0x8000_0000, 1, false, 0x8000_0001, SF),
        // xor [rbx], eax
        (&[0x31, 0x03], 0xff, 0xfe, false, 1, 0),
        // add dword [rbx], -1 (83 /0 ib): 1 + 0xffffffff
        (&[0x83, 0x03, 0xff], 1, 0, false, 0, CF | PF | AF | ZF),
        // sub dword [rbx], 0x12345678 (81 /5 id)
        (
            &[0x81, 0x2b, 0x78, 0x56, 0x34, 0x12],
            0x1234_5678,
            0,
            false,
            0,
            PF | ZF,
        ),
        // neg dword [rbx]: 0
        (&[0xf7, 0x1b], 0, 0, true, 0, PF | ZF),
        // neg dword [rbx]: 0x80000000
        (
            &[0xf7, 0x1b],
            0x8000_0000,
            0,
            false,
            0x8000_0000,
            CF | PF | SF | OF,
        ),
        // inc byte [rbx]: 0xff (CF kept)
        (&[0xfe, 0x03], 0xff, 0, true, 0, CF | PF | AF | ZF),
        // dec dword [rbx]: 0x80000000
        (
            &[0xff, 0x0b],
            0x8000_0000,
            0,
            false,
            0x7fff_ffff,
            PF | AF | OF,
        ),
        // not dword [rbx] (flags unchanged)
        (&[0xf7, 0x13], 0x0f0f_0000, 0, true, 0xf0f0_ffff, CF),
    ];
    for &(code, memory, rax, carry, expected, flags) in cases {
        let (done, guest) = run_ok(code, &memory.to_le_bytes(), |exit| {
            exit.state.gprs[RAX] = rax;
            exit.state.rflags |= u64::from(carry);
        });
        assert_eq!(guest.peek_u32(FRAME), expected, "{code:02x?}");
        assert_eq!(done.rflags & STATUS, flags, "{code:02x?}");
        assert_eq!(done.rip, 0x40_0000 + code.len() as u64);
    }
}

#[test]
fn compare_and_test_do_not_write() {
    // cmp qword [rbx], rax: 0 - 1
    let (done, guest) = run_ok(&[0x48, 0x39, 0x03], &[0; 8], |exit| {
        exit.state.gprs[RAX] = 1
    });
    assert_eq!(done.rflags & STATUS, CF | PF | AF | SF);
    assert!(guest.writes.is_empty());
    // test byte [rbx], 0x80
    let (done, _) = run_ok(&[0xf6, 0x03, 0x80], &[0x81], |_| {});
    assert_eq!(done.rflags & STATUS, SF);
    // cmp eax, [rbx] with equal values
    let (done, _) = run_ok(&[0x3b, 0x03], &5u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 5
    });
    assert_eq!(done.rflags & STATUS, PF | ZF);
}

/// (code, memory dword, CL, CF in, expected memory, flag mask, expected flags).
type ShiftCase = (&'static [u8], u32, u64, bool, u32, u64, u64);

#[test]
fn shifts_and_rotates() {
    let cases: &[ShiftCase] = &[
        // shl dword [rbx], 1: 0x80000000 -> 0, CF=1, OF=1
        (
            &[0xd1, 0x23],
            0x8000_0000,
            0,
            false,
            0,
            CF | ZF | SF | OF | PF,
            CF | ZF | OF | PF,
        ),
        // shr dword [rbx], 1: 0x80000001 -> 0x40000000, CF=1, OF=msb(orig)
        (
            &[0xd1, 0x2b],
            0x8000_0001,
            0,
            false,
            0x4000_0000,
            CF | ZF | SF | OF,
            CF | OF,
        ),
        // sar byte [rbx], cl (cl=3): 0x80 -> 0xf0
        (&[0xd2, 0x3b], 0x80, 3, false, 0xf0, CF | ZF | SF, SF),
        // rol dword [rbx], 4
        (
            &[0xc1, 0x03, 0x04],
            0x1234_5678,
            0,
            false,
            0x2345_6781,
            CF,
            CF,
        ),
        // ror byte [rbx], 1: 0x01 -> 0x80, CF=1, OF=1
        (&[0xd0, 0x0b], 0x01, 0, false, 0x80, CF | OF, CF | OF),
        // rcl byte [rbx], 1 with CF=1: 0x80 -> 0x01, CF=1, OF = 0 ^ 1
        (&[0xd0, 0x13], 0x80, 0, true, 0x01, CF | OF, CF | OF),
        // rcr word [rbx], cl=17 (count mod 17 = 0): unchanged
        (&[0x66, 0xd3, 0x1b], 0x1234, 17, true, 0x1234, CF, CF),
        // rcr dword [rbx], 1 with CF=0: 1 -> 0, CF=1
        (&[0xd1, 0x1b], 1, 0, false, 0, CF | OF, CF),
        // shl dword [rbx], cl=0: no flag change
        (&[0xd3, 0x23], 5, 0, true, 5, STATUS, CF),
        // shld [rbx], eax, 4 (eax = 0xf0000000)
        (
            &[0x0f, 0xa4, 0x03, 0x04],
            0x1234_5678,
            0,
            false,
            0x2345_678f,
            CF | ZF | SF,
            CF,
        ),
        // shrd [rbx], eax, cl=8 (eax = 0xf0000000)
        (
            &[0x0f, 0xad, 0x03],
            0x1234_5678,
            8,
            false,
            0x0012_3456,
            CF | ZF | SF,
            0,
        ),
    ];
    for &(code, memory, cl, carry, expected, mask, flags) in cases {
        let (done, guest) = run_ok(code, &memory.to_le_bytes(), |exit| {
            exit.state.gprs[RCX] = cl;
            exit.state.gprs[RAX] = 0xf000_0000;
            exit.state.rflags |= u64::from(carry);
        });
        assert_eq!(guest.peek_u32(FRAME), expected, "{code:02x?}");
        assert_eq!(done.rflags & mask, flags, "{code:02x?}");
    }
}

#[test]
fn multiply_and_divide() {
    // mul dword [rbx]: 0x80000000 * 2
    let (done, _) = run_ok(&[0xf7, 0x23], &2u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0x8000_0000
    });
    assert_eq!((done.gprs[RAX], done.gprs[RDX]), (0, 1));
    assert_eq!(done.rflags & (CF | OF), CF | OF);
    // imul eax, [rbx], 3: 0x40000000 * 3 overflows
    let (done, _) = run_ok(&[0x6b, 0x03, 0x03], &0x4000_0000u32.to_le_bytes(), |_| {});
    assert_eq!(done.gprs[RAX], 0xc000_0000);
    assert_eq!(done.rflags & (CF | OF), CF | OF);
    // imul rax, [rbx]: -2 * 3
    let (done, _) = run_ok(&[0x48, 0x0f, 0xaf, 0x03], &3u64.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = (-2i64) as u64;
    });
    assert_eq!(done.gprs[RAX], (-6i64) as u64);
    assert_eq!(done.rflags & (CF | OF), 0);
    // imul byte [rbx]: al=-128 * -1 = 128 (AX = 0x0080), overflow
    let (done, _) = run_ok(&[0xf6, 0x2b], &[0xff], |exit| exit.state.gprs[RAX] = 0x80);
    assert_eq!(done.gprs[RAX] & 0xffff, 0x0080);
    assert_eq!(done.rflags & (CF | OF), CF | OF);
    // idiv dword [rbx]: -10 / 3 = -3 rem -1
    let (done, _) = run_ok(&[0xf7, 0x3b], &3u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0xffff_fff6;
        exit.state.gprs[RDX] = 0xffff_ffff;
    });
    assert_eq!((done.gprs[RAX], done.gprs[RDX]), (0xffff_fffd, 0xffff_ffff));
    // div byte [rbx]: 0x1234 / 0x10 does not fit in AL: #DE
    let (outcome, _) = run(&[0xf6, 0x33], &[0x10], |exit| exit.state.gprs[RAX] = 0x1234);
    let de = Outcome::Exception(Exception {
        vector: vector::DE,
        error_code: None,
        cr2: None,
    });
    assert_eq!(outcome, de);
    // div qword [rbx] by zero: #DE
    let (outcome, _) = run(&[0x48, 0xf7, 0x33], &[0; 8], |_| {});
    assert_eq!(outcome, de);
    // idiv dword [rbx]: INT_MIN / -1 overflows: #DE
    let (outcome, _) = run(&[0xf7, 0x3b], &u32::MAX.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0x8000_0000;
        exit.state.gprs[RDX] = 0xffff_ffff;
    });
    assert_eq!(outcome, de);
    // div word [rbx]: DX:AX = 0x0001_0000 / 2
    let (done, _) = run_ok(&[0x66, 0xf7, 0x33], &2u16.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0xffff_0000;
        exit.state.gprs[RDX] = 1;
    });
    assert_eq!((done.gprs[RAX], done.gprs[RDX]), (0xffff_8000, 0));
}

#[test]
fn bit_tests_reach_outside_the_operand() {
    // bt [rbx], eax with eax = 35: bit 3 of the dword at rbx+4
    let mut memory = [0u8; 16];
    memory[4] = 0x08;
    let (done, _) = run_ok(&[0x0f, 0xa3, 0x03], &memory, |exit| {
        exit.state.gprs[RAX] = 35
    });
    assert_eq!(done.rflags & CF, CF);
    // bts [rbx+8], eax with eax = -1: bit 31 of the dword at rbx+4
    let (done, guest) = run_ok(&[0x0f, 0xab, 0x43, 0x08], &[0; 16], |exit| {
        exit.state.gprs[RAX] = 0xffff_ffff;
    });
    assert_eq!(done.rflags & CF, 0);
    assert_eq!(guest.peek_u32(FRAME + 4), 0x8000_0000);
    // btr qword [rbx], 65: immediate offsets wrap to bit 1
    let (done, guest) = run_ok(&[0x48, 0x0f, 0xba, 0x33, 65], &[0xff; 8], |_| {});
    assert_eq!(done.rflags & CF, CF);
    assert_eq!(guest.peek_u64(FRAME), !2);
    // lock btc [rbx], eax is one compare-exchange
    let (_, guest) = run_ok(&[0xf0, 0x0f, 0xbb, 0x03], &[0; 4], |exit| {
        exit.state.gprs[RAX] = 0
    });
    assert_eq!(guest.peek_u32(FRAME), 1);
    assert!(guest.writes.is_empty());
}

#[test]
fn bit_scans_and_counts() {
    // bsf eax, [rbx]
    let (done, _) = run_ok(&[0x0f, 0xbc, 0x03], &0x0000_0100u32.to_le_bytes(), |_| {});
    assert_eq!((done.gprs[RAX], done.rflags & ZF), (8, 0));
    // bsr eax, [rbx] with zero source: destination kept, ZF set
    let (done, _) = run_ok(&[0x0f, 0xbd, 0x03], &[0; 4], |exit| {
        exit.state.gprs[RAX] = 77
    });
    assert_eq!((done.gprs[RAX], done.rflags & ZF), (77, ZF));
    // tzcnt eax, [rbx] with zero: 32, CF
    let (done, _) = run_ok(&[0xf3, 0x0f, 0xbc, 0x03], &[0; 4], |_| {});
    assert_eq!((done.gprs[RAX], done.rflags & (CF | ZF)), (32, CF));
    // lzcnt ax, [rbx]: 0x0001 -> 15
    let (done, _) = run_ok(&[0x66, 0xf3, 0x0f, 0xbd, 0x03], &[1, 0], |_| {});
    assert_eq!(done.gprs[RAX] & 0xffff, 15);
    // popcnt rax, [rbx]
    let (done, _) = run_ok(&[0xf3, 0x48, 0x0f, 0xb8, 0x03], &[0xff; 8], |exit| {
        exit.state.rflags |= CF | OF | SF;
    });
    assert_eq!((done.gprs[RAX], done.rflags & STATUS), (64, 0));
}

#[test]
fn moves_with_extension_and_byte_swap() {
    let memory = 0x8899_aabb_ccdd_eeffu64.to_le_bytes();
    // movzx eax, byte [rbx]
    let (done, _) = run_ok(&[0x0f, 0xb6, 0x03], &memory, |exit| {
        exit.state.gprs[RAX] = u64::MAX
    });
    assert_eq!(done.gprs[RAX], 0xff);
    // movsx rax, word [rbx]
    let (done, _) = run_ok(&[0x48, 0x0f, 0xbf, 0x03], &memory, |_| {});
    assert_eq!(done.gprs[RAX], 0xffff_ffff_ffff_eeff);
    // movsxd rax, dword [rbx]
    let (done, _) = run_ok(&[0x48, 0x63, 0x03], &memory, |_| {});
    assert_eq!(done.gprs[RAX], 0xffff_ffff_ccdd_eeff);
    // movbe eax, [rbx]
    let (done, _) = run_ok(&[0x0f, 0x38, 0xf0, 0x03], &memory, |_| {});
    assert_eq!(done.gprs[RAX], 0xffee_ddcc);
    // mov ah, [rbx] keeps the other bits
    let (done, _) = run_ok(&[0x8a, 0x23], &memory, |exit| {
        exit.state.gprs[RAX] = 0x1111_1111
    });
    assert_eq!(done.gprs[RAX], 0x1111_ff11);
    // movnti [rbx], rax
    let (_, guest) = run_ok(&[0x48, 0x0f, 0xc3, 0x03], &[0; 8], |exit| {
        exit.state.gprs[RAX] = 42
    });
    assert_eq!(guest.peek_u64(FRAME), 42);
    // movdiri [rbx], eax
    let (_, guest) = run_ok(&[0x0f, 0x38, 0xf9, 0x03], &[0; 8], |exit| {
        exit.state.gprs[RAX] = 43
    });
    assert_eq!(guest.peek_u32(FRAME), 43);
}

#[test]
fn exchange_family() {
    // xadd [rbx], eax
    let (done, guest) = run_ok(&[0x0f, 0xc1, 0x03], &10u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 5
    });
    assert_eq!((guest.peek_u32(FRAME), done.gprs[RAX]), (15, 10));
    // lock cmpxchg [rbx], ecx: equal
    let (done, guest) = run_ok(&[0xf0, 0x0f, 0xb1, 0x0b], &7u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 7;
        exit.state.gprs[RCX] = 9;
    });
    assert_eq!(guest.peek_u32(FRAME), 9);
    assert_eq!(done.rflags & ZF, ZF);
    // cmpxchg [rbx], ecx: not equal loads eax and writes back the old value
    let (done, guest) = run_ok(&[0x0f, 0xb1, 0x0b], &7u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0xffff_ffff_0000_0008;
        exit.state.gprs[RCX] = 9;
    });
    assert_eq!(guest.peek_u32(FRAME), 7);
    assert_eq!(done.gprs[RAX], 7);
    assert_eq!(done.rflags & (ZF | CF), 0, "8 - 7 borrows nothing");
    assert_eq!(guest.writes, [(FRAME, 4)]);
}

#[test]
fn conditional_moves_and_sets() {
    // cmovz eax, [rbx] with ZF=0 still reads and zero-extends eax
    let (done, _) = run_ok(&[0x0f, 0x44, 0x03], &5u32.to_le_bytes(), |exit| {
        exit.state.gprs[RAX] = 0xffff_ffff_0000_0001;
    });
    assert_eq!(done.gprs[RAX], 1);
    let (done, _) = run_ok(&[0x0f, 0x44, 0x03], &5u32.to_le_bytes(), |exit| {
        exit.state.rflags |= ZF
    });
    assert_eq!(done.gprs[RAX], 5);
    // setb [rbx] / setnb [rbx]
    let (_, guest) = run_ok(&[0x0f, 0x92, 0x03], &[0xaa], |exit| exit.state.rflags |= CF);
    assert_eq!(guest.peek(FRAME, 1), [1]);
    let (_, guest) = run_ok(&[0x0f, 0x93, 0x03], &[0xaa], |exit| exit.state.rflags |= CF);
    assert_eq!(guest.peek(FRAME, 1), [0]);
    // setl [rbx] with SF != OF
    let (_, guest) = run_ok(&[0x0f, 0x9c, 0x03], &[0], |exit| exit.state.rflags |= SF);
    assert_eq!(guest.peek(FRAME, 1), [1]);
}

#[test]
fn push_and_pop_with_memory_operands_and_trapped_stack() {
    // push qword [rbx]
    let (done, guest) = run_ok(&[0xff, 0x33], &0x1122u64.to_le_bytes(), |exit| {
        exit.state.gprs[RSP] = DATA + 0x800;
    });
    assert_eq!(done.gprs[RSP], DATA + 0x7f8);
    assert_eq!(guest.peek_u64(FRAME + 0x7f8), 0x1122);
    // pop qword [rsp+8]: the address uses the incremented RSP
    let mut memory = [0u8; 0x820];
    memory[0x800..0x808].copy_from_slice(&0x3344u64.to_le_bytes());
    let (done, guest) = run_ok(&[0x8f, 0x44, 0x24, 0x08], &memory, |exit| {
        exit.state.gprs[RSP] = DATA + 0x800;
    });
    assert_eq!(done.gprs[RSP], DATA + 0x808);
    assert_eq!(guest.peek_u64(FRAME + 0x810), 0x3344);
    // push rax / pop rcx with the stack itself in the data page
    let (done, guest) = run_ok(&[0x50], &[], |exit| {
        exit.state.gprs[RSP] = DATA + 0x100;
        exit.state.gprs[RAX] = 0xabcd;
    });
    assert_eq!(
        (done.gprs[RSP], guest.peek_u64(FRAME + 0xf8)),
        (DATA + 0xf8, 0xabcd)
    );
    // push imm8 sign-extends; push word [rbx] moves 2 bytes
    let (done, guest) = run_ok(&[0x6a, 0xff], &[], |exit| {
        exit.state.gprs[RSP] = DATA + 0x100
    });
    assert_eq!(
        (done.gprs[RSP], guest.peek_u64(FRAME + 0xf8)),
        (DATA + 0xf8, u64::MAX)
    );
    let (done, guest) = run_ok(&[0x66, 0xff, 0x33], &[0x34, 0x12], |exit| {
        exit.state.gprs[RSP] = DATA + 0x100;
    });
    assert_eq!(
        (done.gprs[RSP], guest.peek(FRAME + 0xfe, 2)),
        (DATA + 0xfe, alloc::vec![0x34, 0x12])
    );
    // A faulting push changes nothing (stack below the mapped pages).
    let (outcome, guest) = run(&[0x50], &[], |exit| {
        exit.state.gprs[RSP] = DATA + 0x2000 + 4
    });
    assert!(matches!(
        outcome,
        Outcome::Exception(Exception { vector: 14, .. })
    ));
    assert!(guest.writes.is_empty());
}

#[test]
fn rep_stos_and_movs_run_bounded_with_exact_partial_registers() {
    // rep stosd, 10 dwords, bound 4: RCX/RDI after each call as the CPU leaves them.
    let (mut guest, mut exit) = long_bench(&[0xf3, 0xab]);
    exit.state.gprs[RCX] = 10;
    exit.state.gprs[RDI] = DATA;
    exit.state.gprs[RAX] = 0x5a5a_5a5a;
    let config = EmulatorConfig {
        max_rep_iterations: 4,
        ..EmulatorConfig::DEFAULT
    };
    let first = retired(emulate_with(&mut guest, &exit, &config));
    assert_eq!(
        (first.gprs[RCX], first.gprs[RDI], first.rip),
        (6, DATA + 16, 0x40_0000)
    );
    exit.state.gprs = first.gprs;
    let second = retired(emulate_with(&mut guest, &exit, &config));
    assert_eq!((second.gprs[RCX], second.gprs[RDI]), (2, DATA + 32));
    exit.state.gprs = second.gprs;
    let last = retired(emulate_with(&mut guest, &exit, &config));
    assert_eq!(
        (last.gprs[RCX], last.gprs[RDI], last.rip),
        (0, DATA + 40, 0x40_0002)
    );
    assert_eq!(guest.peek_u32(FRAME + 36), 0x5a5a_5a5a);
    assert_eq!(guest.peek_u32(FRAME + 40), 0);
    // rep movsb backwards (DF=1) across the page boundary.
    let (mut guest, mut exit) = long_bench(&[0xf3, 0xa4]);
    guest.poke(FRAME + 0xffe, &[1, 2]);
    guest.poke(0x50_0000, &[3, 4]);
    exit.state.rflags |= DF;
    exit.state.gprs[RCX] = 4;
    exit.state.gprs[RSI] = DATA + 0x1001;
    exit.state.gprs[RDI] = DATA + 0x103;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        (done.gprs[RCX], done.gprs[RSI], done.gprs[RDI]),
        (0, DATA + 0xffd, DATA + 0xff)
    );
    assert_eq!(guest.peek(FRAME + 0x100, 4), [1, 2, 3, 4]);
    // rep stosb with a 32-bit address size: ECX/EDI wrap, upper halves zeroed.
    let (mut guest, mut exit) = long_bench(&[0x67, 0xf3, 0xaa]);
    exit.state.gprs[RCX] = 0xffff_ffff_0000_0002;
    exit.state.gprs[RDI] = 0xffff_ffff_7000_0000;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!((done.gprs[RCX], done.gprs[RDI]), (0, DATA + 2));
}

#[test]
fn rep_runs_one_iteration_per_call_with_tf_set() {
    // rep stosb, 3 bytes, TF set: each call retires one iteration (RIP kept)
    // so that the single-step trap can follow it; the last one moves RIP on.
    let (mut guest, mut exit) = long_bench(&[0xf3, 0xaa]);
    exit.state.rflags |= TF;
    exit.state.gprs[RCX] = 3;
    exit.state.gprs[RDI] = DATA;
    exit.state.gprs[RAX] = 0x5a;
    for (rcx, rip) in [(2, 0x40_0000), (1, 0x40_0000), (0, 0x40_0002)] {
        let done = retired(emulate(&mut guest, &exit));
        assert_eq!((done.gprs[RCX], done.rip), (rcx, rip));
        assert_eq!(done.rflags & TF, TF);
        exit.state.gprs = done.gprs;
    }
    assert_eq!(guest.peek(FRAME, 4), [0x5a, 0x5a, 0x5a, 0]);
}

#[test]
fn rep_stops_at_a_fault_after_progress() {
    // rep stosq toward an unmapped page: the mapped part retires, RIP stays.
    let (mut guest, mut exit) = long_bench(&[0xf3, 0x48, 0xab]);
    exit.state.gprs[RCX] = 4;
    exit.state.gprs[RDI] = DATA + 0x1ff0;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        (done.gprs[RCX], done.gprs[RDI], done.rip),
        (2, DATA + 0x2000, 0x40_0000)
    );
    exit.state.gprs = done.gprs;
    assert!(matches!(
        emulate(&mut guest, &exit),
        Outcome::Exception(Exception {
            vector: 14,
            error_code: Some(2),
            cr2: Some(0x7000_2000)
        })
    ));
}

#[test]
fn repe_cmps_and_repne_scas_stop_on_the_flag() {
    // repe cmpsb: first difference at index 2
    let mut memory = [0u8; 0x200];
    memory[..4].copy_from_slice(b"abcd");
    memory[0x100..0x104].copy_from_slice(b"abxd");
    let (done, _) = run_ok(&[0xf3, 0xa6], &memory, |exit| {
        exit.state.gprs[RCX] = 10;
        exit.state.gprs[RSI] = DATA;
        exit.state.gprs[RDI] = DATA + 0x100;
    });
    assert_eq!(
        (done.gprs[RCX], done.gprs[RSI], done.gprs[RDI]),
        (7, DATA + 3, DATA + 0x103)
    );
    assert_eq!(done.rflags & (ZF | CF), CF, "'c' < 'x'");
    assert_eq!(done.rip, 0x40_0002);
    // repne scasb for 'c'
    let (done, _) = run_ok(&[0xf2, 0xae], &memory, |exit| {
        exit.state.gprs[RCX] = 10;
        exit.state.gprs[RDI] = DATA;
        exit.state.gprs[RAX] = u64::from(b'c');
    });
    assert_eq!(
        (done.gprs[RCX], done.gprs[RDI], done.rflags & ZF),
        (7, DATA + 3, ZF)
    );
    // lodsw without REP
    let (done, _) = run_ok(&[0x66, 0xad], &memory, |exit| {
        exit.state.gprs[RSI] = DATA + 1
    });
    assert_eq!(
        (done.gprs[RAX] & 0xffff, done.gprs[RSI]),
        (0x6362, DATA + 3)
    );
}

#[test]
fn vector_moves() {
    let pattern: alloc::vec::Vec<u8> = (0..64).collect();
    // movdqa xmm1, [rbx]: legacy SSE keeps YMM1's upper half
    let (mut guest, mut exit) = long_bench(&[0x66, 0x0f, 0x6f, 0x0b]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[1] = [0xee; 32];
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.vector_mask, 1 << 1);
    assert_eq!(done.vector[..16], pattern[..16]);
    assert_eq!(done.vector[16..], [0xee; 16]);
    // misaligned movdqa: #GP(0)
    exit.state.gprs[RBX] = DATA + 8;
    assert_eq!(
        emulate(&mut guest, &exit),
        Outcome::Exception(Exception {
            vector: 13,
            error_code: Some(0),
            cr2: None
        })
    );
    // vmovdqu ymm2, [rbx+8]
    let (mut guest, mut exit) = long_bench(&[0xc5, 0xfe, 0x6f, 0x53, 0x08]);
    exit.state.gprs[RBX] = DATA;
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.vector_mask, 1 << 2);
    assert_eq!(done.vector[..], pattern[8..40]);
    // vmovdqa xmm3, [rbx] (VEX.128) zeroes the upper half
    let (mut guest, mut exit) = long_bench(&[0xc5, 0xf9, 0x6f, 0x1b]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[3] = [0xee; 32];
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.vector_mask, 1 << 3);
    assert_eq!(done.vector[16..], [0; 16]);
    // movd [rbx], xmm0 / movq xmm0, [rbx] zeroes bits 127:64
    let (mut guest, mut exit) = long_bench(&[0x66, 0x0f, 0x7e, 0x03]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[0] = [0x11; 32];
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(FRAME, 5), [0x11, 0x11, 0x11, 0x11, 0]);
    let (mut guest, mut exit) = long_bench(&[0xf3, 0x0f, 0x7e, 0x03]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[0] = [0x11; 32];
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.changed_vector().map(|(index, _)| index), Some(0));
    assert_eq!(done.vector[..8], pattern[..8]);
    assert_eq!(done.vector[8..16], [0; 8]);
    assert_eq!(done.vector[16..], [0x11; 16]);
    // movhps xmm0, [rbx] replaces bits 127:64 only; movhps [rbx], xmm0 stores them
    let (mut guest, mut exit) = long_bench(&[0x0f, 0x16, 0x03]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[0] = [0x11; 32];
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.vector_mask, 1);
    assert_eq!(done.vector[..8], [0x11; 8]);
    assert_eq!(done.vector[8..16], pattern[..8]);
    assert_eq!(done.vector[16..], [0x11; 16]);
    let (mut guest, mut exit) = long_bench(&[0x0f, 0x17, 0x03]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[0][8..16].copy_from_slice(&pattern[32..40]);
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(FRAME, 8), pattern[32..40]);
    // vmovss xmm1, [rbx] zeroes everything above the loaded element
    let (mut guest, mut exit) = long_bench(&[0xc5, 0xfa, 0x10, 0x0b]);
    exit.state.gprs[RBX] = DATA;
    exit.vectors.ymm[1] = [0x11; 32];
    guest.poke(FRAME, &pattern);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.vector_mask, 1 << 1);
    assert_eq!(done.vector[..4], pattern[..4]);
    assert_eq!(done.vector[4..], [0; 28]);
    // SSE disabled (CR4.OSFXSR clear): #UD; CR0.TS: #NM
    let (mut guest, mut exit) = long_bench(&[0x0f, 0x11, 0x03]);
    exit.state.gprs[RBX] = DATA;
    exit.state.cr4 &= !(1 << 9);
    let ud = Outcome::Exception(Exception {
        vector: 6,
        error_code: None,
        cr2: None,
    });
    assert_eq!(emulate(&mut guest, &exit), ud);
    exit.state.cr4 |= 1 << 9;
    exit.state.cr0 |= 1 << 3;
    assert!(matches!(
        emulate(&mut guest, &exit),
        Outcome::Exception(Exception { vector: 7, .. })
    ));
}

#[test]
fn movdir64b_and_cache_hints() {
    // movdir64b rax, [rbx]: 64 bytes to ES:[rax], aligned
    let pattern: alloc::vec::Vec<u8> = (0..64).collect();
    let (done, guest) = run_ok(&[0x66, 0x0f, 0x38, 0xf8, 0x03], &pattern, |exit| {
        exit.state.gprs[RAX] = DATA + 0x400;
    });
    assert_eq!(guest.peek(FRAME + 0x400, 64), pattern);
    assert_eq!(done.rip, 0x40_0005);
    let (outcome, _) = run(&[0x66, 0x0f, 0x38, 0xf8, 0x03], &pattern, |exit| {
        exit.state.gprs[RAX] = DATA + 0x420;
    });
    assert!(matches!(
        outcome,
        Outcome::Exception(Exception { vector: 13, .. })
    ));
    // clflush [rbx] and prefetcht0 [rbx] retire without touching memory
    let (done, guest) = run_ok(&[0x0f, 0xae, 0x3b], &[], |_| {});
    assert_eq!(done.rip, 0x40_0003);
    assert!(guest.writes.is_empty());
    let (done, _) = run_ok(&[0x0f, 0x18, 0x0b], &[], |exit| {
        exit.state.gprs[RBX] = 0xdead_0000_0000
    });
    assert_eq!(done.rip, 0x40_0003);
}

#[test]
fn alignment_check_at_cpl3() {
    // mov [rbx+1], eax at CPL 3 with CR0.AM and RFLAGS.AC: #AC(0)
    let (mut guest, mut exit) = long_bench(&[0x89, 0x43, 0x01]);
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x80_0000);
    tables.map(&mut guest, 0x40_0000, 0x20_0000, RW | US);
    tables.map(&mut guest, DATA, FRAME, RW | US);
    exit.state.cr3 = tables.cr3();
    exit.state.cpl = 3;
    exit.state.gprs[RBX] = DATA;
    exit.state.rflags |= 1 << 18;
    let ac = Outcome::Exception(Exception {
        vector: 17,
        error_code: Some(0),
        cr2: None,
    });
    assert_eq!(emulate(&mut guest, &exit), ac);
    assert!(guest.writes.is_empty());
    exit.state.cpl = 0;
    retired(emulate(&mut guest, &exit));
}

#[test]
fn unsupported_instructions_are_named() {
    // lgdt [rbx] is a system instruction the emulator leaves alone
    let (outcome, _) = run(&[0x0f, 0x01, 0x13], &[], |_| {});
    let Outcome::Unsupported(unsupported) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(unsupported.length, 3);
    assert_eq!(unsupported.code, Some(crate::Code::Lgdt_m1664));
    // fld dword [rbx] is not emulated
    let (outcome, _) = run(&[0xd9, 0x03], &[], |_| {});
    assert!(
        matches!(outcome, Outcome::Unsupported(ref u) if u.code == Some(crate::Code::Fld_m32fp))
    );
}

#[test]
fn lock_on_an_instruction_that_cannot_take_it_is_ud() {
    let ud = Outcome::Exception(Exception {
        vector: vector::UD,
        error_code: None,
        cr2: None,
    });
    for code in [
        &[0xf0, 0x89, 0x03][..],   // lock mov [rbx], eax
        &[0xf0, 0x0f, 0xa3, 0x03], // lock bt [rbx], eax
        &[0xf0, 0x01, 0xd8],       // lock add eax, ebx
        &[0x66, 0xf0, 0x3b, 0x03], // lock cmp ax, [rbx], LOCK after another prefix
    ] {
        let (outcome, guest) = run(code, &[0; 8], |_| {});
        assert_eq!(outcome, ud, "{code:02x?}");
        assert!(guest.writes.is_empty(), "{code:02x?}");
        // The exit names another linear address than the instruction's
        // bytes: the guest changed its code under us, so re-execute.
        let (outcome, _) = run(code, &[0; 8], |exit| {
            exit.qualification |= abi::exit::ept_qualification::GUEST_LINEAR_VALID;
            exit.guest_linear = DATA + 0x800;
        });
        assert_eq!(outcome, Outcome::Retry, "{code:02x?}");
    }
    // Bytes the decoder cannot take for another reason stay unsupported
    // (EVEX: vmovdqu32 zmm0, [rbx], which the CPU may well execute).
    let (outcome, _) = run(&[0x62, 0xf1, 0x7e, 0x48, 0x6f, 0x03], &[], |_| {});
    assert!(matches!(outcome, Outcome::Unsupported(_)), "{outcome:?}");
}
