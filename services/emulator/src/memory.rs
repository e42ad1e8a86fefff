//! The memory access layer: maps a segment-relative operand to at most two
//! guest-physical pieces (checking segmentation, alignment and paging before
//! anything is touched), then reads, writes (split into two partial accesses
//! across a page boundary) or compare-exchanges (one operation spanning both
//! frames) through the [`Guest`].

use crate::Guest;
use crate::fault::{Fault, vector};
use crate::machine::Machine;
use crate::paging::AccessKind;
use crate::segmentation::{SegmentAccess, linearize, segment_base};
use crate::state::{Mode, control, rflags};

const PAGE_SIZE: u64 = 4096;

/// A translated memory range of at most one page, possibly split in two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub linear: u64,
    pub len: usize,
    pub first_gpa: u64,
    pub first_len: usize,
    /// The guest-physical address of the part in the second page (meaningful
    /// when `first_len < len`).
    pub second_gpa: u64,
}

/// What a data access will do (a read-modify-write maps as a write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataAccess {
    Read,
    Write,
}

/// The alignment rule of an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alignment {
    /// #AC(0) when misaligned to this many bytes and CR0.AM, RFLAGS.AC, CPL 3.
    Checked(u64),
    /// #GP(0) when misaligned to this many bytes (MOVDQA, CMPXCHG16B, ...).
    Required(u64),
}

