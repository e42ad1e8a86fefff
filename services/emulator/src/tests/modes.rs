//! Addressing and segmentation in each mode: real, 16- and 32-bit protected,
//! compatibility and 64-bit, with the SDM's faults (#GP(0), #SS(0)).

use super::guest::*;
use crate::fault::vector;
use crate::{Exception, Outcome, emulate};
use abi::ExitMessage;

fn fault(vector: u8) -> Outcome {
    Outcome::Exception(Exception {
        vector,
        error_code: Some(0),
        cr2: None,
    })
}

/// A 64-bit machine: code at linear 0x40_0000, data pages at linear
/// 0x7000_0000 (frame 0x30_0000) and 0x7000_1000 (frame 0x50_0000).
pub fn long_bench(code: &[u8]) -> (TestGuest, ExitMessage) {
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
    tables.map(&mut guest, 0x40_0000, 0x20_0000, RW);
    tables.map(&mut guest, 0x40_1000, 0x21_0000, RW);
    tables.map(&mut guest, 0x7000_0000, 0x30_0000, RW);
    tables.map(&mut guest, 0x7000_1000, 0x50_0000, RW);
    let mut exit = long_mode(tables.cr3());
    load_code(&mut guest, &mut exit, 0x20_0000, 0x40_0000, code);
    (guest, exit)
}

#[test]
fn long_mode_store_through_base_and_displacement() {
    // mov [rbx+8], eax
    let (mut guest, mut exit) = long_bench(&[0x89, 0x43, 0x08]);
    exit.state.gprs[0] = 0xdead_beef_1234_5678;
    exit.state.gprs[3] = 0x7000_0000;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x30_0008, 5), [0x78, 0x56, 0x34, 0x12, 0]);
    assert_eq!(done.rip, 0x40_0003);
    assert_eq!(done.gprs, exit.state.gprs);
}

#[test]
fn long_mode_rip_relative_load() {
    // mov rax, [rip + 0x6fbffff9] -> 0x40_0007 + 0x6fbf_fff9 = 0x7000_0000
    let (mut guest, exit) = long_bench(&[0x48, 0x8b, 0x05, 0xf9, 0xff, 0xbf, 0x6f]);
    guest.poke(0x30_0000, &0x1122_3344_5566_7788u64.to_le_bytes());
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[0], 0x1122_3344_5566_7788);
    assert_eq!(done.rip, 0x40_0007);
}

#[test]
fn long_mode_moffs_and_segment_store() {
    // mov eax, [0x7000_0010] (moffs64)
    let (mut guest, exit) = long_bench(&[0xa1, 0x10, 0, 0, 0x70, 0, 0, 0, 0]);
    guest.poke(0x30_0010, &0xcafe_f00du32.to_le_bytes());
    let mut exit = exit;
    exit.state.gprs[0] = u64::MAX;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[0], 0xcafe_f00d, "32-bit load zero-extends");
    assert_eq!(done.rip, 0x40_0009);
    // mov [rbx], ds stores the 16-bit selector.
    let (mut guest, mut exit) = long_bench(&[0x8c, 0x1b]);
    exit.state.gprs[3] = 0x7000_0000;
    guest.poke(0x30_0000, &[0xff; 4]);
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x30_0000, 4), [0x10, 0, 0xff, 0xff]);
}

#[test]
fn long_mode_fs_base_and_canonical_faults() {
    // mov eax, fs:[0x10]
    let (mut guest, mut exit) = long_bench(&[0x64, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0]);
    exit.state.segments[4].base = 0x7000_0000;
    guest.poke(0x30_0010, &7u32.to_le_bytes());
    assert_eq!(retired(emulate(&mut guest, &exit)).gprs[0], 7);
    // mov [rbx], eax with a non-canonical rbx: #GP(0); via rbp: #SS(0).
    let (mut guest, mut exit) = long_bench(&[0x89, 0x03]);
    exit.state.gprs[3] = 0x0000_8000_0000_0000;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    let (mut guest, mut exit) = long_bench(&[0x89, 0x45, 0x00]);
    exit.state.gprs[5] = 0xffff_7fff_ffff_fff0;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::SS));
    assert!(guest.writes.is_empty());
}

#[test]
fn long_mode_32bit_addressing_wraps() {
    // mov eax, [ebx+0x20] (67 prefix): 0xffff_fff0 + 0x20 wraps to 0x10.
    let (mut guest, mut exit) = long_bench(&[0x67, 0x8b, 0x43, 0x20]);
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x60_0000);
    tables.map(&mut guest, 0x40_0000, 0x20_0000, RW);
    tables.map(&mut guest, 0, 0x30_0000, RW);
    exit.state.cr3 = tables.cr3();
    exit.state.gprs[3] = 0xffff_fff0;
    guest.poke(0x30_0010, &0x55u32.to_le_bytes());
    assert_eq!(retired(emulate(&mut guest, &exit)).gprs[0], 0x55);
}

