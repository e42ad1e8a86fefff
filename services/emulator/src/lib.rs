//! The Cordon x86 instruction emulator: decodes the instruction at the guest's
//! RIP, checks segmentation and paging as the CPU would, and performs the access
//! through the [`Guest`] trait, its only door to the world.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use abi::ExitMessage;

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
    /// `pages[1]` when they run past the end of the first page) with
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
    /// Bit n set: YMMn changed and its new value is `vectors[n]`.
    pub vector_mask: u16,
    pub vectors: [[u8; 32]; 16],
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
    /// iced-x86's name for the instruction form, or why decoding failed.
    pub what: &'static str,
}

/// Emulates the instruction at the guest's RIP described by `exit`.
pub fn emulate(_guest: &mut impl Guest, _exit: &ExitMessage) -> Outcome {
    Outcome::Retry
}
