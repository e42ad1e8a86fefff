//! Fault cases with values worked out from the SDM: segmentation (limits,
//! granularity, expand-down, rights, null segments, SS faults, canonical
//! addresses), alignment (#AC, aligned SSE operands, CMPXCHG16B) and paging
//! (P, R/W, U/S, WP, SMAP, NX, PKU, reserved bits, split accesses, fetches
//! across a page). Each must give the exact vector, error code and CR2 and
//! change nothing in guest memory.

use abi::ExitMessage;
use abi::exit::ept_qualification;
use abi::{Segment, ValidGroups};
use emulator::{Exception, Outcome, emulate};
use emulator_testkit::paging::pte;
use emulator_testkit::state::{cr0, cr4, efer, rflags, segment, segment_type};
use emulator_testkit::{GuestMemory, PageAttributes, PagingMode, Scene};

const RAX: usize = 0;
const RCX: usize = 1;
const RBX: usize = 3;
const RBP: usize = 5;
const RSI: usize = 6;
const RDI: usize = 7;

const GP: u8 = 13;
const SS: u8 = 12;
const PF: u8 = 14;
const AC: u8 = 17;

/// #PF error code bits.
const P: u32 = 1;
const W: u32 = 2;
const U: u32 = 4;
const RSVD: u32 = 8;
const I: u32 = 0x10;
const PK: u32 = 0x20;

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x50_0000;

