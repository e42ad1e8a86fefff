//! Segmentation: turns a segment-relative offset into a linear address with
//! the checks the CPU makes in each mode (unusable segments, type and rights,
//! limits with expand-down, #SS for the stack segment, canonical addresses in
//! 64-bit mode).

use crate::fault::{Fault, vector};
use crate::state::{Mode, control};
use abi::{ExitMessage, Segment, SegmentRegister};

/// What the access does with the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentAccess {
    Read,
    Write,
    Execute,
}

/// The fault for a bad access through segment `segment`: #SS(0) for the stack
/// segment, #GP(0) otherwise.
// Cold: built inline on the checks' path it cost REP MOVSD 4 instructions
// an iteration.
#[cold]
fn segment_fault(segment: usize) -> Fault {
    if segment == Segment::Ss as usize {
        Fault::with_zero_code(vector::SS)
    } else {
        Fault::gp0()
    }
}

/// Whether `linear` is canonical for the paging mode (48 or 57 bits).
#[inline]
pub(crate) fn is_canonical(exit: &ExitMessage, linear: u64) -> bool {
    let half = canonical_half(exit);
    linear.wrapping_add(half) < 2 * half
}

/// 2^47, or 2^56 with LA57: an address is canonical (its bits from 47, or
/// 56, up all equal) exactly when adding this leaves it below twice as much.
// Added and compared, not shifted left and back: the shift count is a
// variable (two instructions more an address), and the sums of two
// addresses are checked at once (see `linearize`).
fn canonical_half(exit: &ExitMessage) -> u64 {
    if exit.state.cr4 & control::CR4_LA57 != 0 {
        1 << 56
    } else {
        1 << 47
    }
}

/// The base the mode gives segment `segment` (in 64-bit mode only FS and GS
/// have one).
pub(crate) fn segment_base(exit: &ExitMessage, mode: Mode, segment: usize) -> u64 {
    let Some(reg) = exit.state.segments.get(segment) else {
        return 0;
    };
    let has_base =
        mode != Mode::Long || segment == Segment::Fs as usize || segment == Segment::Gs as usize;
    if has_base { reg.base } else { 0 }
}

/// The linear address of `len` (at least 1) bytes at `offset` in segment
/// `segment` (an index in x86 encoding order), after every check the mode
/// requires. `offset` is already truncated to the address size.
// Inline for 64-bit mode, the commonest and the shortest; the other modes
// are out of line. A call through the GOT, with the address returned in
// memory, cost about 20 instructions a MOV.
#[inline]
pub(crate) fn linearize(
    exit: &ExitMessage,
    mode: Mode,
    segment: usize,
    offset: u64,
    len: u64,
    access: SegmentAccess,
) -> Result<u64, Fault> {
    let Some(reg) = exit.state.segments.get(segment) else {
        return Err(Fault::Unsupported("segment register index out of range"));
    };
    let last = offset.wrapping_add(len.saturating_sub(1));
    if mode != Mode::Long {
        return linearize_legacy(reg, mode, segment, offset, last, access);
    }
    let base = if segment == Segment::Fs as usize || segment == Segment::Gs as usize {
        reg.base
    } else {
        0
    };
    let linear = base.wrapping_add(offset);
    let end = base.wrapping_add(last);
    // Both ends canonical: both sums are below a power of two exactly when
    // their OR is.
    let half = canonical_half(exit);
    if (linear.wrapping_add(half) | end.wrapping_add(half)) >= 2 * half {
        return Err(segment_fault(segment));
    }
    Ok(linear)
}

/// [`linearize`] outside 64-bit mode, `last` being the offset of the last
/// byte.
#[inline(never)]
fn linearize_legacy(
    reg: &SegmentRegister,
    mode: Mode,
    segment: usize,
    offset: u64,
    last: u64,
    access: SegmentAccess,
) -> Result<u64, Fault> {
    if matches!(mode, Mode::Real | Mode::Virtual8086) {
        if last < offset || last > u64::from(reg.limit) {
            return Err(segment_fault(segment));
        }
    } else {
        check_type(reg, segment, access)?;
        check_limit(reg, segment, offset, last)?;
    }
    Ok(reg.base.wrapping_add(offset) & 0xffff_ffff)
}

/// Null/unusable segments and the descriptor type against the access.
fn check_type(reg: &SegmentRegister, segment: usize, access: SegmentAccess) -> Result<(), Fault> {
    let kind = reg.access_rights & SegmentRegister::AR_TYPE_MASK;
    let is_code = kind & 0b1000 != 0;
    let usable = !reg.unusable()
        && reg.access_rights & SegmentRegister::AR_S != 0
        && reg.access_rights & SegmentRegister::AR_P != 0;
    let allowed = usable
        && match access {
            SegmentAccess::Read => !is_code || kind & 0b0010 != 0,
            SegmentAccess::Write => !is_code && kind & 0b0010 != 0,
            SegmentAccess::Execute => is_code,
        };
    if allowed {
        Ok(())
    } else {
        Err(segment_fault(segment))
    }
}

/// The limit check, with expand-down data segments bounded by D/B.
fn check_limit(reg: &SegmentRegister, segment: usize, offset: u64, last: u64) -> Result<(), Fault> {
    let kind = reg.access_rights & SegmentRegister::AR_TYPE_MASK;
    let expand_down = kind & 0b1100 == 0b0100;
    let limit = u64::from(reg.limit);
    let within = if expand_down {
        let upper = if reg.access_rights & SegmentRegister::AR_DB != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        offset > limit && last >= offset && last <= upper
    } else {
        last >= offset && last <= limit
    };
    if within {
        Ok(())
    } else {
        Err(segment_fault(segment))
    }
}
