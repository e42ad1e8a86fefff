//! Instruction fetch and decode: reads up to 15 bytes at CS:RIP through
//! segmentation and the guest page walk (the second page only when the
//! instruction needs it) and decodes them with iced-x86 in the guest's mode.

use crate::Guest;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::paging::AccessKind;
use crate::segmentation::{SegmentAccess, is_canonical, linearize};
use crate::state::Mode;
use abi::Segment;
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

/// The longest x86 instruction.
pub(crate) const MAX_INSTRUCTION_LEN: usize = 15;

/// Why fetch and decode stopped.
pub(crate) enum FetchError {
    Fault(Fault),
    /// The bytes do not decode (or are too long): how many were read.
    Undecodable(usize),
}

impl From<Fault> for FetchError {
    fn from(fault: Fault) -> FetchError {
        FetchError::Fault(fault)
    }
}

impl<G: Guest> Machine<'_, G> {
    /// Fetches the instruction at CS:RIP into `bytes` and decodes it into
    /// `instruction`; returns how many bytes were read from the guest. Both
    /// are the caller's, written once and used where they are: moved just
    /// after the narrow stores that wrote them, they stalled the loads of
    /// the move (store forwarding), which cost more than a tenth of an
    /// emulated MOV.
    pub(crate) fn fetch_and_decode(
        &mut self,
        bytes: &mut [u8; MAX_INSTRUCTION_LEN],
        instruction: &mut Instruction,
    ) -> Result<usize, FetchError> {
        let cs = self.exit.state.segments[Segment::Cs as usize];
        // In 64-bit mode CS has no base and no limit: RIP is the linear
        // address, once it is canonical. (The code size told with the
        // mode: from `Mode::bitness` before it, 7 instructions more a
        // store MOV.)
        let (bitness, ip, linear, available) = if self.mode == Mode::Long {
            if !is_canonical(self.exit, self.regs.rip) {
                return Err(Fault::gp0().into());
            }
            (64, self.regs.rip, self.regs.rip, MAX_INSTRUCTION_LEN)
        } else {
            let ip = self.regs.rip & 0xffff_ffff;
            let limit = u64::from(cs.limit);
            if ip > limit {
                return Err(Fault::gp0().into());
            }
            let room = (limit - ip + 1).min(MAX_INSTRUCTION_LEN as u64) as usize;
            let linear = linearize(
                self.exit,
                self.mode,
                Segment::Cs as usize,
                ip,
                1,
                SegmentAccess::Execute,
            )?;
            (self.mode.bitness(self.exit), ip, linear, room)
        };
        let kind = AccessKind::fetch(self.cpl);
        let first_room = (4096 - (linear & 0xfff)) as usize;
        let mut fetched = first_room.min(available);
        // The first page by a walk of its own (see `Machine::walk`); the
        // rest, in the next page, is rare and goes the common way.
        let gpa = self.walk(linear, kind)?;
        // The whole buffer (the common case: 15 bytes left in the page and
        // the segment) passed with its length known: the guest's read is
        // inlined and folds to the covering words' loads and shifts (called
        // with the length not known, 16 instructions more a store MOV, 12
        // a load).
        if fetched == MAX_INSTRUCTION_LEN {
            self.guest.read_physical(gpa, bytes).map_err(Fault::from)?;
        } else {
            let first = bytes
                .get_mut(..fetched)
                .ok_or(Fault::Unsupported("fetch buffer"))?;
            self.guest.read_physical(gpa, first).map_err(Fault::from)?;
        }
        loop {
            let data = bytes.get(..fetched).unwrap_or(&[]);
            // Used where it was made: moving the decoder (nearly 400 bytes)
            // out of the `Result` is a memcpy that costs as much as the
            // decoding of a short instruction. It fails only for a
            // bitness other than 16, 32 or 64. Dropped before the result is
            // looked at: dropped on the way out of the loop, the test of its
            // variant (an error owns a string) sat between the decoding and
            // the branches on its result, which then merged into one value
            // that `run` matched again (8 instructions an emulated MOV).
            let more_possible = {
                let mut made = Decoder::try_with_ip(bitness, data, ip, DecoderOptions::NONE);
                let decoder = made.as_mut().map_err(|_| Fault::Unsupported("code size"))?;
                decoder.decode_out(instruction);
                decoder.last_error() == DecoderError::NoMoreBytes
            };
            if !instruction.is_invalid() {
                self.note_linear_range(linear, instruction.len() as u64);
                return Ok(fetched);
            }
            if !more_possible {
                return Err(FetchError::Undecodable(fetched));
            }
            if fetched >= available {
                // The instruction runs past the CS limit (or is too long).
                if available < MAX_INSTRUCTION_LEN {
                    return Err(Fault::gp0().into());
                }
                return Err(FetchError::Undecodable(fetched));
            }
            // Fetch the rest from the next page.
            let mut next = linear.wrapping_add(fetched as u64);
            if self.mode != Mode::Long {
                next &= 0xffff_ffff;
            } else if !is_canonical(self.exit, next) {
                return Err(Fault::gp0().into());
            }
            let rest = available - fetched;
            let span = self.map_linear(next, rest, kind)?;
            let tail = bytes
                .get_mut(fetched..available)
                .ok_or(Fault::Unsupported("fetch buffer"))?;
            self.read_span(&span, tail)?;
            fetched = available;
        }
    }
}