fn exception(vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Exception {
    Exception {
        vector,
        error_code,
        cr2,
    }
}

/// Emulates once and checks the outcome is `expected` and that the bytes of
/// `watched` (guest-physical ranges) did not change.
fn expect_fault(
    memory: &GuestMemory,
    exit: &ExitMessage,
    watched: &[(u64, usize)],
    expected: Exception,
) {
    let before: Vec<Vec<u8>> = watched
        .iter()
        .map(|(gpa, len)| memory.snapshot(*gpa, *len))
        .collect();
    let mut guest = memory.guest();
    let outcome = emulate(&mut guest, exit);
    assert_eq!(
        outcome,
        Outcome::Exception(expected),
        "at rip {:#x}",
        exit.state.rip
    );
    for ((gpa, len), old) in watched.iter().zip(before) {
        assert_eq!(
            memory.snapshot(*gpa, *len),
            old,
            "memory at {gpa:#x} changed by a faulting instruction"
        );
    }
}

fn expect_retired(memory: &GuestMemory, exit: &ExitMessage) -> emulator::Retired {
    match emulate(&mut memory.guest(), exit) {
        Outcome::Retired(retired) => retired,
        other => panic!("expected the instruction to retire, got {other:?}"),
    }
}

// ---- Segmentation: 32-bit protected mode, paging off (linear = physical).

const SEG_CODE: u64 = 0x2_0000;
const SEG_DATA: u64 = 0x3_0000;

/// Guest memory with `bytes` at SEG_CODE and a 32-bit protected-mode exit
/// at CPL 0 with flat segments; the caller narrows segments.
fn protected(bytes: &[u8]) -> (GuestMemory, ExitMessage) {
    let memory = GuestMemory::new(64);
    memory.write(SEG_CODE, bytes).expect("code");
    let exit = emulator_testkit::state::protected_mode32(None, 0, SEG_CODE);
    (memory, exit)
}

fn data_segment(base: u64, limit: u32, kind: u32, extra: u32) -> abi::SegmentRegister {
    segment(0x10, base, limit, kind, 0, extra)
}

#[test]
fn access_beyond_the_data_segment_limit_is_gp0() {
    // mov eax, [ebx]: bytes 0xffe..0x1001 against limit 0xfff.
    let (memory, mut exit) = protected(&[0x8b, 0x03]);
    exit.state.segments[Segment::Ds as usize] = data_segment(
        SEG_DATA,
        0xfff,
        segment_type::DATA_RW,
        abi::SegmentRegister::AR_DB,
    );
    exit.state.gprs[RBX] = 0xffe;
    expect_fault(
        &memory,
        &exit,
        &[(SEG_DATA, 0x2000)],
        exception(GP, Some(0), None),
    );
    exit.state.gprs[RBX] = 0xffc;
    let retired = expect_retired(&memory, &exit);
    assert_eq!(retired.rip, SEG_CODE + 2);
}

#[test]
fn a_granular_limit_is_checked_at_byte_precision() {
    // G = 1: VMX holds the expanded limit 0x1fff; a dword at 0x1ffd ends past it.
    let (memory, mut exit) = protected(&[0x8b, 0x03]);
    exit.state.segments[Segment::Ds as usize] = data_segment(
        SEG_DATA,
        0x1fff,
        segment_type::DATA_RW,
        abi::SegmentRegister::AR_DB | abi::SegmentRegister::AR_G,
    );
    exit.state.gprs[RBX] = 0x1ffd;
    expect_fault(&memory, &exit, &[], exception(GP, Some(0), None));
}

#[test]
fn stack_segment_limit_violations_are_ss0() {
    // mov eax, [ebp]: SS is the default segment for EBP.
    let (memory, mut exit) = protected(&[0x8b, 0x45, 0x00]);
    exit.state.segments[Segment::Ss as usize] = data_segment(
        SEG_DATA,
        0xfff,
        segment_type::DATA_RW,
        abi::SegmentRegister::AR_DB,
    );
    exit.state.gprs[RBP] = 0x1000;
    expect_fault(&memory, &exit, &[], exception(SS, Some(0), None));
}

#[test]
fn writing_a_read_only_data_segment_is_gp0() {
    // mov [ebx], eax
    let (memory, mut exit) = protected(&[0x89, 0x03]);
    exit.state.segments[Segment::Ds as usize] = data_segment(
        SEG_DATA,
        0xffff,
        segment_type::DATA_RO,
        abi::SegmentRegister::AR_DB,
    );
    exit.state.gprs[RBX] = 0x10;
    exit.state.gprs[RAX] = 0xdead_beef;
    expect_fault(
        &memory,
        &exit,
        &[(SEG_DATA, 0x100)],
        exception(GP, Some(0), None),
    );
}

#[test]
fn a_null_data_segment_is_gp0() {
    let (memory, mut exit) = protected(&[0x8b, 0x03]);
    exit.state.segments[Segment::Ds as usize] = emulator_testkit::state::unusable();
    exit.state.gprs[RBX] = SEG_DATA;
    expect_fault(&memory, &exit, &[], exception(GP, Some(0), None));
}

#[test]
fn expand_down_segments_fault_at_or_below_the_limit() {
    // Expand-down, D/B = 1: valid offsets are limit+1 ..= 0xffffffff.
    let (memory, mut exit) = protected(&[0x8b, 0x03]);
    exit.state.segments[Segment::Ds as usize] = data_segment(
        0,
        0x3_0fff,
        segment_type::DATA_RW_EXPAND_DOWN,
        abi::SegmentRegister::AR_DB,
    );
    exit.state.gprs[RBX] = 0x3_0800;
    expect_fault(&memory, &exit, &[], exception(GP, Some(0), None));
    exit.state.gprs[RBX] = 0x3_1000;
    expect_retired(&memory, &exit);
}

#[test]
fn reading_through_an_execute_only_code_segment_is_gp0() {
    // mov eax, cs:[ebx]
    let (memory, mut exit) = protected(&[0x2e, 0x8b, 0x03]);
    exit.state.segments[Segment::Cs as usize] = segment(
        0x08,
        0,
        0xffff_ffff,
        segment_type::CODE_X,
        0,
        abi::SegmentRegister::AR_DB | abi::SegmentRegister::AR_G,
    );
    exit.state.gprs[RBX] = SEG_DATA;
    expect_fault(&memory, &exit, &[], exception(GP, Some(0), None));
}

#[test]
fn writing_through_a_code_segment_is_gp0() {
    // mov cs:[ebx], eax (code segments are never writable)
    let (memory, mut exit) = protected(&[0x2e, 0x89, 0x03]);
    exit.state.gprs[RBX] = SEG_DATA;
    expect_fault(
        &memory,
        &exit,
        &[(SEG_DATA, 0x10)],
        exception(GP, Some(0), None),
    );
}

// ---- 64-bit mode: canonical addresses.

fn long_mode_scene(bytes: &[u8]) -> (Scene, u64) {
    let mut scene = Scene::new(PagingMode::Level4, 64);
    scene.map_new(CODE, PageAttributes::USER_RWX);
    let data = scene.map_new(DATA, PageAttributes::USER_RW);
    scene.write_linear(CODE, bytes);
    (scene, data)
}

#[test]
fn non_canonical_addresses_are_gp0_or_ss0_through_the_stack() {
    let (scene, _) = long_mode_scene(&[0x8b, 0x03]); // mov eax, [rbx]
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = 0x0000_8000_0000_0000;
    expect_fault(&scene.memory, &exit, &[], exception(GP, Some(0), None));

    let (scene, _) = long_mode_scene(&[0x8b, 0x45, 0x00]); // mov eax, [rbp]
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBP] = 0xffff_7fff_ffff_fff0;
    expect_fault(&scene.memory, &exit, &[], exception(SS, Some(0), None));

    // An access that starts canonical and ends non-canonical.
    let (scene, _) = long_mode_scene(&[0x48, 0x8b, 0x03]); // mov rax, [rbx]
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = 0x0000_7fff_ffff_fffc;
    expect_fault(&scene.memory, &exit, &[], exception(GP, Some(0), None));
}

