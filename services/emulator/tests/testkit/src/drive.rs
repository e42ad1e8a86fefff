//! Runs the emulator the way a guest would: applies each retired step to the
//! exit state and, when a REP instruction is only partly done or the emulator
//! asks for a retry, emulates again, until the instruction completes or ends
//! in an exception, an unsupported outcome or a memory error.

use abi::ExitMessage;
use emulator::{Emulator, Exception, Guest, MemoryError, Outcome, Retired, Unsupported, emulate};

/// How driving one instruction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driven {
    /// RIP moved on: the instruction is done; the exit state holds the result.
    Completed,
    Exception(Exception),
    Unsupported(Unsupported),
    MemoryError(MemoryError),
    /// The step or retry limit ran out.
    Stuck,
}

/// Writes a retired step into the exit state (a loaded segment register
/// included).
pub fn apply(exit: &mut ExitMessage, retired: &Retired) {
    exit.state.gprs = retired.gprs;
    exit.state.rip = retired.rip;
    exit.state.rflags = retired.rflags;
    if let Some((index, vector)) = retired.changed_vector() {
        exit.vectors.ymm[index] = *vector;
    }
    if let Some(load) = &retired.segment
        && let Some(register) = exit.state.segments.get_mut(usize::from(load.register))
    {
        *register = load.value;
    }
}

/// Emulates the instruction at `exit`'s RIP with `emulator` until it
/// completes, applying every retired step to `exit`; at most `step_limit`
/// calls to `emulate`, and at most `retry_limit` retries in a row (without
/// other guests writing, a retry must not repeat for ever). Returns the
/// ending and the number of calls made.
pub fn drive(
    emulator: &mut Emulator,
    guest: &mut impl Guest,
    exit: &mut ExitMessage,
    step_limit: usize,
    retry_limit: usize,
) -> (Driven, usize) {
    let start = exit.state.rip;
    let mut retries = 0;
    for step in 1..=step_limit {
        match emulator.emulate(guest, exit) {
            Outcome::Retired(retired) => {
                retries = 0;
                apply(exit, &retired);
                if retired.rip != start {
                    return (Driven::Completed, step);
                }
            }
            Outcome::Retry => {
                retries += 1;
                if retries > retry_limit {
                    return (Driven::Stuck, step);
                }
            }
            Outcome::Exception(exception) => return (Driven::Exception(exception), step),
            Outcome::Unsupported(unsupported) => return (Driven::Unsupported(unsupported), step),
            Outcome::MemoryError(error) => return (Driven::MemoryError(error), step),
        }
    }
    (Driven::Stuck, step_limit)
}

/// Emulates the instruction at `exit`'s RIP once, re-emulating on
/// `Retry` (a lost compare-exchange race) up to `retry_limit` times; `Err`
/// carries any outcome other than `Retired` (and `Retry` past the limit).
pub fn retire(
    guest: &mut impl Guest,
    exit: &ExitMessage,
    retry_limit: usize,
) -> Result<Retired, Box<Outcome>> {
    for _ in 0..retry_limit {
        match emulate(guest, exit) {
            Outcome::Retired(retired) => return Ok(retired),
            Outcome::Retry => {}
            other => return Err(Box::new(other)),
        }
    }
    Err(Box::new(Outcome::Retry))
}