fn real_bench(code: &[u8]) -> (TestGuest, ExitMessage) {
    let mut guest = TestGuest::new();
    let mut exit = real_mode(0x1000);
    load_code(&mut guest, &mut exit, 0x10100, 0x100, code);
    guest.add_page(0x10000);
    guest.add_page(0x1f000);
    (guest, exit)
}

#[test]
fn real_mode_16bit_addressing_and_wrap() {
    // mov [bx+si+4], ax
    let (mut guest, mut exit) = real_bench(&[0x89, 0x40, 0x04]);
    exit.state.gprs[0] = 0xabcd;
    exit.state.gprs[3] = 0x10;
    exit.state.gprs[6] = 0x20;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x10034, 2), [0xcd, 0xab]);
    assert_eq!(done.rip, 0x103);
    // bx+si+4 = 0x10014 wraps to 0x0014.
    let (mut guest, mut exit) = real_bench(&[0x89, 0x40, 0x04]);
    exit.state.gprs[0] = 0x1234;
    exit.state.gprs[3] = 0xfff0;
    exit.state.gprs[6] = 0x20;
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x10014, 2), [0x34, 0x12]);
}

#[test]
fn real_mode_limit_faults() {
    // mov [bx], ax at offset 0xffff runs past the limit: #GP(0).
    let (mut guest, mut exit) = real_bench(&[0x89, 0x07]);
    exit.state.gprs[3] = 0xffff;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    // mov [bp+0], ax: SS-relative, #SS(0).
    let (mut guest, mut exit) = real_bench(&[0x89, 0x46, 0x00]);
    exit.state.gprs[5] = 0xffff;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::SS));
    // mov [ebx], ax with a 32-bit address above the limit.
    let (mut guest, mut exit) = real_bench(&[0x67, 0x89, 0x03]);
    exit.state.gprs[3] = 0x1_0000;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    assert!(guest.writes.is_empty());
    // mov [bx], eax (operand-size override), inside the limit.
    let (mut guest, mut exit) = real_bench(&[0x66, 0x89, 0x07]);
    exit.state.gprs[0] = 0x8765_4321;
    exit.state.gprs[3] = 0xfffc;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x1fffc, 4), [0x21, 0x43, 0x65, 0x87]);
    assert_eq!(done.rip, 0x103);
}

fn protected_bench(code: &[u8], code_32bit: bool) -> (TestGuest, ExitMessage) {
    let mut guest = TestGuest::new();
    let mut exit = protected_mode();
    if !code_32bit {
        exit.state.segments[CODE_SEG].access_rights = 0x9b;
    }
    load_code(&mut guest, &mut exit, 0x8000, 0x8000, code);
    guest.add_page(0x2000);
    guest.add_page(0x3000);
    (guest, exit)
}

#[test]
fn protected_mode_16bit_expand_down_segment() {
    // mov [bx], ax in 16-bit code; DS: base 0x2000, expand-down, limit 0xfff.
    let run = |bx: u64| {
        let (mut guest, mut exit) = protected_bench(&[0x89, 0x07], false);
        exit.state.segments[3].access_rights = 0x97;
        exit.state.segments[3].base = 0x2000;
        exit.state.segments[3].limit = 0xfff;
        exit.state.gprs[3] = bx;
        guest.add_page(0x11000);
        emulate(&mut guest, &exit)
    };
    assert_eq!(run(0x0fff), fault(vector::GP));
    assert!(matches!(run(0x1000), Outcome::Retired(_)));
    assert!(matches!(run(0xfffe), Outcome::Retired(_)));
    // The last byte at 0x10000 is above the 16-bit upper bound.
    assert_eq!(run(0xffff), fault(vector::GP));
}

#[test]
fn protected_mode_segment_type_and_null_checks() {
    // mov [ebx], eax through an unusable DS: #GP(0).
    let (mut guest, mut exit) = protected_bench(&[0x89, 0x03], true);
    exit.state.segments[3].access_rights = 0x1_0000;
    exit.state.gprs[3] = 0x2000;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    // Write to a read-only data segment: #GP(0).
    exit.state.segments[3].access_rights = 0xc091;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    // Read through CS (execute-only code, type 8): #GP(0); readable: fine.
    let (mut guest, mut exit) = protected_bench(&[0x2e, 0x8b, 0x03], true);
    exit.state.gprs[3] = 0x2000;
    exit.state.segments[CODE_SEG].access_rights = 0xc099;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
    exit.state.segments[CODE_SEG].access_rights = 0xc09b;
    assert!(matches!(emulate(&mut guest, &exit), Outcome::Retired(_)));
    // Push onto a stack whose limit is exceeded: #SS(0).
    let (mut guest, mut exit) = protected_bench(&[0x50], true);
    exit.state.segments[2].limit = 0xfff;
    exit.state.gprs[4] = 0x1002;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::SS));
    assert!(guest.writes.is_empty());
}