#[test]
fn fs_base_is_added_before_the_canonical_check() {
    // mov eax, fs:[rbx] with FS.base + RBX non-canonical.
    let (scene, _) = long_mode_scene(&[0x64, 0x8b, 0x03]);
    let mut exit = scene.exit(3, CODE);
    exit.state.segments[Segment::Fs as usize].base = 0x0000_7fff_ffff_f000;
    exit.state.gprs[RBX] = 0x2000;
    expect_fault(&scene.memory, &exit, &[], exception(GP, Some(0), None));
    // With FS.base = DATA - 0x10, fs:[0x10] is DATA.
    exit.state.segments[Segment::Fs as usize].base = DATA - 0x10;
    exit.state.gprs[RBX] = 0x10;
    scene.write_linear(DATA, &0x1234_5678u32.to_le_bytes());
    assert_eq!(expect_retired(&scene.memory, &exit).gprs[RAX], 0x1234_5678);
}

// ---- Alignment.

#[test]
fn misaligned_access_with_am_ac_at_cpl3_is_ac0() {
    let (scene, data) = long_mode_scene(&[0x89, 0x03]); // mov [rbx], eax
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 1;
    exit.state.rflags |= rflags::AC;
    expect_fault(
        &scene.memory,
        &exit,
        &[(data, 0x1000)],
        exception(AC, Some(0), None),
    );
    // No #AC without RFLAGS.AC, at CPL 0, or without CR0.AM.
    exit.state.rflags &= !rflags::AC;
    expect_retired(&scene.memory, &exit);
    let mut exit = scene.exit(0, CODE);
    exit.state.gprs[RBX] = DATA + 1;
    exit.state.rflags |= rflags::AC;
    expect_retired(&scene.memory, &exit);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 1;
    exit.state.rflags |= rflags::AC;
    exit.state.cr0 &= !cr0::AM;
    expect_retired(&scene.memory, &exit);
}

