//! The handoff experiment's verdict and figures: vCPU 0 hands the value 1 to the two
//! exchangers N times through one trapped word; with atomic XCHG emulation no handoff is
//! lost or counted twice, so counter0 == counter1 + counter2.

use core::fmt;

/// vCPUs taking part: the writer and two exchangers.
pub const VCPUS: usize = 3;

/// What one phase of the experiment measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffResult {
    /// Handoffs vCPU 0 was asked to make.
    pub iterations: u32,
    /// counter0: stores of 1 by vCPU 0; counter1, counter2: old values of 1 seen by XCHG.
    pub counters: [u32; VCPUS],
    /// Emulated instructions (trapped accesses) of each vCPU.
    pub accesses: [u32; VCPUS],
    /// TSC ticks each vCPU spent in its loop.
    pub ticks: [u64; VCPUS],
    /// Loops that gave up on their bound (a stuck partner).
    pub timeouts: u32,
    /// The word's value after the phase (must be 0).
    pub final_value: u32,
}

impl HandoffResult {
    /// counter0 == counter1 + counter2 (no lost or doubled handoff).
    pub fn balanced(&self) -> bool {
        u64::from(self.counters[0]) == u64::from(self.counters[1]) + u64::from(self.counters[2])
    }

    /// Whether the phase passed: all N handoffs made, balanced, no bound ran out, and
    /// the word ended at 0.
    pub fn passed(&self) -> bool {
        self.iterations > 0
            && self.counters[0] == self.iterations
            && self.balanced()
            && self.timeouts == 0
            && self.final_value == 0
    }

    /// Emulated instructions of all vCPUs.
    pub fn total_accesses(&self) -> u64 {
        self.accesses.iter().map(|count| u64::from(*count)).sum()
    }

    /// Average ticks of one emulated access on `vcpu` (0 when it made none).
    pub fn ticks_per_access(&self, vcpu: usize) -> u64 {
        match (self.ticks.get(vcpu), self.accesses.get(vcpu)) {
            (Some(ticks), Some(&accesses)) if accesses > 0 => ticks / u64::from(accesses),
            _ => 0,
        }
    }

    /// The counters line.
    pub fn counters_line(&self) -> CountersLine<'_> {
        CountersLine(self)
    }

    /// The figure line.
    pub fn figure_line(&self) -> FigureLine<'_> {
        FigureLine(self)
    }
}

/// `counter0=.. counter1=.. counter2=.. (sum=..) timeouts=.. final=..`
#[derive(Debug)]
pub struct CountersLine<'a>(&'a HandoffResult);

impl fmt::Display for CountersLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "n={} counter0={} counter1={} counter2={} counter1+counter2={} timeouts={} final-x={:#x}",
            r.iterations,
            r.counters[0],
            r.counters[1],
            r.counters[2],
            u64::from(r.counters[1]) + u64::from(r.counters[2]),
            r.timeouts,
            r.final_value
        )
    }
}

/// `ticks-per-emulated-access cpu0=.. cpu1=.. cpu2=.. (accesses ...)`
#[derive(Debug)]
pub struct FigureLine<'a>(&'a HandoffResult);

impl fmt::Display for FigureLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "ticks-per-emulated-access-under-contention cpu0={} cpu1={} cpu2={} (accesses {} {} {}, ticks {} {} {})",
            r.ticks_per_access(0),
            r.ticks_per_access(1),
            r.ticks_per_access(2),
            r.accesses[0],
            r.accesses[1],
            r.accesses[2],
            r.ticks[0],
            r.ticks[1],
            r.ticks[2]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn result() -> HandoffResult {
        HandoffResult {
            iterations: 10,
            counters: [10, 6, 4],
            accesses: [25, 40, 38],
            ticks: [2500, 4000, 3800],
            timeouts: 0,
            final_value: 0,
        }
    }

    #[test]
    fn a_balanced_phase_passes() {
        let r = result();
        assert!(r.balanced() && r.passed());
        assert_eq!(r.total_accesses(), 103);
        assert_eq!(r.ticks_per_access(0), 100);
        assert_eq!(r.ticks_per_access(3), 0);
        assert_eq!(
            r.counters_line().to_string(),
            "n=10 counter0=10 counter1=6 counter2=4 counter1+counter2=10 timeouts=0 final-x=0x0"
        );
        assert!(
            r.figure_line()
                .to_string()
                .contains("cpu0=100 cpu1=100 cpu2=100")
        );
    }

    #[test]
    fn lost_or_doubled_handoffs_fail() {
        let lost = HandoffResult {
            counters: [10, 5, 4],
            ..result()
        };
        assert!(!lost.balanced() && !lost.passed());
        let doubled = HandoffResult {
            counters: [10, 6, 5],
            ..result()
        };
        assert!(!doubled.passed());
        let stuck = HandoffResult {
            timeouts: 1,
            ..result()
        };
        assert!(!stuck.passed());
        let short = HandoffResult {
            counters: [9, 5, 4],
            ..result()
        };
        assert!(short.balanced() && !short.passed());
        let left_over = HandoffResult {
            final_value: 1,
            ..result()
        };
        assert!(!left_over.passed());
        assert!(!HandoffResult::default().passed());
    }
}
