//! Table tests for the modes the host cannot run natively (real mode, 16-bit
//! and 32-bit protected mode, compatibility mode), with results worked out
//! from the SDM: segment bases, 16-bit addressing forms and their wrap-around,
//! address-size overrides, 32-bit address wrap, the default SS for BP/SP
//! forms, 16-bit stack and string-register wrap.

use abi::{ExitMessage, Segment, SegmentRegister};
use emulator::{Emulator, Outcome, Retired, emulate};
use emulator_testkit::GuestMemory;
use emulator_testkit::drive::{Driven, drive};
use emulator_testkit::state::{
    compatibility_mode, protected_mode32, real_mode, real_mode_segment, rflags, segment,
    segment_type,
};
use emulator_testkit::{PageAttributes, PagingMode, Scene};

const RAX: usize = 0;
const RCX: usize = 1;
const RBX: usize = 3;
const RSP: usize = 4;
const RBP: usize = 5;
const RSI: usize = 6;
const RDI: usize = 7;

fn retire(memory: &GuestMemory, exit: &ExitMessage) -> Retired {
    match emulate(&mut memory.guest(), exit) {
        Outcome::Retired(retired) => retired,
        other => panic!("expected the instruction to retire, got {other:?}"),
    }
}

/// Real-mode memory (1 MiB + 64 KiB, for wrap past 1 MiB) with `bytes` at CS:IP.
fn real(bytes: &[u8], cs: u16, ds: u16, ip: u16) -> (GuestMemory, ExitMessage) {
    let memory = GuestMemory::new(0x110);
    memory
        .write((u64::from(cs) << 4) + u64::from(ip), bytes)
        .expect("code");
    (memory, real_mode(cs, ds, ip))
}

#[test]
fn real_mode_bx_si_displacement_wraps_at_64k_within_ds() {
    // mov ax, [bx+si+2]: offset (0xfffe + 3 + 2) & 0xffff = 3 in DS = 0x1234.
    let (memory, mut exit) = real(&[0x8b, 0x40, 0x02], 0x1000, 0x1234, 0x100);
    memory.write(0x12343, &[0xcd, 0xab]).expect("data");
    exit.state.gprs[RBX] = 0xfffe;
    exit.state.gprs[RSI] = 0x0003;
    exit.state.gprs[RAX] = 0xffff_ffff_0000_0000;
    let retired = retire(&memory, &exit);
    assert_eq!(retired.gprs[RAX], 0xffff_ffff_0000_abcd);
    assert_eq!(retired.rip, 0x103);
}

#[test]
fn real_mode_bp_forms_default_to_ss() {
    // mov [bp+di], al with SS = 0x2000 and DS = 0x3000: writes SS:0x0030.
    let (memory, mut exit) = real(&[0x88, 0x03], 0x1000, 0x3000, 0x100);
    exit.state.segments[Segment::Ss as usize] = real_mode_segment(0x2000, false);
    exit.state.gprs[RBP] = 0x10;
    exit.state.gprs[RDI] = 0x20;
    exit.state.gprs[RAX] = 0x5a;
    retire(&memory, &exit);
    assert_eq!(memory.snapshot(0x20030, 1), [0x5a]);
    assert_eq!(memory.snapshot(0x30030, 1), [0]);
}

#[test]
fn real_mode_push_wraps_sp_at_64k() {
    // push ax with SP = 0: SP becomes 0xfffe, the word lands at SS:0xfffe.
    let (memory, mut exit) = real(&[0x50], 0x1000, 0x1000, 0x100);
    exit.state.segments[Segment::Ss as usize] = real_mode_segment(0x4000, false);
    exit.state.gprs[RSP] = 0;
    exit.state.gprs[RAX] = 0x1234;
    let retired = retire(&memory, &exit);
    assert_eq!(retired.gprs[RSP], 0xfffe);
    assert_eq!(memory.snapshot(0x4fffe, 2), [0x34, 0x12]);
}

#[test]
fn real_mode_rep_movsb_backwards_wraps_si_and_di() {
    // std; rep movsb with CX = 3, SI = 1, DI = 0x11: copies DS:1, DS:0,
    // DS:0xffff to ES:0x11, 0x10, 0x0f; SI ends 0xfffe, DI 0x0e, CX 0.
    let (memory, mut exit) = real(&[0xf3, 0xa4], 0x1000, 0x2000, 0x100);
    exit.state.segments[Segment::Es as usize] = real_mode_segment(0x3000, false);
    memory.write(0x20000, &[0xa0, 0xa1]).expect("source");
    memory.write(0x2ffff, &[0xaf]).expect("source");
    exit.state.gprs[RCX] = 3;
    exit.state.gprs[RSI] = 1;
    exit.state.gprs[RDI] = 0x11;
    exit.state.rflags |= rflags::DF;
    let mut guest = memory.guest();
    let (ending, _) = drive(&mut Emulator::default(), &mut guest, &mut exit, 100, 10);
    assert_eq!(ending, Driven::Completed);
    assert_eq!(
        (
            exit.state.gprs[RCX],
            exit.state.gprs[RSI],
            exit.state.gprs[RDI]
        ),
        (0, 0xfffe, 0x0e)
    );
    assert_eq!(memory.snapshot(0x3000f, 3), [0xaf, 0xa0, 0xa1]);
}