#[test]
fn misaligned_movdqa_and_movaps_are_gp0_without_ac() {
    for bytes in [
        &[0x66, 0x0f, 0x6f, 0x03][..], // movdqa xmm0, [rbx]
        &[0x0f, 0x29, 0x03][..],       // movaps [rbx], xmm0
        &[0x66, 0x0f, 0xe7, 0x03][..], // movntdq [rbx], xmm0
    ] {
        let (scene, data) = long_mode_scene(bytes);
        let mut exit = scene.exit(0, CODE);
        exit.state.gprs[RBX] = DATA + 8;
        expect_fault(
            &scene.memory,
            &exit,
            &[(data, 0x1000)],
            exception(GP, Some(0), None),
        );
        exit.state.gprs[RBX] = DATA + 16;
        expect_retired(&scene.memory, &exit);
    }
}

#[test]
fn misaligned_cmpxchg16b_is_gp0() {
    let (scene, data) = long_mode_scene(&[0xf0, 0x48, 0x0f, 0xc7, 0x0e]); // lock cmpxchg16b [rsi]
    let mut exit = scene.exit(0, CODE);
    exit.state.gprs[RSI] = DATA + 8;
    expect_fault(
        &scene.memory,
        &exit,
        &[(data, 0x1000)],
        exception(GP, Some(0), None),
    );
    exit.state.gprs[RSI] = DATA + 16;
    expect_retired(&scene.memory, &exit);
}

// ---- Paging.

#[test]
fn not_present_pages_fault_with_the_access_kind_and_cpl() {
    let (mut scene, _) = long_mode_scene(&[0x8b, 0x03]); // mov eax, [rbx]
    scene.unmap(DATA);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 0x123;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(U), Some(DATA + 0x123)),
    );
    let mut exit = scene.exit(0, CODE);
    exit.state.gprs[RBX] = DATA + 0x123;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(0), Some(DATA + 0x123)),
    );

    let (mut scene, _) = long_mode_scene(&[0x89, 0x03]); // mov [rbx], eax
    scene.unmap(DATA);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 0x40;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(W | U), Some(DATA + 0x40)),
    );
}

#[test]
fn protection_violations_set_p_and_the_access_bits() {
    // CPL 3 write to a read-only user page.
    let (mut scene, _) = long_mode_scene(&[0x89, 0x03]);
    let frame = scene.map_new(DATA, PageAttributes::USER_RO);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 8;
    expect_fault(
        &scene.memory,
        &exit,
        &[(frame, 0x1000)],
        exception(PF, Some(P | W | U), Some(DATA + 8)),
    );

    // CPL 3 read of a supervisor page.
    let (mut scene, _) = long_mode_scene(&[0x8b, 0x03]);
    scene.map_new(DATA, PageAttributes::SUPERVISOR_RW);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 8;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(P | U), Some(DATA + 8)),
    );
}

#[test]
fn cr0_wp_decides_supervisor_writes_to_read_only_pages() {
    let (mut scene, _) = long_mode_scene(&[0x89, 0x03]);
    let frame = scene.map_new(DATA, PageAttributes::USER_RO);
    let mut exit = scene.exit(0, CODE);
    exit.state.gprs[RBX] = DATA + 8;
    exit.state.gprs[RAX] = 0x5a5a_5a5a;
    expect_fault(
        &scene.memory,
        &exit,
        &[(frame, 0x1000)],
        exception(PF, Some(P | W), Some(DATA + 8)),
    );
    exit.state.cr0 &= !cr0::WP;
    expect_retired(&scene.memory, &exit);
    assert_eq!(scene.memory.read_u32(frame + 8), 0x5a5a_5a5a);
}

#[test]
fn smap_blocks_supervisor_reads_of_user_pages_unless_ac() {
    let (scene, _) = long_mode_scene(&[0x8b, 0x03]);
    let mut exit = scene.exit(0, CODE);
    exit.state.cr4 |= cr4::SMAP;
    exit.state.gprs[RBX] = DATA + 8;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(P), Some(DATA + 8)),
    );
    exit.state.rflags |= rflags::AC;
    expect_retired(&scene.memory, &exit);
}

