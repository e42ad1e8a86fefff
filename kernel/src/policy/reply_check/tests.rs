//! Tests of reply validation: one accepted reply per action and every
//! [`ReplyError`].

use super::*;
use abi::ValidGroups;

const SEQUENCE: u64 = 77;
/// RFLAGS at the exit: IF and bit 1 set, ZF set.
const EXIT_RFLAGS: u64 = 0x246;

fn exit_in(mode: GuestMode) -> ExitMessage {
    let mut state = GuestState {
        rflags: EXIT_RFLAGS,
        rip: 0x1000,
        ..GuestState::default()
    };
    match mode {
        GuestMode::Real => {}
        GuestMode::Protected => state.cr0 = CR0_PE,
        GuestMode::Compatibility => {
            state.cr0 = CR0_PE;
            state.efer = EFER_LMA;
        }
        GuestMode::Long { la57 } => {
            state.cr0 = CR0_PE;
            state.efer = EFER_LMA;
            state.segments[Segment::Cs as usize].access_rights = SegmentRegister::AR_L;
            if la57 {
                state.cr4 = CR4_LA57;
            }
        }
    }
    ExitMessage {
        abi_major: 1,
        abi_minor: 0,
        vcpu: 0,
        sequence: SEQUENCE,
        reason: 48,
        valid: ValidGroups::GPRS | ValidGroups::CONTROL,
        qualification: 0,
        guest_physical: 0xfee0_00b0,
        guest_linear: 0,
        state,
        vectors: VectorRegisters::default(),
        ldtr: SegmentRegister::default(),
    }
}

fn long() -> ExitMessage {
    exit_in(GuestMode::Long { la57: false })
}

fn resume() -> Reply {
    let mut reply = Reply::new(SEQUENCE, Action::Resume);
    reply.changed = ChangedGroups::GPRS | ChangedGroups::RIP | ChangedGroups::RFLAGS;
    reply.gprs[0] = 0x1234;
    reply.rip = 0x1003;
    reply.rflags = EXIT_RFLAGS;
    reply
}

