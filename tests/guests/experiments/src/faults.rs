//! Fault cases of the `segments` and `paging` guests: what each case expects (no fault,
//! or an exception with its error code, and CR2 for #PF), which path should raise it
//! (the CPU itself, before any EPT violation, or the emulator, after the instruction's
//! first access reached trapped memory), and the judgement of what was recorded.
//!
//! The path is told apart by time: under Bochs with `clock: sync=none` the TSC counts
//! instructions, and a round trip through the core and the emulator service costs
//! thousands of them, a fault the CPU raises itself a few hundred.

use core::fmt;

/// TSC ticks from which a case is taken to have gone through the emulator.
pub const EMULATOR_PATH_TICKS: u64 = 2_000;

/// Who should raise (or carry out) the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The CPU faults before any access reaches trapped memory.
    Cpu,
    /// The access exits to the core and the emulator carries it out or faults it.
    Emulator,
}

impl Path {
    /// The path a case that took `ticks` went.
    pub fn from_ticks(ticks: u64) -> Path {
        if ticks >= EMULATOR_PATH_TICKS {
            Path::Emulator
        } else {
            Path::Cpu
        }
    }

    fn name(self) -> &'static str {
        match self {
            Path::Cpu => "cpu",
            Path::Emulator => "emulator",
        }
    }
}

/// What a case should end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No fault; the value read back afterwards must be this.
    Value(u64),
    /// This exception, with this error code (and CR2 for #PF).
    Fault {
        vector: u8,
        error_code: u64,
        cr2: Option<u64>,
    },
}

/// One case.
#[derive(Debug, Clone, Copy)]
pub struct FaultCase {
    pub name: &'static str,
    pub expected: Expected,
    pub path: Path,
}

/// What a case recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The exception taken, if any: (vector, error code, CR2).
    pub fault: Option<(u8, u64, u64)>,
    /// The value read back (meaningful without a fault).
    pub value: u64,
    /// TSC ticks from just before the instruction to the resume point.
    pub ticks: u64,
}

/// The judgement of one case.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    pub case: &'a FaultCase,
    pub observed: Observed,
}

impl Judged<'_> {
    /// The path the case took.
    pub fn path(&self) -> Path {
        Path::from_ticks(self.observed.ticks)
    }

    /// Whether outcome and path are the expected ones.
    pub fn passed(&self) -> bool {
        let outcome = match (self.case.expected, self.observed.fault) {
            (Expected::Value(value), None) => self.observed.value == value,
            (
                Expected::Fault {
                    vector,
                    error_code,
                    cr2,
                },
                Some((got_vector, got_error, got_cr2)),
            ) => {
                vector == got_vector
                    && error_code == got_error
                    && cr2.is_none_or(|address| address == got_cr2)
            }
            _ => false,
        };
        outcome && self.path() == self.case.path
    }
}

impl fmt::Display for Judged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.case.expected {
            Expected::Value(value) => write!(f, "expected no fault, value {value:#x}")?,
            Expected::Fault {
                vector,
                error_code,
                cr2,
            } => {
                write!(f, "expected vector {vector} error {error_code:#x}")?;
                if let Some(address) = cr2 {
                    write!(f, " cr2 {address:#x}")?;
                }
            }
        }
        write!(f, " by {}; got ", self.case.path.name())?;
        match self.observed.fault {
            None => write!(f, "no fault, value {:#x}", self.observed.value)?,
            Some((vector, error_code, cr2)) => {
                write!(f, "vector {vector} error {error_code:#x}")?;
                if matches!(self.case.expected, Expected::Fault { cr2: Some(_), .. }) {
                    write!(f, " cr2 {cr2:#x}")?;
                }
            }
        }
        write!(
            f,
            " by {} ({} ticks)",
            self.path().name(),
            self.observed.ticks
        )
    }
}

/// Instructions the emulator retires and exceptions it injects over `cases`, if each
/// case went the expected way: a value case through the emulator is one retired
/// instruction, a fault case through the emulator one injected exception.
pub fn emulator_work(cases: &[FaultCase]) -> (u32, u32) {
    cases.iter().fold((0, 0), |(retired, injected), case| {
        match (case.path, case.expected) {
            (Path::Emulator, Expected::Value(_)) => (retired + 1, injected),
            (Path::Emulator, Expected::Fault { .. }) => (retired, injected + 1),
            (Path::Cpu, _) => (retired, injected),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    const GP: FaultCase = FaultCase {
        name: "gp",
        expected: Expected::Fault {
            vector: 13,
            error_code: 0,
            cr2: None,
        },
        path: Path::Emulator,
    };
    const PF: FaultCase = FaultCase {
        name: "pf",
        expected: Expected::Fault {
            vector: 14,
            error_code: 2,
            cr2: Some(0x1000),
        },
        path: Path::Cpu,
    };
    const VALUE: FaultCase = FaultCase {
        name: "value",
        expected: Expected::Value(7),
        path: Path::Emulator,
    };

    fn observed(fault: Option<(u8, u64, u64)>, value: u64, ticks: u64) -> Observed {
        Observed {
            fault,
            value,
            ticks,
        }
    }

    #[test]
    fn outcome_and_path_must_both_match() {
        let ok = Judged {
            case: &GP,
            observed: observed(Some((13, 0, 0)), 0, 9000),
        };
        assert!(ok.passed());
        assert_eq!(
            ok.to_string(),
            "expected vector 13 error 0x0 by emulator; got vector 13 error 0x0 by emulator (9000 ticks)"
        );
        let by_cpu = Judged {
            case: &GP,
            observed: observed(Some((13, 0, 0)), 0, 300),
        };
        assert!(!by_cpu.passed());
        let wrong_code = Judged {
            case: &GP,
            observed: observed(Some((13, 8, 0)), 0, 9000),
        };
        assert!(!wrong_code.passed());
        let no_fault = Judged {
            case: &GP,
            observed: observed(None, 0, 9000),
        };
        assert!(!no_fault.passed());
    }

    #[test]
    fn page_faults_check_cr2_and_values_check_the_value() {
        let pf = |cr2| Judged {
            case: &PF,
            observed: observed(Some((14, 2, cr2)), 0, 100),
        };
        assert!(pf(0x1000).passed());
        assert!(!pf(0x2000).passed());
        assert!(pf(0x1000).to_string().contains("cr2 0x1000"));
        let value = |value| Judged {
            case: &VALUE,
            observed: observed(None, value, 5000),
        };
        assert!(value(7).passed());
        assert!(!value(8).passed());
    }

    #[test]
    fn emulator_work_counts_retired_and_injected() {
        assert_eq!(emulator_work(&[GP, PF, VALUE, VALUE]), (2, 1));
    }
}