#[test]
fn reserved_bits_fault_with_rsvd() {
    // NX set while EFER.NXE = 0 is a reserved bit.
    let (scene, _) = long_mode_scene(&[0x8b, 0x03]);
    let mut exit = scene.exit(3, CODE);
    exit.state.efer &= !efer::NXE;
    exit.state.gprs[RBX] = DATA + 8;
    // The code page has NX clear, the data page NX set.
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(P | RSVD | U), Some(DATA + 8)),
    );
}

#[test]
fn protection_keys_deny_access_with_pk() {
    let (mut scene, _) = long_mode_scene(&[0x8b, 0x03]);
    // Key 1 on the data page; PKRU.AD1 set.
    scene
        .tables
        .set_leaf_bits(&scene.memory, &mut scene.frames, DATA, 1 << 59);
    let mut exit = scene.exit(3, CODE);
    exit.state.cr4 |= cr4::PKE;
    exit.state.pkru = 1 << 2;
    exit.state.gprs[RBX] = DATA + 8;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(P | U | PK), Some(DATA + 8)),
    );
    exit.state.pkru = 0;
    expect_retired(&scene.memory, &exit);
}

#[test]
fn a_split_write_faulting_on_its_second_page_writes_nothing() {
    // mov [rbx], rax at DATA+0xffc with DATA+0x1000 not present: #PF on the
    // second page (CR2 = its first byte); the first page is unchanged.
    let (scene, data) = long_mode_scene(&[0x48, 0x89, 0x03]);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 0xffc;
    exit.state.gprs[RAX] = u64::MAX;
    expect_fault(
        &scene.memory,
        &exit,
        &[(data, 0x1000)],
        exception(PF, Some(W | U), Some(DATA + 0x1000)),
    );
}

#[test]
fn a_split_locked_write_faulting_on_its_second_page_writes_nothing() {
    let (scene, data) = long_mode_scene(&[0xf0, 0x0f, 0xc1, 0x03]); // lock xadd [rbx], eax
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 0xffe;
    exit.state.gprs[RAX] = 1;
    expect_fault(
        &scene.memory,
        &exit,
        &[(data, 0x1000)],
        exception(PF, Some(W | U), Some(DATA + 0x1000)),
    );
}

#[test]
fn fetching_from_a_no_execute_page_faults_with_i() {
    let mut scene = Scene::new(PagingMode::Level4, 64);
    scene.map_new(CODE, PageAttributes::USER_RW);
    scene.map_new(DATA, PageAttributes::USER_RW);
    scene.write_linear(CODE, &[0x8b, 0x03]);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(P | U | I), Some(CODE)),
    );
}

#[test]
fn an_instruction_crossing_into_a_missing_page_faults_on_the_fetch() {
    // mov eax, [rbx] with its second byte on the next, unmapped page.
    let (scene, _) = long_mode_scene(&[]);
    scene.write_linear(CODE + 0xfff, &[0x8b]);
    let mut exit = scene.exit(3, CODE + 0xfff);
    exit.state.gprs[RBX] = DATA;
    expect_fault(
        &scene.memory,
        &exit,
        &[],
        exception(PF, Some(U | I), Some(CODE + 0x1000)),
    );
}

#[test]
fn an_instruction_crossing_a_page_boundary_is_fetched_from_both_pages() {
    let (mut scene, data) = long_mode_scene(&[]);
    scene.map_new(CODE + 0x1000, PageAttributes::USER_RWX);
    scene.write_linear(CODE + 0xffe, &[0x48, 0x8b, 0x03]); // mov rax, [rbx]
    scene.memory.write_u64(data + 0x10, 0x0123_4567_89ab_cdef);
    let mut exit = scene.exit(3, CODE + 0xffe);
    exit.state.gprs[RBX] = DATA + 0x10;
    let retired = expect_retired(&scene.memory, &exit);
    assert_eq!(
        (retired.gprs[RAX], retired.rip),
        (0x0123_4567_89ab_cdef, CODE + 0x1001)
    );
}

