//! Validation of a service's [`Reply`] against the exit it answers. Every field
//! is checked before the core applies anything: a reply that VM entry would
//! reject, or that changes more than an emulated instruction can, is the
//! service's bug and is refused with a specific [`ReplyError`].

use super::segment_check::{
    SegmentLoadError, SegmentLoadRefusal, SegmentUpdate, check_segment_load,
};
use abi::{
    AbiVersion, Action, ChangedGroups, ExceptionReply, ExitMessage, GuestState, Reply, Segment,
    SegmentLoad, SegmentRegister, VectorRegisters,
};
use core::fmt;

/// The guest's execution mode at the exit, as far as reply checks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// CR0.PE clear (real mode under unrestricted guest).
    Real,
    /// Protected mode (16- or 32-bit code, or virtual-8086), no long mode.
    Protected,
    /// Long mode with a 32- or 16-bit code segment.
    Compatibility,
    /// Long mode with a 64-bit code segment; `la57` if CR4.LA57 is set.
    Long { la57: bool },
}

const CR0_PE: u64 = 1 << 0;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

impl GuestMode {
    /// The mode of the state the core captured (its own copy, not the
    /// message page a service can write).
    pub fn of(state: &GuestState) -> GuestMode {
        let cs = state.segment(Segment::Cs);
        if state.cr0 & CR0_PE == 0 {
            GuestMode::Real
        } else if state.efer & EFER_LMA == 0 {
            GuestMode::Protected
        } else if cs.access_rights & SegmentRegister::AR_L == 0 {
            GuestMode::Compatibility
        } else {
            GuestMode::Long {
                la57: state.cr4 & CR4_LA57 != 0,
            }
        }
    }

    /// Whether `address` is a valid RIP (or linear address) in this mode:
    /// canonical (48 or 57 bits) in 64-bit mode, below 2^32 otherwise.
    pub const fn address_is_valid(self, address: u64) -> bool {
        match self {
            GuestMode::Long { la57 } => {
                let bits = if la57 { 57 } else { 48 };
                let shift = 64 - bits;
                (((address << shift) as i64) >> shift) as u64 == address
            }
            GuestMode::Real | GuestMode::Protected | GuestMode::Compatibility => address >> 32 == 0,
        }
    }
}

/// RFLAGS bits a reply may change: the status flags CF PF AF ZF SF OF.
pub const RFLAGS_STATUS: u64 = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 11);
/// RFLAGS bit 1, always set.
pub const RFLAGS_FIXED_ONE: u64 = 1 << 1;
/// RFLAGS bits that must be clear: 3, 5, 15 and 22-63.
pub const RFLAGS_RESERVED: u64 = (1 << 3) | (1 << 5) | (1 << 15) | !((1 << 22) - 1);

/// Why a reply was refused. [`ReplyError::describe`] is what the core prints;
/// the texts are stable (tests grep them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    AbiMajorMismatch,
    WrongSequence,
    UnknownAction,
    ReservedFieldNotZero,
    UnknownChangedGroups,
    ChangesWithoutResume,
    VectorMaskWithoutVectors,
    VectorsWithoutMask,
    VectorMaskTooWide,
    NonCanonicalRip,
    RflagsReservedBits,
    RflagsProtectedFlagChanged,
    ExceptionWithoutInject,
    BadExceptionVector,
    UnknownExceptionFlags,
    MissingErrorCode,
    UnexpectedErrorCode,
    ErrorCodeOutOfRange,
    Cr2WithoutPageFault,
    PageFaultWithoutCr2,
    NonCanonicalCr2,
    UnusedExceptionFieldNotZero,
    /// The segment load (ABI 1.3) broke one of its rules.
    SegmentLoad(SegmentLoadError),
}

