//! Every attack checked against the core's own policy code (kernel::policy):
//! each invalid reply must be refused for the reason its name gives, and each
//! malformed request that policy decides must get the expected error.

use crate::replies::{REPLY_ATTACKS, reply_attack, valid_resume, valid_segment_load};
use crate::syscalls::{Call, GRANTED_PAGE, SYSCALL_ATTACKS, VALID_CMPXCHG};
use abi::{
    ExitMessage, GuestState, PAGE_SIZE, Rights, Segment, SegmentRegister, SyscallError,
    VectorRegisters,
};
use kernel::policy::PhysRange;
use kernel::policy::capability::CapabilityTable;
use kernel::policy::cmdline::Config;
use kernel::policy::cmpxchg_check::check_cmpxchg;
use kernel::policy::reply_check::{ReplyError, ValidatedReply, validate_reply};
use kernel::policy::user_range::{UserAccess, UserRegion, check_user_range};
use std::vec::Vec;

/// The reason each reply attack must be refused, in attack order.
const EXPECTED_REPLY_ERRORS: [ReplyError; REPLY_ATTACKS] = {
    use ReplyError::*;
    use kernel::policy::segment_check::SegmentLoadError as Rule;
    [
        NonCanonicalRip,
        NonCanonicalRip,
        RflagsReservedBits,
        RflagsReservedBits,
        RflagsReservedBits,
        RflagsReservedBits,
        RflagsReservedBits,
        RflagsReservedBits,
        RflagsProtectedFlagChanged,
        RflagsProtectedFlagChanged,
        RflagsProtectedFlagChanged,
        RflagsProtectedFlagChanged,
        RflagsProtectedFlagChanged,
        RflagsProtectedFlagChanged,
        UnknownAction,
        UnknownAction,
        UnknownAction,
        BadExceptionVector,
        BadExceptionVector,
        BadExceptionVector,
        BadExceptionVector,
        BadExceptionVector,
        BadExceptionVector,
        BadExceptionVector,
        MissingErrorCode,
        ErrorCodeOutOfRange,
        UnexpectedErrorCode,
        ErrorCodeOutOfRange,
        PageFaultWithoutCr2,
        Cr2WithoutPageFault,
        NonCanonicalCr2,
        UnknownExceptionFlags,
        UnusedExceptionFieldNotZero,
        ReservedFieldNotZero,
        ReservedFieldNotZero,
        ReservedFieldNotZero,
        AbiMajorMismatch,
        WrongSequence,
        WrongSequence,
        UnknownChangedGroups,
        UnknownChangedGroups,
        VectorMaskWithoutVectors,
        VectorMaskTooWide,
        ChangesWithoutResume,
        ExceptionWithoutInject,
        SegmentLoad(Rule::CodeSegmentRegister),
        SegmentLoad(Rule::UnknownRegister),
        SegmentLoad(Rule::UnknownFlags),
        SegmentLoad(Rule::BlockingWithoutSs),
        SegmentLoad(Rule::AccessRightsReservedBits),
        SegmentLoad(Rule::AccessRightsReservedBits),
        SegmentLoad(Rule::NotAccessed),
        SegmentLoad(Rule::CodeNotReadable),
        SegmentLoad(Rule::SystemSegment),
        SegmentLoad(Rule::NotPresent),
        SegmentLoad(Rule::GranularityMismatch),
        SegmentLoad(Rule::GranularityMismatch),
        SegmentLoad(Rule::StackNotWritableData),
        SegmentLoad(Rule::StackDplNotCpl),
        SegmentLoad(Rule::StackRplNotCpl),
        SegmentLoad(Rule::NonCanonicalBase),
        SegmentLoad(Rule::NonCanonicalBase),
        SegmentLoad(Rule::BaseAbove4GiB),
        SegmentLoad(Rule::WithoutNewRip),
        ChangesWithoutResume,
        ReservedFieldNotZero,
    ]
};

/// An EPT-violation exit like the demo guest's first: 32-bit protected mode,
/// flat segments, or (`long`) 64-bit mode.
fn exit(long: bool) -> ExitMessage {
    let mut state = GuestState {
        rip: 0x20_1234,
        rflags: 0x2,
        cr0: 0x11,
        ..GuestState::default()
    };
    state.gprs[0] = 0xfee0_0000;
    if long {
        state.efer = 0x500;
        state.cr0 = 0x8000_0011;
        state.rip = 0xffff_8000_0020_1234;
        state.segments[Segment::Cs as usize].access_rights = SegmentRegister::AR_L;
    }
    ExitMessage {
        abi_major: 1,
        abi_minor: 0,
        vcpu: 0,
        sequence: 1,
        reason: 48,
        valid: 0xf,
        qualification: 1,
        guest_physical: 0xfee0_0020,
        guest_linear: 0xfee0_0020,
        state,
        vectors: VectorRegisters::default(),
        ldtr: SegmentRegister::default(),
    }
}

