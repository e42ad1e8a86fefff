//! Tests of segment-load validation: one accepted load per mode and register
//! kind, and every [`SegmentLoadError`] through `validate_reply`.

use super::*;
use crate::policy::reply_check::{ReplyError, ValidatedReply, validate_reply};
use abi::{Action, ChangedGroups, ExitMessage, Reply, ValidGroups, VectorRegisters};

const SEQUENCE: u64 = 9;
const EXIT_RIP: u64 = 0x2000;
const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
const CR4_LA57: u64 = 1 << 12;
/// Flat 4 GiB read/write data, accessed, DPL 0, G = 1, D/B = 1.
const FLAT_DATA: u32 = 0xc093;
/// Flat 4 GiB execute/read code, accessed, DPL 0.
const FLAT_CODE: u32 = 0xc09b;
const UNUSABLE: u32 = SegmentRegister::AR_UNUSABLE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Real,
    Protected,
    Virtual8086,
    Compatibility,
    Long,
    Long57,
}

/// An exit in `mode` at privilege level `cpl` (SS.DPL and SS.RPL).
fn exit_at(mode: Mode, cpl: u8) -> ExitMessage {
    let mut state = GuestState {
        rip: EXIT_RIP,
        rflags: 0x2,
        cpl: u32::from(cpl),
        ..GuestState::default()
    };
    let rights = |base: u32| base | u32::from(cpl) << SegmentRegister::AR_DPL_SHIFT;
    for (index, segment) in state.segments.iter_mut().enumerate() {
        let code = index == Segment::Cs as usize;
        *segment = SegmentRegister {
            selector: if code { 0x08 } else { 0x10 } | u16::from(cpl),
            access_rights: rights(if code { FLAT_CODE } else { FLAT_DATA }),
            limit: 0xffff_ffff,
            ..SegmentRegister::default()
        };
    }
    match mode {
        Mode::Real => {}
        Mode::Protected => state.cr0 = CR0_PE,
        Mode::Virtual8086 => {
            state.cr0 = CR0_PE;
            state.rflags |= 1 << 17;
        }
        Mode::Compatibility => {
            state.cr0 = CR0_PE;
            state.efer = EFER_LMA;
        }
        Mode::Long | Mode::Long57 => {
            state.cr0 = CR0_PE;
            state.efer = EFER_LMA;
            state.segments[Segment::Cs as usize].access_rights |= SegmentRegister::AR_L;
            if mode == Mode::Long57 {
                state.cr4 = CR4_LA57;
            }
        }
    }
    ExitMessage {
        abi_major: 1,
        abi_minor: 3,
        vcpu: 0,
        sequence: SEQUENCE,
        reason: 48,
        valid: ValidGroups::GPRS | ValidGroups::CONTROL | ValidGroups::SEGMENTS,
        qualification: 1,
        guest_physical: 0xb_8000,
        guest_linear: 0xb_8000,
        state,
        vectors: VectorRegisters::default(),
        ldtr: SegmentRegister::default(),
    }
}

fn protected() -> ExitMessage {
    exit_at(Mode::Protected, 0)
}

/// A resume that retires the instruction and loads `register` with `value`.
fn load(register: u8, value: SegmentRegister) -> Reply {
    let mut reply = Reply::new(SEQUENCE, Action::Resume);
    reply.changed = ChangedGroups::RIP | ChangedGroups::SEGMENT;
    reply.rip = EXIT_RIP + 3;
    reply.segment = SegmentLoad {
        value,
        register,
        flags: 0,
        reserved: [0; 6],
    };
    reply
}

fn segment(selector: u16, access_rights: u32, limit: u32, base: u64) -> SegmentRegister {
    SegmentRegister {
        selector,
        reserved0: 0,
        access_rights,
        limit,
        reserved1: 0,
        base,
    }
}

fn flat(selector: u16) -> SegmentRegister {
    segment(selector, FLAT_DATA, 0xffff_ffff, 0)
}

fn accepted(reply: &Reply, exit: &ExitMessage) -> SegmentUpdate {
    match validate_reply(reply, exit) {
        Ok(ValidatedReply::Resume(update)) => update.segment.expect("a segment update"),
        other => panic!("{other:?}"),
    }
}

fn refused(reply: &Reply, exit: &ExitMessage) -> ReplyError {
    validate_reply(reply, exit).unwrap_err()
}

fn rule(error: SegmentLoadError) -> ReplyError {
    ReplyError::SegmentLoad(error)
}

