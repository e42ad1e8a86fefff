//! The Cordon x86 instruction emulator: decodes the instruction at the guest's
//! RIP, checks segmentation and paging as the CPU would, and performs the access
//! through the [`Guest`] trait, its only door to the world.
//!
//! Layout: `fetch` (CS:RIP through segmentation and paging, iced-x86 decode),
//! `segmentation`, `descriptor` (segment-register loads), `paging` (the four
//! walk formats, A/D bits; `paging::memo`, walks remembered between
//! instructions), `memory` (split and locked accesses), `operand` (effective
//! addresses), `alu` (flags), `ops` (one module per instruction family),
//! `state` (the private register file), `machine` (the per-call context and
//! the guest-linear check).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod alu;
mod descriptor;
mod fault;
mod fetch;
mod machine;
mod memory;
mod operand;
mod ops;
mod paging;
mod segmentation;
mod state;

#[cfg(test)]
mod tests;

use abi::ExitMessage;
use fault::Fault;
use fetch::{FetchError, MAX_INSTRUCTION_LEN};
use machine::Machine;
use ops::Progress;
use paging::{PhysicalMasks, WalkMemo};
use state::{Mode, Registers, rflags};

pub use iced_x86::Code;
use iced_x86::Instruction;

/// Why a guest-physical access through [`Guest`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The page is outside what this emulator may touch.
    NoAccess,
    /// The backing failed (for example, the mapping call returned an error).
    Failed,
}

/// The emulator's only door to the world: guest-physical memory and the
/// guest's vector registers.
pub trait Guest {
    /// Reads `buf.len()` bytes at `gpa`; the range lies within one 4 KiB page.
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Writes `data` at `gpa`; the range lies within one 4 KiB page.
    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;
    /// Atomically compares the `expected.len()` (1, 2, 4, 8 or 16) bytes that
    /// start at `offset` in page `pages[0]` (continuing at the start of
    /// `pages[1]` when they run past the end of the first page; `pages[1]` is
    /// meaningless otherwise) with
    /// `expected`; if equal, stores `new`. Returns whether it stored, and
    /// fills `current` with the bytes found.
    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError>;
}

/// The guest state after an instruction (or part of a REP instruction) retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    /// All 16 GPRs as they are after the instruction.
    pub gprs: [u64; 16],
    /// The new RIP; equal to the old one when a REP instruction is only partly done.
    pub rip: u64,
    pub rflags: u64,
    /// Bit n set: YMMn changed and its new value is `vector`. At most one
    /// bit is set: an instruction writes at most one vector register.
    pub vector_mask: u16,
    /// The new value of the YMM register `vector_mask` names (zero when no
    /// vector register changed). Only the changed register is carried: a
    /// copy of all sixteen on every retired instruction would cost more than
    /// the rest of a simple MOV.
    pub vector: [u8; 32],
    /// The segment register the instruction loaded (MOV Sreg, POP Sreg,
    /// LDS/LES/LFS/LGS/LSS), if any.
    pub segment: Option<abi::SegmentLoad>,
}

impl Retired {
    /// The vector register the instruction changed: its index and new value.
    pub fn changed_vector(&self) -> Option<(usize, &[u8; 32])> {
        if self.vector_mask == 0 {
            return None;
        }
        Some((self.vector_mask.trailing_zeros() as usize, &self.vector))
    }
}

/// An exception for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// The faulting linear address for #PF.
    pub cr2: Option<u64>,
}

/// What emulating one instruction came to.
// `Retired` carries the vector registers inline: boxing it would allocate on
// every emulated instruction.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction retired (or a REP instruction made progress).
    Retired(Retired),
    /// The guest must take this exception; nothing else changed.
    Exception(Exception),
    /// Nothing changed; the guest re-executes the instruction (a
    /// compare-exchange lost a race, or the guest changed its page tables or
    /// code under us).
    Retry,
    /// The instruction is not one the emulator handles; nothing changed.
    Unsupported(Unsupported),
    /// Guest memory the emulator needed could not be reached.
    MemoryError(MemoryError),
}