#[test]
fn the_base_reply_is_valid() {
    for long in [false, true] {
        let exit = exit(long);
        assert!(matches!(
            validate_reply(&valid_resume(&exit), &exit),
            Ok(ValidatedReply::Resume(_))
        ));
        assert!(matches!(
            validate_reply(&valid_segment_load(&exit), &exit),
            Ok(ValidatedReply::Resume(update)) if update.segment.is_some()
        ));
    }
}

#[test]
fn every_reply_attack_is_refused_for_its_reason() {
    for long in [false, true] {
        let exit = exit(long);
        let mut names = Vec::new();
        for (index, expected) in EXPECTED_REPLY_ERRORS.iter().enumerate() {
            let attack = reply_attack(&exit, index).unwrap();
            assert_eq!(
                validate_reply(&attack.reply, &exit),
                Err(*expected),
                "{} (long mode: {long})",
                attack.name
            );
            names.push(attack.name);
        }
        assert!(reply_attack(&exit, REPLY_ATTACKS).is_none());
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REPLY_ATTACKS, "attack names are unique");
    }
}

/// The memory map the boot tool gives Bochs: 640 KiB low, 1 MiB..256 MiB.
fn capabilities() -> CapabilityTable {
    let config =
        Config::parse("cordon.trap=lapic,vga cordon.cap=guest-ram:rwc,lapic:rwc,vga:rwc").unwrap();
    let ram = [
        PhysRange::new(0, 0x9_fc00).unwrap(),
        PhysRange::new(0x10_0000, 0x1000_0000).unwrap(),
    ];
    CapabilityTable::new(
        &config,
        &ram,
        PhysRange::new(0x10_0000, 0x200_0000).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_granted_page_and_the_valid_request_are_really_valid() {
    let table = capabilities();
    assert_eq!(table.check_page(GRANTED_PAGE, Rights::ALL), Ok(()));
    let checked = check_cmpxchg(&VALID_CMPXCHG).unwrap();
    for (start, len) in checked.touched().into_iter().flatten() {
        assert_eq!(table.check(start, len, Rights::CMPXCHG), Ok(()));
    }
}

#[test]
fn map_attacks_on_ungranted_memory_have_no_capability() {
    let table = capabilities();
    let mut checked = 0;
    for attack in SYSCALL_ATTACKS {
        let Call::Raw {
            number: 1,
            args: [gpa, rights, _, ..],
        } = attack.call
        else {
            continue;
        };
        if attack.expected == SyscallError::NoCapability {
            assert_eq!(
                table.check_page(gpa, rights),
                Err(SyscallError::NoCapability),
                "{}",
                attack.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
}

#[test]
fn cmpxchg_request_attacks_are_refused() {
    let table = capabilities();
    let mut checked = 0;
    for attack in SYSCALL_ATTACKS {
        let Call::Cmpxchg(request) = attack.call else {
            continue;
        };
        let verdict = check_cmpxchg(&request)
            .map_err(|error| error.syscall_error())
            .and_then(|ok| {
                ok.touched()
                    .into_iter()
                    .flatten()
                    .try_for_each(|(start, _)| {
                        table.check(start & !(PAGE_SIZE - 1), PAGE_SIZE, Rights::CMPXCHG)
                    })
            });
        assert_eq!(verdict, Err(attack.expected), "{}", attack.name);
        checked += 1;
    }
    assert_eq!(checked, 14);
}

#[test]
fn pointer_attacks_leave_the_service_memory() {
    // The service image and a stack, as the core maps them.
    let regions = [
        UserRegion {
            start: 0x4000_0000,
            end: 0x4003_1000,
            writable: false,
        },
        UserRegion {
            start: 0x4003_1000,
            end: 0x4004_b000,
            writable: false,
        },
        UserRegion {
            start: 0x4004_b000,
            end: 0x4014_c000,
            writable: true,
        },
        UserRegion {
            start: 0x5fff_0000,
            end: 0x6000_0000,
            writable: true,
        },
    ];
    let mut checked = 0;
    for attack in SYSCALL_ATTACKS
        .iter()
        .filter(|a| a.expected == SyscallError::BadUserPointer)
    {
        let (address, len, access) = match attack.call {
            Call::Raw { number: 3, args } => (args[0], 72, UserAccess::Write),
            Call::Raw { number: 4, args } => (args[0], args[1], UserAccess::Read),
            Call::CmpxchgInReadOnlyMemory => (0x4003_2000, 72, UserAccess::Write),
            _ => continue,
        };
        assert_eq!(
            check_user_range(&regions, address, len, access),
            Err(SyscallError::BadUserPointer),
            "{}",
            attack.name
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}