fn inject(vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Reply {
    let mut reply = Reply::new(SEQUENCE, Action::InjectException);
    reply.exception.vector = vector;
    if let Some(code) = error_code {
        reply.exception.flags |= ExceptionReply::HAS_ERROR_CODE;
        reply.exception.error_code = code;
    }
    if let Some(cr2) = cr2 {
        reply.exception.flags |= ExceptionReply::SETS_CR2;
        reply.exception.cr2 = cr2;
    }
    reply
}

fn refused(reply: &Reply, exit: &ExitMessage) -> ReplyError {
    validate_reply(reply, exit).unwrap_err()
}

#[test]
fn modes_are_derived_from_cr0_efer_and_cs() {
    for mode in [
        GuestMode::Real,
        GuestMode::Protected,
        GuestMode::Compatibility,
        GuestMode::Long { la57: false },
        GuestMode::Long { la57: true },
    ] {
        assert_eq!(GuestMode::of(&exit_in(mode).state), mode);
    }
}

#[test]
fn a_good_resume_is_accepted() {
    let mut reply = resume();
    reply.rflags = EXIT_RFLAGS ^ RFLAGS_STATUS;
    reply.changed |= ChangedGroups::VECTORS;
    reply.vector_mask = 0x8001;
    reply.vectors.ymm[15][0] = 9;
    // Values of groups not marked changed are ignored.
    let ValidatedReply::Resume(update) = validate_reply(&reply, &long()).unwrap() else {
        panic!("not a resume");
    };
    assert_eq!(update.gprs.unwrap()[0], 0x1234);
    assert_eq!(update.rip, Some(0x1003));
    assert_eq!(update.rflags, Some(EXIT_RFLAGS ^ RFLAGS_STATUS));
    assert_eq!(update.vector_mask, 0x8001);
    assert_eq!(update.vectors.ymm[15][0], 9);

    let mut reply = Reply::new(SEQUENCE, Action::Resume);
    reply.changed = ChangedGroups::GPRS;
    reply.rip = u64::MAX;
    reply.rflags = u64::MAX;
    let ValidatedReply::Resume(update) = validate_reply(&reply, &long()).unwrap() else {
        panic!("not a resume");
    };
    assert_eq!(
        (update.rip, update.rflags, update.vector_mask),
        (None, None, 0)
    );
}

#[test]
fn retry_and_stop_are_accepted() {
    for (action, expected) in [
        (Action::Retry, ValidatedReply::Retry),
        (Action::Stop, ValidatedReply::Stop),
    ] {
        assert_eq!(
            validate_reply(&Reply::new(SEQUENCE, action), &long()),
            Ok(expected)
        );
    }
}

#[test]
fn header_errors() {
    let mut reply = resume();
    reply.abi_major = 2;
    assert_eq!(refused(&reply, &long()), ReplyError::AbiMajorMismatch);
    let mut reply = resume();
    reply.abi_minor = 9;
    assert!(
        validate_reply(&reply, &long()).is_ok(),
        "a newer minor is compatible"
    );
    let mut reply = resume();
    reply.sequence = SEQUENCE - 1;
    assert_eq!(refused(&reply, &long()), ReplyError::WrongSequence);
    for action in [0, 5, u32::MAX] {
        let mut reply = resume();
        reply.action = action;
        assert_eq!(refused(&reply, &long()), ReplyError::UnknownAction);
    }
}

#[test]
fn reserved_fields_must_be_zero() {
    for index in 0..6 {
        let mut reply = resume();
        reply.segment.reserved[index] = 1;
        assert_eq!(refused(&reply, &long()), ReplyError::ReservedFieldNotZero);
    }
    let mut reply = inject(13, Some(0), None);
    reply.exception.reserved = 1;
    assert_eq!(refused(&reply, &long()), ReplyError::ReservedFieldNotZero);
}

#[test]
fn changed_groups_and_vector_mask() {
    let mut reply = resume();
    reply.changed |= 1 << 5;
    assert_eq!(refused(&reply, &long()), ReplyError::UnknownChangedGroups);
    let mut reply = resume();
    reply.changed = 1 << 31;
    assert_eq!(refused(&reply, &long()), ReplyError::UnknownChangedGroups);
    let mut reply = resume();
    reply.vector_mask = 1;
    assert_eq!(
        refused(&reply, &long()),
        ReplyError::VectorMaskWithoutVectors
    );
    let mut reply = resume();
    reply.changed |= ChangedGroups::VECTORS;
    assert_eq!(refused(&reply, &long()), ReplyError::VectorsWithoutMask);
    let mut reply = resume();
    reply.changed |= ChangedGroups::VECTORS;
    reply.vector_mask = 1 << 16;
    assert_eq!(refused(&reply, &long()), ReplyError::VectorMaskTooWide);
    for action in [Action::Retry, Action::Stop, Action::InjectException] {
        let mut reply = inject(13, Some(0), None);
        reply.action = action as u32;
        if action != Action::InjectException {
            reply.exception = ExceptionReply::default();
        }
        reply.changed = ChangedGroups::RIP;
        assert_eq!(refused(&reply, &long()), ReplyError::ChangesWithoutResume);
        reply.changed = 0;
        reply.vector_mask = 1;
        assert_eq!(refused(&reply, &long()), ReplyError::ChangesWithoutResume);
    }
}

#[test]
fn rip_must_be_canonical_for_the_mode() {
    let check = |mode, rip| {
        let mut reply = resume();
        reply.rip = rip;
        validate_reply(&reply, &exit_in(mode)).map(|_| ())
    };
    let long48 = GuestMode::Long { la57: false };
    let long57 = GuestMode::Long { la57: true };
    assert_eq!(check(long48, 0x7fff_ffff_ffff), Ok(()));
    assert_eq!(check(long48, 0xffff_8000_0000_0000), Ok(()));
    assert_eq!(
        check(long48, 0x8000_0000_0000),
        Err(ReplyError::NonCanonicalRip)
    );
    assert_eq!(
        check(long48, 0x8000_0000_0000_0000),
        Err(ReplyError::NonCanonicalRip)
    );
    assert_eq!(check(long57, 0x8000_0000_0000), Ok(()));
    assert_eq!(
        check(long57, 0x0100_0000_0000_0000),
        Err(ReplyError::NonCanonicalRip)
    );
    assert_eq!(check(long57, 0xff00_0000_0000_0000), Ok(()));
    for mode in [
        GuestMode::Real,
        GuestMode::Protected,
        GuestMode::Compatibility,
    ] {
        assert_eq!(check(mode, 0xffff_ffff), Ok(()));
        assert_eq!(check(mode, 0x1_0000_0000), Err(ReplyError::NonCanonicalRip));
        assert_eq!(
            check(mode, 0xffff_ffff_ffff_fff0),
            Err(ReplyError::NonCanonicalRip)
        );
    }
}

#[test]
fn rflags_rules() {
    let check = |rflags| {
        let mut reply = resume();
        reply.rflags = rflags;
        validate_reply(&reply, &long()).map(|_| ())
    };
    assert_eq!(
        check(EXIT_RFLAGS & !RFLAGS_FIXED_ONE),
        Err(ReplyError::RflagsReservedBits)
    );
    for bit in [3, 5, 15, 22, 31, 32, 63] {
        assert_eq!(
            check(EXIT_RFLAGS | 1 << bit),
            Err(ReplyError::RflagsReservedBits),
            "bit {bit}"
        );
    }
    // TF, IF, DF, IOPL, NT, RF, VM, AC, VIF, VIP, ID: not an instruction's to change.
    for bit in [8, 9, 10, 12, 13, 14, 16, 17, 18, 19, 20, 21] {
        assert_eq!(
            check(EXIT_RFLAGS ^ 1 << bit),
            Err(ReplyError::RflagsProtectedFlagChanged),
            "bit {bit}"
        );
    }
    for bit in [0, 2, 4, 6, 7, 11] {
        assert_eq!(check(EXIT_RFLAGS ^ 1 << bit), Ok(()), "bit {bit}");
    }
}

#[test]
fn good_exceptions_are_accepted() {
    let accepted = |reply: Reply, exit: &ExitMessage| match validate_reply(&reply, exit) {
        Ok(ValidatedReply::InjectException(injection)) => injection,
        other => panic!("{other:?}"),
    };
    let page_fault = accepted(inject(14, Some(0x7), Some(0xffff_8000_0000_1000)), &long());
    assert_eq!(
        page_fault,
        ExceptionInjection {
            vector: 14,
            error_code: Some(7),
            cr2: Some(0xffff_8000_0000_1000)
        }
    );
    for vector in [0, 1, 3, 4, 5, 6, 7, 16, 19, 20] {
        let injection = accepted(inject(vector, None, None), &long());
        assert_eq!(injection.error_code, None);
    }
    for vector in [10, 11, 12, 13, 21] {
        assert_eq!(
            accepted(inject(vector, Some(0xfff8), None), &long()).error_code,
            Some(0xfff8)
        );
    }
    accepted(inject(8, Some(0), None), &long());
    accepted(inject(17, Some(0), None), &long());
    // Real mode: no error codes at all.
    accepted(inject(13, None, None), &exit_in(GuestMode::Real));
}

#[test]
fn exception_vector_rules() {
    for vector in [2, 9, 15, 18, 22, 27, 31, 32, 200, 255] {
        assert_eq!(
            refused(&inject(vector, None, None), &long()),
            ReplyError::BadExceptionVector,
            "{vector}"
        );
    }
    let mut reply = inject(13, Some(0), None);
    reply.exception.flags |= 1 << 2;
    assert_eq!(refused(&reply, &long()), ReplyError::UnknownExceptionFlags);
}

#[test]
fn error_code_rules() {
    assert_eq!(
        refused(&inject(8, None, None), &long()),
        ReplyError::MissingErrorCode
    );
    assert_eq!(
        refused(&inject(13, None, None), &exit_in(GuestMode::Protected)),
        ReplyError::MissingErrorCode
    );
    assert_eq!(
        refused(&inject(14, None, Some(0x1000)), &long()),
        ReplyError::MissingErrorCode
    );
    assert_eq!(
        refused(&inject(6, Some(0), None), &long()),
        ReplyError::UnexpectedErrorCode
    );
    assert_eq!(
        refused(&inject(13, Some(0), None), &exit_in(GuestMode::Real)),
        ReplyError::UnexpectedErrorCode
    );
    assert_eq!(
        refused(&inject(13, Some(0x1_0000), None), &long()),
        ReplyError::ErrorCodeOutOfRange
    );
    assert_eq!(
        refused(&inject(8, Some(1), None), &long()),
        ReplyError::ErrorCodeOutOfRange
    );
    assert_eq!(
        refused(&inject(17, Some(4), None), &long()),
        ReplyError::ErrorCodeOutOfRange
    );
    let mut reply = inject(6, None, None);
    reply.exception.error_code = 5;
    assert_eq!(
        refused(&reply, &long()),
        ReplyError::UnusedExceptionFieldNotZero
    );
    let mut reply = inject(14, Some(2), None);
    reply.exception.cr2 = 0x1000;
    assert_eq!(
        refused(&reply, &long()),
        ReplyError::UnusedExceptionFieldNotZero
    );
}

#[test]
fn cr2_rules() {
    assert_eq!(
        refused(&inject(13, Some(0), Some(0x1000)), &long()),
        ReplyError::Cr2WithoutPageFault
    );
    assert_eq!(
        refused(&inject(14, Some(0), None), &long()),
        ReplyError::PageFaultWithoutCr2
    );
    assert_eq!(
        refused(&inject(14, Some(0), Some(0x8000_0000_0000)), &long()),
        ReplyError::NonCanonicalCr2
    );
    assert_eq!(
        refused(
            &inject(14, Some(0), Some(0x1_0000_0000)),
            &exit_in(GuestMode::Protected)
        ),
        ReplyError::NonCanonicalCr2
    );
}

#[test]
fn exception_fields_only_with_inject() {
    for action in [Action::Resume, Action::Retry, Action::Stop] {
        let mut reply = Reply::new(SEQUENCE, action);
        reply.exception.vector = 13;
        assert_eq!(refused(&reply, &long()), ReplyError::ExceptionWithoutInject);
    }
}

#[test]
fn every_error_has_its_own_message() {
    let all = [
        ReplyError::AbiMajorMismatch,
        ReplyError::WrongSequence,
        ReplyError::UnknownAction,
        ReplyError::ReservedFieldNotZero,
        ReplyError::UnknownChangedGroups,
        ReplyError::ChangesWithoutResume,
        ReplyError::VectorMaskWithoutVectors,
        ReplyError::VectorsWithoutMask,
        ReplyError::VectorMaskTooWide,
        ReplyError::NonCanonicalRip,
        ReplyError::RflagsReservedBits,
        ReplyError::RflagsProtectedFlagChanged,
        ReplyError::ExceptionWithoutInject,
        ReplyError::BadExceptionVector,
        ReplyError::UnknownExceptionFlags,
        ReplyError::MissingErrorCode,
        ReplyError::UnexpectedErrorCode,
        ReplyError::ErrorCodeOutOfRange,
        ReplyError::Cr2WithoutPageFault,
        ReplyError::PageFaultWithoutCr2,
        ReplyError::NonCanonicalCr2,
        ReplyError::UnusedExceptionFieldNotZero,
        ReplyError::SegmentLoad(crate::policy::segment_check::SegmentLoadError::NotPresent),
    ];
    let mut messages: std::vec::Vec<&str> = all.iter().map(|e| e.describe()).collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), all.len());
    assert_eq!(
        std::format!("{}", ReplyError::NonCanonicalRip),
        "RIP not canonical for the guest's mode"
    );
}