const ES: u8 = Segment::Es as u8;
const CS: u8 = Segment::Cs as u8;
const SS: u8 = Segment::Ss as u8;
const DS: u8 = Segment::Ds as u8;
const FS: u8 = Segment::Fs as u8;
const GS: u8 = Segment::Gs as u8;

#[test]
fn good_loads_are_accepted_in_every_mode() {
    for mode in [
        Mode::Real,
        Mode::Protected,
        Mode::Compatibility,
        Mode::Long,
        Mode::Long57,
    ] {
        let exit = exit_at(mode, 0);
        for register in [ES, SS, DS, FS, GS] {
            let update = accepted(&load(register, flat(0x10)), &exit);
            assert_eq!(update.register as u8, register);
            assert_eq!(update.value, flat(0x10));
            assert!(!update.blocks_interrupts);
        }
    }
    // A small byte-granular segment, a readable code segment, expand-down data.
    let exit = protected();
    accepted(&load(DS, segment(0x20, 0x4093, 0xff, 0xb_8100)), &exit);
    accepted(&load(ES, segment(0x08, FLAT_CODE, 0xffff_ffff, 0)), &exit);
    accepted(&load(SS, segment(0x30, 0x97, 0xfff, 0xb_8000)), &exit);
    // Real mode: the base is selector * 16, the rest stays.
    let real = exit_at(Mode::Real, 0);
    accepted(&load(DS, segment(0xb800, 0x93, 0xffff, 0xb_8000)), &real);
}

#[test]
fn unusable_segments_skip_the_type_checks() {
    for mode in [Mode::Protected, Mode::Long] {
        let exit = exit_at(mode, 0);
        for register in [ES, DS, FS, GS] {
            let update = accepted(&load(register, segment(0, UNUSABLE, 0, 0)), &exit);
            assert!(update.value.unusable());
        }
    }
    // A null SS in 64-bit mode keeps DPL = CPL; a stale base of an unusable
    // DS may lie above 4 GiB.
    accepted(
        &load(SS, segment(0, UNUSABLE, 0, 0)),
        &exit_at(Mode::Long, 0),
    );
    accepted(
        &load(DS, segment(0, UNUSABLE, 0, 0x1_0000_0000)),
        &exit_at(Mode::Long, 0),
    );
    let ring3 = exit_at(Mode::Long, 3);
    let null_ss = segment(3, UNUSABLE | 3 << 5, 0, 0);
    accepted(&load(SS, null_ss), &ring3);
}

#[test]
fn mov_ss_blocks_interrupts() {
    let mut reply = load(SS, flat(0x10));
    reply.segment.flags = SegmentLoad::BLOCKS_INTERRUPTS;
    assert!(accepted(&reply, &protected()).blocks_interrupts);
    for register in [ES, DS, FS, GS] {
        let mut reply = load(register, flat(0x10));
        reply.segment.flags = SegmentLoad::BLOCKS_INTERRUPTS;
        assert_eq!(
            refused(&reply, &protected()),
            rule(SegmentLoadError::BlockingWithoutSs)
        );
    }
    for flags in [2, 0x80, 0xff] {
        let mut reply = load(SS, flat(0x10));
        reply.segment.flags = flags;
        assert_eq!(
            refused(&reply, &protected()),
            rule(SegmentLoadError::UnknownFlags)
        );
    }
}

#[test]
fn registers_other_than_es_ss_ds_fs_gs_are_refused() {
    assert_eq!(
        refused(&load(CS, flat(0x08)), &protected()),
        rule(SegmentLoadError::CodeSegmentRegister)
    );
    for register in [6, 7, 0x80, 0xff] {
        assert_eq!(
            refused(&load(register, flat(0x10)), &protected()),
            rule(SegmentLoadError::UnknownRegister)
        );
    }
}

#[test]
fn the_group_needs_a_resume_with_a_new_rip() {
    let mut reply = load(DS, flat(0x10));
    reply.changed = ChangedGroups::SEGMENT;
    assert_eq!(
        refused(&reply, &protected()),
        rule(SegmentLoadError::WithoutNewRip)
    );
    let mut reply = load(DS, flat(0x10));
    reply.rip = EXIT_RIP;
    assert_eq!(
        refused(&reply, &protected()),
        rule(SegmentLoadError::WithoutNewRip)
    );
    for action in [Action::Retry, Action::Stop, Action::InjectException] {
        let mut reply = load(DS, flat(0x10));
        reply.action = action as u32;
        assert_eq!(
            refused(&reply, &protected()),
            ReplyError::ChangesWithoutResume
        );
    }
}