#[test]
fn compatibility_mode_uses_segment_bases_and_limits() {
    // 32-bit code under EFER.LMA: mov [ebx], eax with DS base 0x1000.
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
    tables.map(&mut guest, 0x8000, 0x8000, RW);
    tables.map(&mut guest, 0x3000, 0x3000, RW);
    let mut exit = long_mode(tables.cr3());
    exit.state.segments[CODE_SEG].access_rights = 0xc09b;
    exit.state.segments[3].base = 0x1000;
    exit.state.segments[3].limit = 0x2fff;
    load_code(&mut guest, &mut exit, 0x8000, 0x8000, &[0x89, 0x03]);
    exit.state.gprs[0] = 0x4433_2211;
    exit.state.gprs[3] = 0x2000;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x3000, 4), [0x11, 0x22, 0x33, 0x44]);
    assert_eq!(done.rip, 0x8002);
    exit.state.gprs[3] = 0x2ffe;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
}

#[test]
fn fetch_beyond_code_segment_limit_faults() {
    // A 5-byte instruction whose last bytes are beyond CS.limit.
    let (mut guest, mut exit) = protected_bench(&[0xa3, 0, 0x20, 0, 0], true);
    exit.state.segments[CODE_SEG].limit = 0x8002;
    assert_eq!(emulate(&mut guest, &exit), fault(vector::GP));
}

#[test]
fn real_mode_stack_and_string_wrap_at_64k() {
    // push ax with SP = 0: SP wraps to 0xfffe.
    let (mut guest, mut exit) = real_bench(&[0x50]);
    exit.state.gprs[0] = 0xbeef;
    exit.state.gprs[4] = 0xffff_0000;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[4], 0xffff_fffe, "only SP changes");
    assert_eq!(guest.peek(0x1fffe, 2), [0xef, 0xbe]);
    // rep stosb from DI = 0xfffe, CX = 3: DI wraps to 0 inside ES.
    let (mut guest, mut exit) = real_bench(&[0xf3, 0xaa]);
    exit.state.gprs[0] = 0x77;
    exit.state.gprs[1] = 3;
    exit.state.gprs[7] = 0xfffe;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!((done.gprs[1], done.gprs[7], done.rip), (0, 1, 0x102));
    assert_eq!(guest.peek(0x1fffe, 2), [0x77, 0x77]);
    assert_eq!(guest.peek(0x10000, 1), [0x77]);
    // pop word [bx] (8f 07) with the stack at SS:0x300.
    let (mut guest, mut exit) = real_bench(&[0x8f, 0x07]);
    guest.poke(0x10300, &[0x34, 0x12]);
    exit.state.gprs[4] = 0x300;
    exit.state.gprs[3] = 0x200;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[4], 0x302);
    assert_eq!(guest.peek(0x10200, 2), [0x34, 0x12]);
}

#[test]
fn protected_mode_32bit_locked_and_byte_register_forms() {
    // lock cmpxchg8b [esi]
    let (mut guest, mut exit) = protected_bench(&[0xf0, 0x0f, 0xc7, 0x0e], true);
    guest.poke(0x2000, &[1, 0, 0, 0, 2, 0, 0, 0]);
    exit.state.gprs[6] = 0x2000;
    exit.state.gprs[0] = 1;
    exit.state.gprs[2] = 2;
    exit.state.gprs[3] = 0x33;
    exit.state.gprs[1] = 0x44;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x2000, 8), [0x33, 0, 0, 0, 0x44, 0, 0, 0]);
    assert_ne!(done.rflags & 0x40, 0);
    assert_eq!(done.rip, 0x8004);
    // add [ebx], ah; in 16-bit code with a 32-bit address (67 prefix)
    let (mut guest, mut exit) = protected_bench(&[0x67, 0x00, 0x23], false);
    guest.poke(0x2010, &[0x0f]);
    exit.state.gprs[0] = 0x0100;
    exit.state.gprs[3] = 0x2010;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(0x2010, 1), [0x10]);
    assert_eq!(done.rflags & 0x10, 0x10, "AF from the low nibble carry");
    assert_eq!(done.rip, 0x8003);
}
