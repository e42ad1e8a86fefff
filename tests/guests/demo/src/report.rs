//! Report lines: one per check, the summary, and the final verdict line.

use core::fmt;

/// The mode a check ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// 32-bit protected mode, paging off.
    Protected32,
    /// 64-bit mode, 4-level paging.
    Long64,
}

/// The outcome of one check, printed as one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLine {
    /// Mode the check ran in.
    pub phase: Phase,
    /// Check name.
    pub name: &'static str,
    /// Whether every comparison held.
    pub passed: bool,
    /// First value shown, with its label.
    pub first: (&'static str, u64),
    /// Second value shown, with its label.
    pub second: (&'static str, u64),
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Protected32 => "32",
            Phase::Long64 => "64",
        };
        let verdict = if self.passed { "ok" } else { "FAIL" };
        write!(
            f,
            "demo: [{phase}] {} {verdict} ({}={:#x} {}={:#x})",
            self.name, self.first.0, self.first.1, self.second.0, self.second.1
        )
    }
}

/// Counts passed and run checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks run.
    pub total: u32,
}

impl Tally {
    /// Counts one check.
    pub fn record(&mut self, line: &CheckLine) {
        self.total += 1;
        if line.passed {
            self.passed += 1;
        }
    }

    /// Whether checks ran and all passed.
    pub fn all_passed(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }

    /// The summary line, e.g. `demo: 40/40 checks passed, trapped-instructions=123`.
    pub fn summary(&self, trapped_instructions: u32) -> Summary {
        Summary {
            tally: *self,
            trapped_instructions,
        }
    }
}

/// The summary line.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    tally: Tally,
    trapped_instructions: u32,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "demo: {}/{} checks passed, trapped-instructions={}",
            self.tally.passed, self.tally.total, self.trapped_instructions
        )
    }
}

/// The figure line, `mmio-store: N ticks, ram-store: M ticks` (averages per store).
#[derive(Debug, Clone, Copy)]
pub struct StoreFigure {
    /// Average ticks of one emulated MMIO store.
    pub mmio_ticks: u64,
    /// Average ticks of one RAM store.
    pub ram_ticks: u64,
}

impl fmt::Display for StoreFigure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mmio-store: {} ticks, ram-store: {} ticks",
            self.mmio_ticks, self.ram_ticks
        )
    }
}

/// The guest's line that ends its run: `demo: done pass` or `demo: done fail`.
pub fn done_line(passed: bool) -> &'static str {
    if passed {
        "demo: done pass"
    } else {
        "demo: done fail"
    }
}

/// The `RESULT:` line the boot tool judges the guest by.
#[derive(Debug, Clone, Copy)]
pub struct ResultLine {
    tally: Tally,
    phase32_complete: bool,
}

impl ResultLine {
    /// The result of `tally`; `phase32_complete` says whether the 32-bit phase recorded
    /// every one of its checks.
    pub fn new(tally: Tally, phase32_complete: bool) -> Self {
        Self {
            tally,
            phase32_complete,
        }
    }

    /// Whether the run passed: all checks ran and passed.
    pub fn passed(&self) -> bool {
        self.phase32_complete && self.tally.all_passed()
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Tally { passed, total } = self.tally;
        if self.passed() {
            return write!(f, "RESULT: PASS demo {passed}/{total} checks");
        }
        write!(
            f,
            "RESULT: FAIL demo: {} of {total} checks failed",
            total - passed
        )?;
        if !self.phase32_complete {
            write!(f, ", 32-bit phase incomplete")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn line(passed: bool) -> CheckLine {
        CheckLine {
            phase: Phase::Long64,
            name: "mov64",
            passed,
            first: ("got", 0xfedc),
            second: ("expected", 0xfedc),
        }
    }

    #[test]
    fn formats_lines_and_summary() {
        assert_eq!(
            line(true).to_string(),
            "demo: [64] mov64 ok (got=0xfedc expected=0xfedc)"
        );
        let mut tally = Tally::default();
        assert!(!tally.all_passed());
        tally.record(&line(true));
        assert!(tally.all_passed());
        tally.record(&line(false));
        assert!(!tally.all_passed());
        assert_eq!(
            tally.summary(7).to_string(),
            "demo: 1/2 checks passed, trapped-instructions=7"
        );
        let figure = StoreFigure {
            mmio_ticks: 1500,
            ram_ticks: 4,
        };
        assert_eq!(
            figure.to_string(),
            "mmio-store: 1500 ticks, ram-store: 4 ticks"
        );
        assert_eq!(done_line(false), "demo: done fail");
        assert_eq!(done_line(true), "demo: done pass");
    }

    #[test]
    fn result_lines() {
        let all = Tally {
            passed: 58,
            total: 58,
        };
        assert!(ResultLine::new(all, true).passed());
        assert_eq!(
            ResultLine::new(all, true).to_string(),
            "RESULT: PASS demo 58/58 checks"
        );
        assert_eq!(
            ResultLine::new(all, false).to_string(),
            "RESULT: FAIL demo: 0 of 58 checks failed, 32-bit phase incomplete"
        );
        let some = Tally {
            passed: 55,
            total: 58,
        };
        assert!(!ResultLine::new(some, true).passed());
        assert_eq!(
            ResultLine::new(some, true).to_string(),
            "RESULT: FAIL demo: 3 of 58 checks failed"
        );
        assert!(!ResultLine::new(Tally::default(), true).passed());
    }
}
