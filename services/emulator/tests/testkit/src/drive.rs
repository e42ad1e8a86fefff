//! Runs the emulator the way a guest would: applies each retired step to the
//! exit state and, when a REP instruction is only partly done or the emulator
//! asks for a retry, emulates again, until the instruction completes or ends
//! in an exception, an unsupported outcome or a memory error.

use abi::ExitMessage;
use emulator::{Exception, Guest, MemoryError, Outcome, Retired, Unsupported, emulate};

/// How driving one instruction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driven {
    /// RIP moved on: the instruction is done; the exit state holds the result.
    Completed,
    Exception(Exception),
    Unsupported(Unsupported),
    MemoryError(MemoryError),
    /// The step limit ran out (endless retries or REP steps).
    Stuck,
}

/// Writes a retired step into the exit state.
pub fn apply(exit: &mut ExitMessage, retired: &Retired) {
    exit.state.gprs = retired.gprs;
    exit.state.rip = retired.rip;
    exit.state.rflags = retired.rflags;
    for (index, vector) in retired.vectors.iter().enumerate() {
        if retired.vector_mask & (1 << index) != 0 {
            exit.vectors.ymm[index] = *vector;
        }
    }
}

/// Emulates the instruction at `exit`'s RIP until it completes, applying
/// every retired step to `exit`; at most `step_limit` calls to `emulate`.
/// Returns the ending and the number of calls made.
pub fn drive(guest: &mut impl Guest, exit: &mut ExitMessage, step_limit: usize) -> (Driven, usize) {
    let start = exit.state.rip;
    for step in 1..=step_limit {
        match emulate(guest, exit) {
            Outcome::Retired(retired) => {
                apply(exit, &retired);
                if retired.rip != start {
                    return (Driven::Completed, step);
                }
            }
            Outcome::Retry => {}
            Outcome::Exception(exception) => return (Driven::Exception(exception), step),
            Outcome::Unsupported(unsupported) => return (Driven::Unsupported(unsupported), step),
            Outcome::MemoryError(error) => return (Driven::MemoryError(error), step),
        }
    }
    (Driven::Stuck, step_limit)
}