impl<G: Guest> Machine<'_, G> {
    /// Maps `len` bytes (1 to 4096) at `offset` in segment `segment` for a
    /// data access. Out of line (see [`Machine::map_data_inlined`]).
    #[inline(never)]
    pub(crate) fn map_data(
        &mut self,
        segment: usize,
        offset: u64,
        len: usize,
        access: DataAccess,
        alignment: Alignment,
    ) -> Result<Span, Fault> {
        self.map_data_inlined(segment, offset, len, access, alignment)
    }

    /// [`Machine::map_data`] inlined into the caller, for the explicit
    /// memory operand of every instruction: a span returned in memory and
    /// then copied with wider loads than the stores that wrote it stalls
    /// store forwarding (several percent of an emulated MOV). Not for every
    /// caller: inlined into the loop of a string instruction, it made the
    /// loop spill, and copy, its state (REP MOVSD about 30% slower).
    #[inline(always)]
    pub(crate) fn map_data_inlined(
        &mut self,
        segment: usize,
        offset: u64,
        len: usize,
        access: DataAccess,
        alignment: Alignment,
    ) -> Result<Span, Fault> {
        let linear = self.check_segment(segment, offset, len, access, alignment)?;
        self.check_alignment(linear, alignment)?;
        self.translate_data(linear, len, access)
    }

    /// A required alignment (#GP, checked on the address before the segment
    /// and canonical checks, as the CPU does), then segmentation.
    // Always inline: left to LLVM, it was called from `map_data`, which REP
    // MOVSD calls twice an iteration (42 instructions an iteration, about
    // 6% of its time).
    #[inline(always)]
    fn check_segment(
        &self,
        segment: usize,
        offset: u64,
        len: usize,
        access: DataAccess,
        alignment: Alignment,
    ) -> Result<u64, Fault> {
        let seg_access = match access {
            DataAccess::Read => SegmentAccess::Read,
            DataAccess::Write => SegmentAccess::Write,
        };
        if let Alignment::Required(bytes) = alignment {
            let unchecked = segment_base(self.exit, self.mode, segment).wrapping_add(offset);
            if !unchecked.is_multiple_of(bytes.max(1)) {
                return Err(Fault::gp0());
            }
        }
        linearize(
            self.exit, self.mode, segment, offset, len as u64, seg_access,
        )
    }

    /// #AC(0), which the CPU raises before any page fault.
    fn check_alignment(&self, linear: u64, alignment: Alignment) -> Result<(), Fault> {
        if let Alignment::Checked(bytes) = alignment
            && self.alignment_checks_enabled()
            && !linear.is_multiple_of(bytes.max(1))
        {
            return Err(Fault::with_zero_code(vector::AC));
        }
        Ok(())
    }

    /// Translates a checked data range and notes it for the guest-linear
    /// address check.
    #[inline(always)]
    fn translate_data(
        &mut self,
        linear: u64,
        len: usize,
        access: DataAccess,
    ) -> Result<Span, Fault> {
        let kind = AccessKind::data(access == DataAccess::Write, self.cpl);
        let span = self.map_linear_inlined(linear, len, kind)?;
        self.note_linear_range(linear, len as u64);
        Ok(span)
    }

    // RFLAGS.AC first: clear in nearly every guest access (CR0.AM is set
    // by Linux, CPL 3 is common), so the test stops there (9 instructions
    // a store MOV, 6 an iteration of REP MOVSD).
    fn alignment_checks_enabled(&self) -> bool {
        self.regs.rflags & rflags::AC != 0
            && self.exit.state.cr0 & control::CR0_AM != 0
            && self.cpl == 3
    }

    /// Translates `len` bytes (1 to 4096) at `linear`, both pages when the
    /// range crosses a page boundary. Out of line, for the accesses that
    /// are not data (descriptors, an instruction's second page): inlined
    /// into `run` with its translation, the fetch's walk spilled more.
    #[inline(never)]
    pub(crate) fn map_linear(
        &mut self,
        linear: u64,
        len: usize,
        kind: AccessKind,
    ) -> Result<Span, Fault> {
        self.map_linear_inlined(linear, len, kind)
    }

    /// [`Machine::map_linear`] inlined, with the translation of its first
    /// page (see [`Machine::translate_inlined`]).
    #[inline(always)]
    fn map_linear_inlined(
        &mut self,
        linear: u64,
        len: usize,
        kind: AccessKind,
    ) -> Result<Span, Fault> {
        if len == 0 || len as u64 > PAGE_SIZE {
            return Err(Fault::Unsupported("access size out of range"));
        }
        let first_gpa = self.translate_inlined(linear, kind)?;
        let room = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))) as usize;
        let first_len = room.min(len);
        let mut second_gpa = 0;
        if first_len < len {
            let mut next = linear.wrapping_add(first_len as u64);
            if self.mode != Mode::Long {
                next &= 0xffff_ffff;
            }
            second_gpa = self.translate(next, kind)?;
        }
        Ok(Span {
            linear,
            len,
            first_gpa,
            first_len,
            second_gpa,
        })
    }

    /// Reads the span into `buf` (at most `span.len` bytes are used).
    pub(crate) fn read_span(&mut self, span: &Span, buf: &mut [u8]) -> Result<(), Fault> {
        let buf = buf
            .get_mut(..span.len)
            .ok_or(Fault::Unsupported("buffer"))?;
        let (first, second) = buf.split_at_mut(span.first_len.min(span.len));
        self.guest.read_physical(span.first_gpa, first)?;
        if !second.is_empty() {
            self.guest.read_physical(span.second_gpa, second)?;
        }
        Ok(())
    }

    /// Writes `data` (exactly `span.len` bytes) as one or two partial writes.
    // Always inline: called, the span and the data went through memory and
    // the call saved six registers (33 instructions a store MOV; REP MOVSD
    // unchanged, 1 KB of code).
    #[inline(always)]
    pub(crate) fn write_span(&mut self, span: &Span, data: &[u8]) -> Result<(), Fault> {
        self.require_linear_confirmed()?;
        let data = data.get(..span.len).ok_or(Fault::Unsupported("buffer"))?;
        let (first, second) = data.split_at(span.first_len.min(span.len));
        self.guest.write_physical(span.first_gpa, first)?;
        if !second.is_empty() {
            self.guest.write_physical(span.second_gpa, second)?;
        }
        Ok(())
    }

    /// One atomic compare-exchange over the whole span (both frames when it
    /// is split). A lost compare means the instruction is re-executed.
    pub(crate) fn compare_exchange_span(
        &mut self,
        span: &Span,
        expected: &[u8],
        new: &[u8],
    ) -> Result<(), Fault> {
        self.require_linear_confirmed()?;
        let len = span.len;
        if !matches!(len, 1 | 2 | 4 | 8 | 16) {
            return Err(Fault::Unsupported("locked access of this width"));
        }
        let expected = expected.get(..len).ok_or(Fault::Unsupported("buffer"))?;
        let new = new.get(..len).ok_or(Fault::Unsupported("buffer"))?;
        let first_page = span.first_gpa & !(PAGE_SIZE - 1);
        let second_page = if span.first_len < len {
            span.second_gpa & !(PAGE_SIZE - 1)
        } else {
            first_page
        };
        let offset = (span.first_gpa & (PAGE_SIZE - 1)) as u16;
        let mut current = [0u8; 16];
        let stored = self.guest.compare_exchange(
            [first_page, second_page],
            offset,
            expected,
            new,
            &mut current[..len],
        )?;
        if stored { Ok(()) } else { Err(Fault::Retry) }
    }

    /// Reads a little-endian value of `span.len` (at most 8) bytes.
    // Within one frame, 4 and 8 bytes are read with their length known,
    // inline, so the guest's read folds to one access of that width; the
    // rest out of line. Through `read_span`, with the length not known,
    // the guest's read was called and matched on it. Always inline: called
    // from the memory operand's read, its Result came back through memory
    // (with the test guest's 4-byte fix, load MOV 37.7 -> 37.3 ns, medians;
    // 850.7 -> 842.7 instructions).
    #[inline(always)]
    pub(crate) fn read_value(&mut self, span: &Span) -> Result<u64, Fault> {
        if span.first_len >= span.len {
            match span.len {
                4 => {
                    return Ok(u64::from(u32::from_le_bytes(
                        self.read_sized(span.first_gpa)?,
                    )));
                }
                8 => return Ok(u64::from_le_bytes(self.read_sized(span.first_gpa)?)),
                _ => {}
            }
        }
        self.read_value_spanned(span)
    }

    /// `read_value` through `read_span`.
    #[inline(never)]
    fn read_value_spanned(&mut self, span: &Span) -> Result<u64, Fault> {
        let mut bytes = [0u8; 8];
        if span.len > 8 {
            return Err(Fault::Unsupported("scalar wider than 8 bytes"));
        }
        self.read_span(span, &mut bytes)?;
        // Loaded back at the width the guest stored: an 8-byte load of a
        // 4-byte store over the zeroed buffer stalls store forwarding. Each
        // width read from the buffer as one load: taken as bytes, the four
        // were loaded as two halves and joined (3 instructions a load MOV,
        // 5 an iteration of REP MOVSD).
        Ok(match span.len {
            1 => u64::from(bytes[0]),
            2 => u64::from(u16::from_le_bytes(*bytes.first_chunk().unwrap_or(&[0; 2]))),
            4 => u64::from(u32::from_le_bytes(*bytes.first_chunk().unwrap_or(&[0; 4]))),
            _ => u64::from_le_bytes(bytes),
        })
    }

    /// Reads `N` bytes at `gpa`, within one frame.
    fn read_sized<const N: usize>(&mut self, gpa: u64) -> Result<[u8; N], Fault> {
        let mut bytes = [0u8; N];
        self.guest.read_physical(gpa, &mut bytes)?;
        Ok(bytes)
    }

    /// Writes the low `span.len` (at most 8) bytes of `value`.
    // As in `read_value`, 4 and 8 bytes within one frame are written with
    // their length known. Always inline, the other lengths included (out
    // of line: a store MOV 5 instructions more, a locked XADD 6 fewer);
    // left to the compiler, it was called (a store MOV 23 more).
    #[inline(always)]
    pub(crate) fn write_value(&mut self, span: &Span, value: u64) -> Result<(), Fault> {
        if span.first_len >= span.len {
            match span.len {
                4 => return self.write_sized(span.first_gpa, (value as u32).to_le_bytes()),
                8 => return self.write_sized(span.first_gpa, value.to_le_bytes()),
                _ => {}
            }
        }
        let bytes = value.to_le_bytes();
        self.write_span(span, &bytes)
    }

    /// Writes `data` at `gpa`, within one frame.
    fn write_sized<const N: usize>(&mut self, gpa: u64, data: [u8; N]) -> Result<(), Fault> {
        self.require_linear_confirmed()?;
        self.guest.write_physical(gpa, &data)?;
        Ok(())
    }

    /// Replaces `old` with `new` (low `span.len` bytes, at most 8) atomically.
    pub(crate) fn compare_exchange_value(
        &mut self,
        span: &Span,
        old: u64,
        new: u64,
    ) -> Result<(), Fault> {
        self.compare_exchange_span(span, &old.to_le_bytes(), &new.to_le_bytes())
    }
}