/// An instruction the emulator does not handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The instruction bytes that were fetched (up to 15).
    pub bytes: [u8; 15],
    pub length: u8,
    /// Why the instruction is not handled.
    pub what: &'static str,
    /// iced-x86's instruction form (its `Debug` output is the form's name),
    /// when the bytes decoded.
    pub code: Option<Code>,
}

/// Tunables of one emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// At most this many iterations of a REP string instruction per call;
    /// the rest is left to a re-execution (`Retired` with RIP unchanged).
    pub max_rep_iterations: u32,
    /// MAXPHYADDR of the guest CPU: physical-address bits above it are
    /// reserved in paging-structure entries.
    pub physical_address_bits: u8,
    /// How often a page walk is repeated when setting an accessed or dirty
    /// bit loses a race before the whole instruction is retried.
    pub page_walk_attempts: u32,
}

impl EmulatorConfig {
    /// The defaults [`emulate`] uses.
    pub const DEFAULT: EmulatorConfig = EmulatorConfig {
        max_rep_iterations: 1024,
        physical_address_bits: 52,
        page_walk_attempts: 4,
    };
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig::DEFAULT
    }
}

/// An emulator for one stream of exits (one vCPU's): it remembers the
/// upper page-walk entries of recent instructions between calls, so that a
/// walk re-reads them all at once instead of one after another. Every
/// remembered entry is read again and compared before it is used, so the
/// outcomes are exactly those of [`emulate_with`]; only the order of the
/// guest-memory reads differs.
#[derive(Clone, Debug)]
pub struct Emulator {
    config: EmulatorConfig,
    /// The masks of `config.physical_address_bits`.
    physical: PhysicalMasks,
    walks: WalkMemo,
}

impl Default for Emulator {
    fn default() -> Emulator {
        Emulator::new(EmulatorConfig::DEFAULT)
    }
}

impl Emulator {
    /// An emulator with `config` that remembers nothing yet.
    pub const fn new(config: EmulatorConfig) -> Emulator {
        Emulator {
            config,
            physical: PhysicalMasks::new(config.physical_address_bits),
            walks: WalkMemo::EMPTY,
        }
    }

    /// Emulates the instruction at the guest's RIP described by `exit` (see
    /// [`emulate_with`]).
    pub fn emulate(&mut self, guest: &mut impl Guest, exit: &ExitMessage) -> Outcome {
        run(
            guest,
            exit,
            &self.config,
            &self.physical,
            Some(&mut self.walks),
        )
    }
}

/// Emulates the instruction at the guest's RIP described by `exit`, with
/// [`EmulatorConfig::DEFAULT`] and nothing remembered from earlier calls.
pub fn emulate(guest: &mut impl Guest, exit: &ExitMessage) -> Outcome {
    emulate_with(guest, exit, &EmulatorConfig::DEFAULT)
}

/// Emulates the instruction at the guest's RIP described by `exit`, with
/// nothing remembered from earlier calls.
///
/// Nothing is committed unless the outcome is [`Outcome::Retired`]: the
/// registers live in a private copy, and every memory write is preceded by
/// all the checks (segmentation, alignment, paging) of the accesses it
/// depends on. A REP string instruction that faults after making progress
/// retires the completed iterations (RIP unchanged); the re-execution then
/// raises the fault.
pub fn emulate_with(
    guest: &mut impl Guest,
    exit: &ExitMessage,
    config: &EmulatorConfig,
) -> Outcome {
    let physical = PhysicalMasks::new(config.physical_address_bits);
    run(guest, exit, config, &physical, None)
}

