//! The serving loop of an emulator service: receive an exit, emulate the
//! instruction with the emulator library over the map window, reply.
//!
//! Shared source: the emulator service (`main.rs` here) and the hostile test
//! service (tests/services/hostile) both include this file with `#[path]`,
//! because the emulator package cannot depend on a crate that depends on it.

use core::fmt;
use emulator::{Emulator, Guest, MemoryError, Outcome};
use rt::abi::{ExitMessage, ExitReason, Reply, Segment, ServiceStart, SyscallError};
use rt::guest_memory::{AccessError, GuestMemory};
use rt::lapic::{self, IcrWrite};
use rt::message::MessagePage;
use rt::read_log::{MAX_INSTRUCTION_LEN, ReadLog};
use rt::syscall::Error;
use rt::{log, reply};

/// Exit code when the core refuses even a `Stop` reply or `reply_recv` fails.
const BROKEN_CHANNEL_EXIT_CODE: u64 = 2;

/// One service thread: its message page, its map window, and how it logs.
pub struct ExitServer {
    page: MessagePage,
    memory: GuestMemory,
    cpu: u64,
    /// Prefix of every log line.
    name: &'static str,
    /// Log every emulated instruction.
    trace: bool,
    /// This vCPU's emulator: it remembers page walks between exits.
    emulator: Emulator,
}

impl ExitServer {
    /// # Safety
    /// `start` must be what `_start` received from the core, and this must be
    /// the only `ExitServer` (and the only user of the message page and the
    /// map window) of this thread.
    pub unsafe fn new(start: &ServiceStart, name: &'static str, trace: bool) -> ExitServer {
        ExitServer {
            // SAFETY: per this function's contract.
            page: unsafe { MessagePage::new(start.message_page) },
            // SAFETY: per this function's contract.
            memory: unsafe { GuestMemory::new(start.map_window) },
            cpu: start.cpu,
            name,
            trace,
            emulator: Emulator::default(),
        }
    }

    /// States our ABI version and waits for the first exit. Ends the service
    /// if the core refuses (for instance an ABI mismatch).
    pub fn first_exit(&mut self) -> ExitMessage {
        match self.page.first_exit() {
            Ok(exit) => exit,
            Err(error) => {
                log!(
                    "{}: cpu {}: first reply_recv refused: {error}",
                    self.name,
                    self.cpu
                );
                rt::syscall::exit(BROKEN_CHANNEL_EXIT_CODE)
            }
        }
    }

    /// Writes `reply`, answers the pending exit, and returns the next one.
    pub fn send(&mut self, reply: &Reply) -> Result<ExitMessage, Error> {
        self.page.reply_and_wait(reply)
    }

    /// Answers exits for ever, starting with `exit`. A reply the core
    /// refuses (a bug of ours) stops the VM.
    pub fn serve(mut self, mut exit: ExitMessage) -> ! {
        loop {
            let reply = self.handle(&exit);
            let sent = match self.send(&reply) {
                Err(Error::Refused(SyscallError::BadReply)) => {
                    log!(
                        "{}: cpu {}: core refused the reply to exit {} (action {}); stopping the VM",
                        self.name,
                        self.cpu,
                        exit.sequence,
                        reply.action
                    );
                    self.send(&reply::stop(exit.sequence))
                }
                other => other,
            };
            exit = self.next_or_exit(sent);
        }
    }

    /// The next exit, or the end of the service if `reply_recv` failed.
    fn next_or_exit(&self, sent: Result<ExitMessage, Error>) -> ExitMessage {
        sent.unwrap_or_else(|error| {
            log!(
                "{}: cpu {}: reply_recv failed: {error}",
                self.name,
                self.cpu
            );
            rt::syscall::exit(BROKEN_CHANNEL_EXIT_CODE)
        })
    }

    /// Emulates the instruction of `exit` and builds the reply.
    pub fn handle(&mut self, exit: &ExitMessage) -> Reply {
        if ExitReason::from_raw(exit.reason) != Some(ExitReason::EptViolation) {
            log!(
                "{}: cpu {}: exit reason {} is not one this service handles; stopping the VM",
                self.name,
                self.cpu,
                exit.reason
            );
            return reply::stop(exit.sequence);
        }
        let outcome = if self.trace {
            let mut guest = RecordingGuest::new(&mut self.memory);
            let outcome = self.emulator.emulate(&mut guest, exit);
            // A retired instruction's length is how far RIP moved (0 for a
            // REP instruction that is only partly done: show all fetched).
            let length = match &outcome {
                Outcome::Retired(retired) => retired.rip.wrapping_sub(exit.state.rip),
                _ => 0,
            };
            let length = match usize::try_from(length) {
                Ok(length) if (1..=MAX_INSTRUCTION_LEN).contains(&length) => length,
                _ => MAX_INSTRUCTION_LEN,
            };
            let bytes = guest.reads.instruction_bytes(linear_rip(exit), length);
            log!(
                "{}: trace: cpu {} exit {} rip {:#x} bytes [{}] gpa {:#x} qual {:#x}: {}",
                self.name,
                self.cpu,
                exit.sequence,
                exit.state.rip,
                HexBytes(bytes),
                exit.guest_physical,
                exit.qualification,
                OutcomeSummary(&outcome)
            );
            outcome
        } else {
            self.emulator
                .emulate(&mut WindowGuest(&mut self.memory), exit)
        };
        self.reply_for(exit, &outcome)
    }