#[test]
fn reserved_bytes_must_be_zero() {
    let exit = protected();
    for index in 0..6 {
        let mut reply = load(DS, flat(0x10));
        reply.segment.reserved[index] = 1;
        assert_eq!(refused(&reply, &exit), ReplyError::ReservedFieldNotZero);
    }
    let mut reply = load(DS, flat(0x10));
    reply.segment.value.reserved0 = 1;
    assert_eq!(refused(&reply, &exit), ReplyError::ReservedFieldNotZero);
    let mut reply = load(DS, flat(0x10));
    reply.segment.value.reserved1 = 0x8000_0000;
    assert_eq!(refused(&reply, &exit), ReplyError::ReservedFieldNotZero);
    // Without the group, any nonzero byte of the load is a reserved field.
    let mut reply = load(DS, flat(0x10));
    reply.changed = ChangedGroups::RIP;
    assert_eq!(refused(&reply, &exit), ReplyError::ReservedFieldNotZero);
}

#[test]
fn access_rights_reserved_bits() {
    for bit in [8, 9, 10, 11, 17, 20, 31] {
        for unusable in [0, UNUSABLE] {
            let rights = (FLAT_DATA | unusable) | 1 << bit;
            assert_eq!(
                refused(
                    &load(DS, segment(0x10, rights, 0xffff_ffff, 0)),
                    &protected()
                ),
                rule(SegmentLoadError::AccessRightsReservedBits),
                "bit {bit}"
            );
        }
    }
}

#[test]
fn type_s_and_p_rules() {
    let exit = protected();
    let with = |rights| load(DS, segment(0x10, rights, 0xffff_ffff, 0));
    assert_eq!(
        refused(&with(0xc092), &exit),
        rule(SegmentLoadError::NotAccessed)
    );
    assert_eq!(
        refused(&with(0xc099), &exit),
        rule(SegmentLoadError::CodeNotReadable)
    );
    assert_eq!(
        refused(&with(0xc083), &exit),
        rule(SegmentLoadError::SystemSegment)
    );
    assert_eq!(
        refused(&with(0xc013), &exit),
        rule(SegmentLoadError::NotPresent)
    );
}

#[test]
fn granularity_must_fit_the_limit() {
    let exit = protected();
    // G = 1 needs limit[11:0] = 0xfff; G = 0 needs limit[31:20] = 0.
    for (rights, limit) in [(0xc093, 0xffff_f000), (0xc093, 0xffe), (0x4093, 0x10_0000)] {
        assert_eq!(
            refused(&load(FS, segment(0x10, rights, limit, 0)), &exit),
            rule(SegmentLoadError::GranularityMismatch),
            "{rights:#x} {limit:#x}"
        );
    }
    for (rights, limit) in [(0xc093, 0xfff), (0x4093, 0xf_ffff), (0x4093, 0)] {
        accepted(&load(FS, segment(0x10, rights, limit, 0)), &exit);
    }
}

#[test]
fn ss_must_be_read_write_data() {
    let exit = protected();
    for segment_type in [0x1, 0x5, 0xb, 0xf] {
        let rights = 0xc090 | segment_type;
        assert_eq!(
            refused(&load(SS, segment(0x10, rights, 0xffff_ffff, 0)), &exit),
            rule(SegmentLoadError::StackNotWritableData),
            "type {segment_type:#x}"
        );
    }
}

#[test]
fn ss_keeps_the_privilege_level() {
    let ring0 = protected();
    let ring3 = exit_at(Mode::Protected, 3);
    let ring3_stack = segment(0x4b, 0xc0f3, 0xffff_ffff, 0);
    accepted(&load(SS, ring3_stack), &ring3);
    assert_eq!(
        refused(&load(SS, ring3_stack), &ring0),
        rule(SegmentLoadError::StackDplNotCpl)
    );
    assert_eq!(
        refused(&load(SS, flat(0x13)), &ring3),
        rule(SegmentLoadError::StackDplNotCpl)
    );
    // Even an unusable SS carries the CPL in its DPL.
    assert_eq!(
        refused(
            &load(SS, segment(0, UNUSABLE | 3 << 5, 0, 0)),
            &exit_at(Mode::Long, 0)
        ),
        rule(SegmentLoadError::StackDplNotCpl)
    );
    assert_eq!(
        refused(&load(SS, flat(0x13)), &ring0),
        rule(SegmentLoadError::StackRplNotCpl)
    );
    // Real mode: any selector, DPL 0.
    accepted(
        &load(SS, segment(0x1233, 0x93, 0xffff, 0x1_2330)),
        &exit_at(Mode::Real, 0),
    );
    // Data segment registers may hold a DPL other than the CPL.
    accepted(&load(DS, segment(0x43, 0xc0f3, 0xffff_ffff, 0)), &ring0);
}