// Not inlined into the callers: the outcome is then built straight into
// the caller's place instead of being copied there (a memcpy whose wide
// loads stall on the narrow stores that just built it).
#[inline(never)]
fn run(
    guest: &mut impl Guest,
    exit: &ExitMessage,
    config: &EmulatorConfig,
    physical: &PhysicalMasks,
    walks: Option<&mut WalkMemo>,
) -> Outcome {
    let mut machine = Machine::new(guest, exit, config, physical, walks);
    let mut bytes = [0; MAX_INSTRUCTION_LEN];
    let mut instruction = Instruction::default();
    let fetched = match machine.fetch_and_decode(&mut bytes, &mut instruction) {
        Ok(fetched) => fetched,
        Err(FetchError::Fault(fault)) => {
            return outcome_of(fault, [0; MAX_INSTRUCTION_LEN], 0, None);
        }
        Err(FetchError::Undecodable(length)) => {
            if let Some(fault) = ops::undefined_opcode(&mut machine, &bytes, length) {
                return outcome_of(fault, bytes, length, None);
            }
            return Outcome::Unsupported(Unsupported {
                bytes,
                length: length as u8,
                what: "undecodable instruction",
                code: None,
            });
        }
    };
    let progress = ops::execute(&mut machine, &instruction)
        .and_then(|progress| machine.require_linear_confirmed().map(|()| progress));
    match progress {
        Ok(progress) => {
            let regs = &machine.regs;
            let rip = if progress == Progress::Complete {
                next_rip(machine.mode, exit, instruction.next_ip())
            } else {
                regs.rip
            };
            retired(regs, rip)
        }
        // The length only here: worked out before `execute`, it was kept
        // in a register or on the stack across it (5 instructions a MOV).
        Err(fault) => {
            let length = instruction.len().min(fetched);
            outcome_of(fault, bytes, length, Some(instruction.code()))
        }
    }
}

/// The outcome of an instruction that retired with `regs` and `rip`.
fn retired(regs: &Registers, rip: u64) -> Outcome {
    let mut outcome = Outcome::Retired(Retired {
        gprs: [0; 16],
        rip,
        rflags: regs.rflags & !rflags::RF,
        vector_mask: 0,
        vector: [0; 32],
        segment: None,
    });
    // The registers are copied in last, straight into the outcome: built
    // in one literal, they went through a temporary whose 16-byte stores
    // the 64-byte loads of the copy into the outcome (a memcpy call) could
    // not forward from, which cost about 5% of an emulated MOV. The vector
    // register likewise: chosen before the literal, it was zeroed on the
    // stack and copied (4 instructions a MOV). A segment load, rare, is
    // copied only when there is one (its 40 bytes copied whole cost 3
    // instructions a MOV).
    if let Outcome::Retired(retired) = &mut outcome {
        retired.gprs = regs.gprs;
        if regs.segment_load.is_some() {
            retired.segment = regs.segment_load;
        }
        if let Some((index, value)) = regs.vector_write
            && index < 16
        {
            retired.vector_mask = 1 << index;
            retired.vector = value;
        }
    }
    outcome
}

/// RIP after the instruction, wrapped at the code size (IP in 16-bit code).
fn next_rip(mode: Mode, exit: &ExitMessage, next_ip: u64) -> u64 {
    match mode.bitness(exit) {
        64 => next_ip,
        32 => next_ip & 0xffff_ffff,
        _ => next_ip & 0xffff,
    }
}

fn outcome_of(
    fault: Fault,
    bytes: [u8; MAX_INSTRUCTION_LEN],
    length: usize,
    code: Option<Code>,
) -> Outcome {
    match fault {
        Fault::Exception(exception) => Outcome::Exception(exception),
        Fault::Retry => Outcome::Retry,
        Fault::Memory(error) => Outcome::MemoryError(error),
        Fault::Unsupported(what) => Outcome::Unsupported(Unsupported {
            bytes,
            length: length.min(MAX_INSTRUCTION_LEN) as u8,
            what,
            code,
        }),
    }
}