#[test]
fn accessed_and_dirty_bits_are_set_by_a_write() {
    let (mut scene, _) = long_mode_scene(&[0x89, 0x03]);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 4;
    expect_retired(&scene.memory, &exit);
    let leaf = scene.tables.leaf(&scene.memory, &mut scene.frames, DATA);
    assert_eq!(
        leaf & (pte::ACCESSED | pte::DIRTY),
        pte::ACCESSED | pte::DIRTY
    );
}

#[test]
fn paging_faults_in_32_bit_and_pae_modes() {
    for mode in [PagingMode::Bits32, PagingMode::Pae] {
        let mut scene = Scene::new(mode, 64);
        scene.map_new(CODE, PageAttributes::USER_RWX);
        scene.map_new(DATA, PageAttributes::USER_RO);
        scene.write_linear(CODE, &[0x89, 0x03]); // mov [ebx], eax
        let mut exit = scene.exit(3, CODE);
        exit.state.gprs[RBX] = DATA + 0x10;
        expect_fault(
            &scene.memory,
            &exit,
            &[],
            exception(PF, Some(P | W | U), Some(DATA + 0x10)),
        );
        exit.state.gprs[RBX] = DATA + 0x1010;
        expect_fault(
            &scene.memory,
            &exit,
            &[],
            exception(PF, Some(W | U), Some(DATA + 0x1010)),
        );
    }
}

#[test]
fn a_guest_linear_address_that_does_not_match_means_retry() {
    // The exit reports a linear address the decoded operand does not have
    // (the guest changed code or page tables under us): retry, change nothing.
    let (scene, data) = long_mode_scene(&[0x89, 0x03]); // mov [rbx], eax
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RBX] = DATA + 8;
    exit.state.gprs[RAX] = 0xffff_ffff;
    exit.qualification = ept_qualification::WRITE
        | ept_qualification::GUEST_LINEAR_VALID
        | ept_qualification::TRANSLATED_ACCESS;
    exit.valid |= ValidGroups::GUEST_LINEAR;
    exit.guest_linear = DATA + 0x800;
    let before = scene.memory.snapshot(data, 0x1000);
    assert_eq!(emulate(&mut scene.memory.guest(), &exit), Outcome::Retry);
    assert_eq!(scene.memory.snapshot(data, 0x1000), before);
    exit.guest_linear = DATA + 8;
    expect_retired(&scene.memory, &exit);
    assert_eq!(scene.memory.read_u32(data + 8), 0xffff_ffff);
}

#[test]
fn string_faults_report_the_progress_made() {
    // rep stosb from DATA+0xffe, 4 bytes, DATA+0x1000 not present: two bytes
    // are stored, then #PF at DATA+0x1000 with RCX = 2 and RDI = DATA+0x1000.
    let (scene, data) = long_mode_scene(&[0xf3, 0xaa]);
    let mut exit = scene.exit(3, CODE);
    exit.state.gprs[RDI] = DATA + 0xffe;
    exit.state.gprs[RCX] = 4;
    exit.state.gprs[RAX] = 0x77;
    let mut guest = scene.memory.guest();
    let mut emulator = emulator::Emulator::default();
    let (ending, _) = emulator_testkit::drive::drive(&mut emulator, &mut guest, &mut exit, 100, 10);
    assert_eq!(
        ending,
        emulator_testkit::drive::Driven::Exception(exception(PF, Some(W | U), Some(DATA + 0x1000)))
    );
    assert_eq!(
        (exit.state.gprs[RCX], exit.state.gprs[RDI]),
        (2, DATA + 0x1000)
    );
    assert_eq!(scene.memory.snapshot(data + 0xffe, 2), [0x77, 0x77]);
    assert_eq!(exit.state.rip, CODE);
}
