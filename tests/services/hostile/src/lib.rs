//! The hostile test service's attacks, as data: every malformed system call
//! and every invalid reply it makes at its first exit, each with the error
//! the core must answer. The binary (src/bin/hostile-service) makes the calls;
//! the host tests here check each attack against the core's own policy code,
//! so an attack that would not be refused fails `cargo test`, not a boot.
#![no_std]

pub mod replies;
pub mod syscalls;

#[cfg(test)]
extern crate std;
#[cfg(test)]
mod policy_tests;

use abi::SyscallError;

/// What one attack came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused with the expected error.
    Refused,
    /// Refused, but with another error than the expected one.
    WrongError { expected: SyscallError },
    /// The core accepted it: a hole.
    Accepted,
}

/// Judges the core's answer to an attack that expects `expected`: `Ok` if it
/// accepted, else the error it returned (`None` for a code the ABI does not
/// know).
pub fn judge(got: Result<(), Option<SyscallError>>, expected: SyscallError) -> Verdict {
    match got {
        Ok(()) => Verdict::Accepted,
        Err(Some(error)) if error == expected => Verdict::Refused,
        Err(_) => Verdict::WrongError { expected },
    }
}

/// Counts of verdicts, for the final status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub refused: u32,
    pub wrong_error: u32,
    pub accepted: u32,
}

impl Tally {
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Refused => self.refused += 1,
            Verdict::WrongError { .. } => self.wrong_error += 1,
            Verdict::Accepted => self.accepted += 1,
        }
    }

    /// Every attack was refused with its expected error.
    pub fn passed(&self) -> bool {
        self.wrong_error == 0 && self.accepted == 0 && self.refused > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        let expected = SyscallError::BadArgument;
        assert_eq!(judge(Ok(()), expected), Verdict::Accepted);
        assert_eq!(judge(Err(Some(expected)), expected), Verdict::Refused);
        assert_eq!(
            judge(Err(Some(SyscallError::NoCapability)), expected),
            Verdict::WrongError { expected }
        );
        assert_eq!(judge(Err(None), expected), Verdict::WrongError { expected });
    }

    #[test]
    fn tally_passes_only_when_everything_was_refused_as_expected() {
        let mut tally = Tally::default();
        assert!(!tally.passed(), "no attacks is no pass");
        tally.add(Verdict::Refused);
        assert!(tally.passed());
        tally.add(Verdict::WrongError {
            expected: SyscallError::BadReply,
        });
        assert!(!tally.passed());
        let mut tally = Tally::default();
        tally.add(Verdict::Refused);
        tally.add(Verdict::Accepted);
        assert_eq!(
            tally,
            Tally {
                refused: 1,
                wrong_error: 0,
                accepted: 1
            }
        );
        assert!(!tally.passed());
    }
}