    fn reply_for(&self, exit: &ExitMessage, outcome: &Outcome) -> Reply {
        match outcome {
            Outcome::Retired(retired) => {
                // The reply takes all sixteen; only the changed one is read.
                let mut vectors = [[0u8; 32]; 16];
                if let Some((index, vector)) = retired.changed_vector()
                    && let Some(slot) = vectors.get_mut(index)
                {
                    *slot = *vector;
                }
                reply::resume(
                    exit.sequence,
                    &retired.gprs,
                    retired.rip,
                    retired.rflags,
                    retired.vector_mask,
                    &vectors,
                    retired.segment.as_ref(),
                )
            }
            Outcome::Exception(exception) => reply::inject(
                exit.sequence,
                exception.vector,
                exception.error_code,
                exception.cr2,
            ),
            Outcome::Retry => reply::retry(exit.sequence),
            Outcome::Unsupported(unsupported) => {
                let length = usize::from(unsupported.length).min(unsupported.bytes.len());
                log!(
                    "{}: cpu {}: unsupported instruction at rip {:#x}: {} [{}]; stopping the VM",
                    self.name,
                    self.cpu,
                    exit.state.rip,
                    unsupported.what,
                    HexBytes(&unsupported.bytes[..length])
                );
                reply::stop(exit.sequence)
            }
            Outcome::MemoryError(error) => {
                log!(
                    "{}: cpu {}: guest memory unreachable ({error:?}) emulating rip {:#x} (exit gpa {:#x}); stopping the VM",
                    self.name,
                    self.cpu,
                    exit.state.rip,
                    exit.guest_physical
                );
                reply::stop(exit.sequence)
            }
        }
    }
}

/// The emulator's [`Guest`] over the map window.
struct WindowGuest<'a>(&'a mut GuestMemory);

fn memory_error(error: AccessError) -> MemoryError {
    match error {
        AccessError::Syscall(Error::Refused(SyscallError::NoCapability)) => MemoryError::NoAccess,
        _ => MemoryError::Failed,
    }
}

impl Guest for WindowGuest<'_> {
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read(gpa, buf).map_err(memory_error)
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        if let (lapic::ICR_LOW, Ok(low)) = (gpa, <[u8; 4]>::try_from(data)) {
            let mut high = [0u8; 4];
            self.0
                .read(lapic::ICR_HIGH, &mut high)
                .map_err(memory_error)?;
            match lapic::classify_icr_write(u32::from_le_bytes(low), u32::from_le_bytes(high)) {
                IcrWrite::PassThrough => {}
                IcrWrite::InitDeassert => return Ok(()),
                IcrWrite::Init(target) => {
                    return rt::syscall::init_cpu(target).map_err(|_| MemoryError::Failed);
                }
            }
        }
        self.0.write(gpa, data).map_err(memory_error)
    }

    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError> {
        self.0
            .compare_exchange(pages, offset, expected, new, current)
            .map_err(memory_error)
    }
}

/// A [`WindowGuest`] that logs its reads, to show the fetched instruction
/// bytes in trace lines.
struct RecordingGuest<'a> {
    inner: WindowGuest<'a>,
    reads: ReadLog,
}

impl<'a> RecordingGuest<'a> {
    fn new(memory: &'a mut GuestMemory) -> Self {
        RecordingGuest {
            inner: WindowGuest(memory),
            reads: ReadLog::default(),
        }
    }
}

impl Guest for RecordingGuest<'_> {
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.inner.read_physical(gpa, buf)?;
        self.reads.record(gpa, buf);
        Ok(())
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.inner.write_physical(gpa, data)
    }

    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError> {
        self.inner
            .compare_exchange(pages, offset, expected, new, current)
    }
}

/// The linear address of the instruction: CS.base + RIP outside 64-bit mode
/// (truncated to 32 bits), RIP in 64-bit mode.
fn linear_rip(exit: &ExitMessage) -> u64 {
    const EFER_LMA: u64 = 1 << 10;
    let cs = exit.state.segments[Segment::Cs as usize];
    let long_mode = exit.state.efer & EFER_LMA != 0;
    if long_mode && cs.access_rights & rt::abi::SegmentRegister::AR_L != 0 {
        exit.state.rip
    } else {
        cs.base.wrapping_add(exit.state.rip) & 0xffff_ffff
    }
}

/// Bytes as space-separated hex pairs.
struct HexBytes<'a>(&'a [u8]);

impl fmt::Display for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One-line summary of an outcome, for trace lines.
struct OutcomeSummary<'a>(&'a Outcome);

impl fmt::Display for OutcomeSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Outcome::Retired(retired) => write!(f, "retired, next rip {:#x}", retired.rip),
            Outcome::Exception(exception) => write!(
                f,
                "exception {} error code {:?} cr2 {:?}",
                exception.vector, exception.error_code, exception.cr2
            ),
            Outcome::Retry => f.write_str("retry"),
            Outcome::Unsupported(unsupported) => write!(f, "unsupported: {}", unsupported.what),
            Outcome::MemoryError(error) => write!(f, "memory error: {error:?}"),
        }
    }
}
