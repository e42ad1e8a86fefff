//! The serving loop of an emulator service: receive an exit, emulate the
//! instruction with the emulator library over the map window, reply.
//!
//! Shared source: the emulator service (`main.rs` here) and the hostile test
//! service (tests/services/hostile) both include this file with `#[path]`,
//! because the emulator package cannot depend on a crate that depends on it.

use core::fmt;
use emulator::{Guest, MemoryError, Outcome};
use rt::abi::{ExitMessage, ExitReason, Reply, Segment, ServiceStart, SyscallError};
use rt::guest_memory::{AccessError, GuestMemory};
use rt::message::MessagePage;
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

    /// Answers exits for ever, starting with `exit`.
    pub fn serve(mut self, mut exit: ExitMessage) -> ! {
        loop {
            let reply = self.handle(&exit);
            exit = match self.send(&reply) {
                Ok(next) => next,
                Err(Error::Refused(SyscallError::BadReply)) => {
                    log!(
                        "{}: cpu {}: core refused the reply to exit {} (action {}); stopping the VM",
                        self.name,
                        self.cpu,
                        exit.sequence,
                        reply.action
                    );
                    self.send_or_exit(&reply::stop(exit.sequence))
                }
                Err(error) => {
                    log!(
                        "{}: cpu {}: reply_recv failed: {error}",
                        self.name,
                        self.cpu
                    );
                    rt::syscall::exit(BROKEN_CHANNEL_EXIT_CODE)
                }
            };
        }
    }

    fn send_or_exit(&mut self, reply: &Reply) -> ExitMessage {
        match self.send(reply) {
            Ok(next) => next,
            Err(error) => {
                log!(
                    "{}: cpu {}: reply_recv failed: {error}",
                    self.name,
                    self.cpu
                );
                rt::syscall::exit(BROKEN_CHANNEL_EXIT_CODE)
            }
        }
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
            let outcome = emulator::emulate(&mut guest, exit);
            let fetched = guest.instruction_bytes(linear_rip(exit));
            // A retired instruction's length is how far RIP moved (0 for a
            // REP instruction that is only partly done: show all fetched).
            let length = match &outcome {
                Outcome::Retired(retired) => retired.rip.wrapping_sub(exit.state.rip),
                _ => 0,
            };
            let bytes = match usize::try_from(length) {
                Ok(length) if (1..=fetched.len()).contains(&length) => &fetched[..length],
                _ => fetched,
            };
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
            emulator::emulate(&mut WindowGuest(&mut self.memory), exit)
        };
        self.reply_for(exit, &outcome)
    }

    fn reply_for(&self, exit: &ExitMessage, outcome: &Outcome) -> Reply {
        match outcome {
            Outcome::Retired(retired) => reply::resume(
                exit.sequence,
                &retired.gprs,
                retired.rip,
                retired.rflags,
                retired.vector_mask,
                &retired.vectors,
            ),
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

/// Most reads a traced emulation remembers.
const RECORDED_READS: usize = 16;
/// The longest x86 instruction.
const MAX_INSTRUCTION_LEN: usize = 15;

/// One read the emulator made: where, and its first bytes.
#[derive(Clone, Copy)]
struct RecordedRead {
    gpa: u64,
    len: usize,
    bytes: [u8; MAX_INSTRUCTION_LEN],
}

/// A [`WindowGuest`] that remembers the reads, to find the instruction bytes
/// the emulator fetched (for the trace line).
struct RecordingGuest<'a> {
    inner: WindowGuest<'a>,
    reads: [Option<RecordedRead>; RECORDED_READS],
    count: usize,
    fetched: [u8; MAX_INSTRUCTION_LEN],
}

impl<'a> RecordingGuest<'a> {
    fn new(memory: &'a mut GuestMemory) -> Self {
        RecordingGuest {
            inner: WindowGuest(memory),
            reads: [None; RECORDED_READS],
            count: 0,
            fetched: [0; MAX_INSTRUCTION_LEN],
        }
    }

    /// The instruction bytes: the read that starts at the page offset of the
    /// linear RIP (preferring a longer read than a page-table entry), plus the
    /// read at the start of the next page if the fetch crossed it. Best
    /// effort: empty if no read matches.
    fn instruction_bytes(&mut self, linear_rip: u64) -> &[u8] {
        let offset = linear_rip % 4096;
        let reads = &self.reads[..self.count.min(RECORDED_READS)];
        let at_rip = |read: &&Option<RecordedRead>| read.is_some_and(|r| r.gpa % 4096 == offset);
        let position = reads
            .iter()
            .position(|read| at_rip(&read) && read.is_some_and(|r| r.len > 8))
            .or_else(|| reads.iter().position(|read| at_rip(&read)));
        let Some(first) = position.and_then(|index| reads[index].map(|read| (index, read))) else {
            return &[];
        };
        let (index, read) = first;
        let mut length = read.len.min(MAX_INSTRUCTION_LEN);
        self.fetched[..length].copy_from_slice(&read.bytes[..length]);
        let reaches_page_end = offset + read.len as u64 == 4096;
        if let Some(Some(next)) = reads.get(index + 1)
            && reaches_page_end
            && next.gpa % 4096 == 0
        {
            let take = next.len.min(MAX_INSTRUCTION_LEN - length);
            self.fetched[length..length + take].copy_from_slice(&next.bytes[..take]);
            length += take;
        }
        &self.fetched[..length]
    }
}

impl Guest for RecordingGuest<'_> {
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.inner.read_physical(gpa, buf)?;
        if let Some(slot) = self.reads.get_mut(self.count) {
            let mut bytes = [0; MAX_INSTRUCTION_LEN];
            let kept = buf.len().min(MAX_INSTRUCTION_LEN);
            bytes[..kept].copy_from_slice(&buf[..kept]);
            *slot = Some(RecordedRead {
                gpa,
                len: buf.len(),
                bytes,
            });
            self.count += 1;
        }
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