/// 32-bit protected mode, paging off, flat segments, code at 0x2_0000.
fn protected(bytes: &[u8]) -> (GuestMemory, ExitMessage) {
    let memory = GuestMemory::new(64);
    memory.write(0x2_0000, bytes).expect("code");
    (memory, protected_mode32(None, 0, 0x2_0000))
}

#[test]
fn protected_mode_32_bit_addresses_wrap_at_4g() {
    // mov eax, [ebx+ecx] with EBX = 0xfffffff0, ECX = 0x30030: address 0x30020.
    let (memory, mut exit) = protected(&[0x8b, 0x04, 0x0b]);
    memory
        .write(0x3_0020, &0x1122_3344u32.to_le_bytes())
        .expect("data");
    exit.state.gprs[RBX] = 0xffff_fff0;
    exit.state.gprs[RCX] = 0x3_0030;
    assert_eq!(retire(&memory, &exit).gprs[RAX], 0x1122_3344);
}

#[test]
fn protected_mode_segment_base_is_added() {
    // mov eax, fs:[ebx] with FS.base = 0x3_0000.
    let (memory, mut exit) = protected(&[0x64, 0x8b, 0x03]);
    exit.state.segments[Segment::Fs as usize] = segment(
        0x18,
        0x3_0000,
        0xffff_ffff,
        segment_type::DATA_RW,
        0,
        SegmentRegister::AR_DB | SegmentRegister::AR_G,
    );
    memory
        .write(0x3_0040, &0xcafe_f00du32.to_le_bytes())
        .expect("data");
    exit.state.gprs[RBX] = 0x40;
    let retired = retire(&memory, &exit);
    assert_eq!((retired.gprs[RAX], retired.rip), (0xcafe_f00d, 0x2_0003));
}

#[test]
fn sixteen_bit_protected_mode_uses_16_bit_operands_and_honours_67() {
    // CS.D = 0. mov ax, [ebx] needs the 67 prefix for a 32-bit address;
    // the operand is 16 bits; a 66 prefix makes it 32.
    let (memory, mut exit) = protected(&[0x67, 0x8b, 0x03, 0x66, 0x67, 0x8b, 0x03]);
    // A 64 KiB code segment based at the code: IP starts at 0.
    exit.state.segments[Segment::Cs as usize] =
        segment(0x08, 0x2_0000, 0xffff, segment_type::CODE_XR, 0, 0);
    exit.state.rip = 0;
    memory
        .write(0x3_1234, &0x8877_6655u32.to_le_bytes())
        .expect("data");
    exit.state.gprs[RBX] = 0x3_1234;
    exit.state.gprs[RAX] = 0xffff_ffff;
    let retired = retire(&memory, &exit);
    assert_eq!((retired.gprs[RAX], retired.rip), (0xffff_6655, 3));
    exit.state.rip = 3;
    let retired = retire(&memory, &exit);
    assert_eq!((retired.gprs[RAX], retired.rip), (0x8877_6655, 7));
}

#[test]
fn compatibility_mode_addresses_are_32_bit() {
    // mov eax, [ebx] in a 32-bit code segment under long-mode paging: RBX's
    // upper half is ignored. (The SDM leaves RAX's upper half undefined
    // outside 64-bit mode, so only EAX is checked.)
    let mut scene = Scene::new(PagingMode::Level4, 64);
    scene.map_new(0x40_0000, PageAttributes::USER_RWX);
    let data = scene.map_new(0x50_0000, PageAttributes::USER_RW);
    scene.write_linear(0x40_0000, &[0x8b, 0x03]);
    scene.memory.write_u32(data + 0x10, 0x0bad_cafe);
    let mut exit = compatibility_mode(scene.tables.cr3(), 3, 0x40_0000);
    exit.state.gprs[RBX] = 0xdead_beef_0050_0010;
    exit.state.gprs[RAX] = u64::MAX;
    let retired = retire(&scene.memory, &exit);
    assert_eq!(
        (retired.gprs[RAX] as u32, retired.rip),
        (0x0bad_cafe, 0x40_0002)
    );
}
