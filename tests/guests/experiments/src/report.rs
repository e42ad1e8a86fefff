//! Check lines and their tally: `NAME: CHECK ok (details)` / `FAIL`, and the verdict.

use core::fmt;

/// Counts checks run and passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks run.
    pub total: u32,
}

impl Tally {
    /// Counts one check.
    pub fn record(&mut self, passed: bool) {
        self.total += 1;
        if passed {
            self.passed += 1;
        }
    }

    /// Whether checks ran and all passed.
    pub fn all_passed(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }
}

/// `ok` or `FAIL`.
pub fn verdict_word(passed: bool) -> &'static str {
    if passed { "ok" } else { "FAIL" }
}

/// The `RESULT:` line the boot tool judges a guest by.
#[derive(Debug, Clone, Copy)]
pub struct ResultLine<'a> {
    /// Guest name.
    pub guest: &'a str,
    /// The checks.
    pub tally: Tally,
}

impl fmt::Display for ResultLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Tally { passed, total } = self.tally;
        if self.tally.all_passed() {
            write!(f, "RESULT: PASS {} {passed}/{total} checks", self.guest)
        } else {
            write!(
                f,
                "RESULT: FAIL {}: {} of {total} checks failed",
                self.guest,
                total - passed
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn tally_and_result_line() {
        let mut tally = Tally::default();
        assert!(!tally.all_passed());
        assert_eq!(
            ResultLine {
                guest: "smp",
                tally
            }
            .to_string(),
            "RESULT: FAIL smp: 0 of 0 checks failed"
        );
        tally.record(true);
        tally.record(true);
        assert_eq!(
            ResultLine {
                guest: "smp",
                tally
            }
            .to_string(),
            "RESULT: PASS smp 2/2 checks"
        );
        tally.record(false);
        assert!(!tally.all_passed());
        assert_eq!(
            ResultLine {
                guest: "smp",
                tally
            }
            .to_string(),
            "RESULT: FAIL smp: 1 of 3 checks failed"
        );
        assert_eq!(verdict_word(false), "FAIL");
    }
}