#[test]
fn bases() {
    for mode in [Mode::Protected, Mode::Long] {
        let exit = exit_at(mode, 0);
        for register in [ES, SS, DS] {
            assert_eq!(
                refused(
                    &load(register, segment(0x10, FLAT_DATA, 0xffff_ffff, 1 << 32)),
                    &exit
                ),
                rule(SegmentLoadError::BaseAbove4GiB)
            );
        }
        for register in [FS, GS] {
            accepted(
                &load(
                    register,
                    segment(0x10, FLAT_DATA, 0xffff_ffff, 0xffff_8000_0000_0000),
                ),
                &exit,
            );
            for base in [0x8000_0000_0000, 0x8000_0000_0000_0000] {
                for unusable in [0, UNUSABLE] {
                    let value = segment(0x10, FLAT_DATA | unusable, 0xffff_ffff, base);
                    assert_eq!(
                        refused(&load(register, value), &exit),
                        rule(SegmentLoadError::NonCanonicalBase),
                        "{base:#x}"
                    );
                }
            }
        }
    }
    // With LA57, 57-bit canonical bases are fine.
    let long57 = exit_at(Mode::Long57, 0);
    accepted(
        &load(FS, segment(0x10, FLAT_DATA, 0xffff_ffff, 0x8000_0000_0000)),
        &long57,
    );
    assert_eq!(
        refused(
            &load(
                FS,
                segment(0x10, FLAT_DATA, 0xffff_ffff, 0x0100_0000_0000_0000)
            ),
            &long57
        ),
        rule(SegmentLoadError::NonCanonicalBase)
    );
}

#[test]
fn virtual_8086_segments_are_fixed_by_the_selector() {
    let exit = exit_at(Mode::Virtual8086, 3);
    let v86 = |selector: u16| segment(selector, 0xf3, 0xffff, u64::from(selector) << 4);
    for register in [ES, SS, DS, FS, GS] {
        accepted(&load(register, v86(0xb800)), &exit);
    }
    let mut wrong_base = v86(0xb800);
    wrong_base.base += 1;
    let mut wrong_limit = v86(0xb800);
    wrong_limit.limit = 0xfffff;
    let mut wrong_rights = v86(0xb800);
    wrong_rights.access_rights = 0x93;
    for value in [wrong_base, wrong_limit, wrong_rights, flat(0x10)] {
        assert_eq!(
            refused(&load(DS, value), &exit),
            rule(SegmentLoadError::NotVirtual8086Segment),
            "{value:?}"
        );
    }
}

#[test]
fn every_error_has_its_own_message() {
    let all = [
        SegmentLoadError::WithoutNewRip,
        SegmentLoadError::CodeSegmentRegister,
        SegmentLoadError::UnknownRegister,
        SegmentLoadError::UnknownFlags,
        SegmentLoadError::BlockingWithoutSs,
        SegmentLoadError::NotVirtual8086Segment,
        SegmentLoadError::AccessRightsReservedBits,
        SegmentLoadError::NotAccessed,
        SegmentLoadError::CodeNotReadable,
        SegmentLoadError::SystemSegment,
        SegmentLoadError::NotPresent,
        SegmentLoadError::GranularityMismatch,
        SegmentLoadError::StackNotWritableData,
        SegmentLoadError::StackDplNotCpl,
        SegmentLoadError::StackRplNotCpl,
        SegmentLoadError::NonCanonicalBase,
        SegmentLoadError::BaseAbove4GiB,
    ];
    let mut messages: std::vec::Vec<&str> = all.iter().map(|e| e.describe()).collect();
    messages.push(ReplyError::ReservedFieldNotZero.describe());
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), all.len() + 1);
    assert_eq!(
        ReplyError::SegmentLoad(SegmentLoadError::CodeSegmentRegister).describe(),
        "segment load into CS"
    );
}