impl ReplyError {
    pub const fn describe(self) -> &'static str {
        match self {
            ReplyError::AbiMajorMismatch => "reply ABI major version differs from the core's",
            ReplyError::WrongSequence => "reply sequence does not match the pending exit",
            ReplyError::UnknownAction => "unknown reply action",
            ReplyError::ReservedFieldNotZero => "reply reserved field not zero",
            ReplyError::UnknownChangedGroups => "changed-groups mask has unknown bits",
            ReplyError::ChangesWithoutResume => {
                "changed groups or vector mask on a reply that does not resume"
            }
            ReplyError::VectorMaskWithoutVectors => "vector mask set without the VECTORS group",
            ReplyError::VectorsWithoutMask => "VECTORS group with an empty vector mask",
            ReplyError::VectorMaskTooWide => "vector mask names registers above YMM15",
            ReplyError::NonCanonicalRip => "RIP not canonical for the guest's mode",
            ReplyError::RflagsReservedBits => "RFLAGS reserved bit set or bit 1 clear",
            ReplyError::RflagsProtectedFlagChanged => "RFLAGS change outside the status flags",
            ReplyError::ExceptionWithoutInject => {
                "exception fields set on a reply that does not inject"
            }
            ReplyError::BadExceptionVector => "exception vector not injectable",
            ReplyError::UnknownExceptionFlags => "exception flags have unknown bits",
            ReplyError::MissingErrorCode => "exception needs an error code",
            ReplyError::UnexpectedErrorCode => "exception takes no error code in this mode",
            ReplyError::ErrorCodeOutOfRange => "exception error code out of range",
            ReplyError::Cr2WithoutPageFault => "CR2 set for an exception other than #PF",
            ReplyError::PageFaultWithoutCr2 => "#PF without CR2",
            ReplyError::NonCanonicalCr2 => "CR2 not canonical for the guest's mode",
            ReplyError::UnusedExceptionFieldNotZero => {
                "exception error code or CR2 set without its flag"
            }
            ReplyError::SegmentLoad(error) => error.describe(),
        }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What to write back into the guest for a validated `Resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestUpdate<'a> {
    pub gprs: Option<[u64; 16]>,
    pub rip: Option<u64>,
    pub rflags: Option<u64>,
    /// Bit n set: YMMn takes `vectors.ymm[n]`.
    pub vector_mask: u16,
    pub vectors: &'a VectorRegisters,
    /// A segment register the instruction loaded.
    pub segment: Option<SegmentUpdate>,
}

/// An exception the reply asks the core to inject, already checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionInjection {
    pub vector: u8,
    pub error_code: Option<u32>,
    pub cr2: Option<u64>,
}

/// A reply that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidatedReply<'a> {
    Resume(GuestUpdate<'a>),
    InjectException(ExceptionInjection),
    Retry,
    Stop,
}

/// Validates `reply` as the answer to `exit`. `exit` must be the core's own
/// copy of the message it sent (the message page is writable by the service).
pub fn validate_reply<'a>(
    reply: &'a Reply,
    exit: &ExitMessage,
) -> Result<ValidatedReply<'a>, ReplyError> {
    if reply.abi_major != AbiVersion::CURRENT.major {
        return Err(ReplyError::AbiMajorMismatch);
    }
    if reply.sequence != exit.sequence {
        return Err(ReplyError::WrongSequence);
    }
    let action = Action::from_raw(reply.action).ok_or(ReplyError::UnknownAction)?;
    if reply.exception.reserved != 0 {
        return Err(ReplyError::ReservedFieldNotZero);
    }
    // Without its group, the segment load's bytes stay zero, as they did
    // while they were reserved (before ABI 1.3).
    if reply.changed & ChangedGroups::SEGMENT == 0 && reply.segment != SegmentLoad::default() {
        return Err(ReplyError::ReservedFieldNotZero);
    }
    if reply.changed & !ChangedGroups::ALL != 0 {
        return Err(ReplyError::UnknownChangedGroups);
    }
    if action != Action::Resume && (reply.changed != 0 || reply.vector_mask != 0) {
        return Err(ReplyError::ChangesWithoutResume);
    }
    if action != Action::InjectException && reply.exception != ExceptionReply::default() {
        return Err(ReplyError::ExceptionWithoutInject);
    }
    let mode = GuestMode::of(&exit.state);
    match action {
        Action::Resume => check_resume(reply, &exit.state, mode).map(ValidatedReply::Resume),
        Action::InjectException => {
            check_exception(&reply.exception, mode).map(ValidatedReply::InjectException)
        }
        Action::Retry => Ok(ValidatedReply::Retry),
        Action::Stop => Ok(ValidatedReply::Stop),
    }
}

fn check_resume<'a>(
    reply: &'a Reply,
    state: &GuestState,
    mode: GuestMode,
) -> Result<GuestUpdate<'a>, ReplyError> {
    let changed = |group| reply.changed & group != 0;
    let vectors_changed = changed(ChangedGroups::VECTORS);
    if !vectors_changed && reply.vector_mask != 0 {
        return Err(ReplyError::VectorMaskWithoutVectors);
    }
    if vectors_changed && reply.vector_mask == 0 {
        return Err(ReplyError::VectorsWithoutMask);
    }
    let vector_mask =
        u16::try_from(reply.vector_mask).map_err(|_| ReplyError::VectorMaskTooWide)?;
    if changed(ChangedGroups::RIP) && !mode.address_is_valid(reply.rip) {
        return Err(ReplyError::NonCanonicalRip);
    }
    if changed(ChangedGroups::RFLAGS) {
        check_rflags(reply.rflags, state.rflags)?;
    }
    let new_rip = changed(ChangedGroups::RIP).then_some(reply.rip);
    let segment = if changed(ChangedGroups::SEGMENT) {
        let update =
            check_segment_load(&reply.segment, state, mode, new_rip).map_err(|refusal| {
                match refusal {
                    SegmentLoadRefusal::ReservedFieldNotZero => ReplyError::ReservedFieldNotZero,
                    SegmentLoadRefusal::Rule(error) => ReplyError::SegmentLoad(error),
                }
            })?;
        Some(update)
    } else {
        None
    };
    Ok(GuestUpdate {
        gprs: changed(ChangedGroups::GPRS).then_some(reply.gprs),
        rip: new_rip,
        rflags: changed(ChangedGroups::RFLAGS).then_some(reply.rflags),
        vector_mask,
        vectors: &reply.vectors,
        segment,
    })
}

fn check_rflags(new: u64, old: u64) -> Result<(), ReplyError> {
    if new & RFLAGS_RESERVED != 0 || new & RFLAGS_FIXED_ONE == 0 {
        return Err(ReplyError::RflagsReservedBits);
    }
    if (new ^ old) & !RFLAGS_STATUS != 0 {
        return Err(ReplyError::RflagsProtectedFlagChanged);
    }
    Ok(())
}

/// Vectors a service may inject: the faults an instruction can raise. Not NMI
/// (2), #MC (18), the reserved 9, 15 and 22-31, nor anything above 31.
const INJECTABLE_VECTORS: u32 = {
    let mut set = 0u32;
    let vectors = [
        0u32, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21,
    ];
    let mut i = 0;
    while i < vectors.len() {
        set |= 1 << vectors[i];
        i += 1;
    }
    set
};
/// Vectors that push an error code in protected and long mode.
const ERROR_CODE_VECTORS: u32 = (1 << 8) | (0x1f << 10) | (1 << 17) | (1 << 21);
/// Vectors whose error code is architecturally always 0 (#DF, #AC).
const ZERO_ERROR_CODE_VECTORS: u32 = (1 << 8) | (1 << 17);
const PAGE_FAULT: u8 = 14;

fn check_exception(
    exception: &ExceptionReply,
    mode: GuestMode,
) -> Result<ExceptionInjection, ReplyError> {
    let vector = exception.vector;
    if vector > 31 || INJECTABLE_VECTORS & (1 << vector) == 0 {
        return Err(ReplyError::BadExceptionVector);
    }
    let known_flags = ExceptionReply::HAS_ERROR_CODE | ExceptionReply::SETS_CR2;
    if exception.flags & !known_flags != 0 {
        return Err(ReplyError::UnknownExceptionFlags);
    }
    let has_error_code = exception.flags & ExceptionReply::HAS_ERROR_CODE != 0;
    let sets_cr2 = exception.flags & ExceptionReply::SETS_CR2 != 0;
    if (!has_error_code && exception.error_code != 0) || (!sets_cr2 && exception.cr2 != 0) {
        return Err(ReplyError::UnusedExceptionFieldNotZero);
    }
    // Real mode delivers no error codes (and VM entry refuses one there).
    let pushes_error_code = mode != GuestMode::Real && ERROR_CODE_VECTORS & (1 << vector) != 0;
    match (pushes_error_code, has_error_code) {
        (true, false) => return Err(ReplyError::MissingErrorCode),
        (false, true) => return Err(ReplyError::UnexpectedErrorCode),
        _ => {}
    }
    // VM entry requires bits 31:16 clear; #DF and #AC always push 0.
    let zero_only = ZERO_ERROR_CODE_VECTORS & (1 << vector) != 0;
    if exception.error_code >> 16 != 0 || (zero_only && exception.error_code != 0) {
        return Err(ReplyError::ErrorCodeOutOfRange);
    }
    match (vector == PAGE_FAULT, sets_cr2) {
        (false, true) => return Err(ReplyError::Cr2WithoutPageFault),
        (true, false) => return Err(ReplyError::PageFaultWithoutCr2),
        _ => {}
    }
    if sets_cr2 && !mode.address_is_valid(exception.cr2) {
        return Err(ReplyError::NonCanonicalCr2);
    }
    Ok(ExceptionInjection {
        vector,
        error_code: has_error_code.then_some(exception.error_code),
        cr2: sets_cr2.then_some(exception.cr2),
    })
}

#[cfg(test)]
mod tests;
