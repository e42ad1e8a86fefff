//! Judging a boot from its serial log.
//!
//! Markers (whole lines on COM1; a line counts if it contains the marker):
//! - guest: `RESULT: PASS <summary>` or `RESULT: FAIL <reason>`; a guest may
//!   print `mmio-store: N ticks, ram-store: M ticks`, which the verdict repeats.
//! - core: `cordon: guest done on cpu C: guest says pass|fail, guest-emulated=N
//!   service-retired=M ...` after the guest's completion hypercall; the two
//!   counts must agree (every trapped access the guest made went through the
//!   service).
//! - core, fatal: `cordon: EXCEPTION`, `cordon: PANIC`, `cordon: FATAL`,
//!   `cordon: VMX not available`, `cordon: machine stop (failure)`.
//! - core, boot self-test: `cordon: selftest ... ok`.
//!
//! The tool prints serial lines indented, so its own closing
//! `RESULT: PASS ...` / `RESULT: FAIL ...` is the only line that starts so.

use std::time::Duration;

/// What a run must show to pass, and what fails it.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    /// Every one must appear (substring of some line).
    pub required: Vec<String>,
    /// Any one fails the run at once.
    pub failures: Vec<String>,
    /// Check the core's `cordon: guest done` line (result and counts).
    pub guest_done_line: bool,
    /// Lines that would be fatal but are what this run expects (the boot
    /// self-test's exception report).
    pub tolerated: Vec<String>,
    /// A count the log must agree with itself on.
    pub tally: Option<Tally>,
}

/// "Every item line was printed": lines containing `item` are counted, and the
/// line containing `total` must carry the same number right after it (for the
/// hostile service: `hostile: x: refused E` lines against `hostile: done, N`).
#[derive(Clone, Debug)]
pub struct Tally {
    pub item: String,
    pub total: String,
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
}

/// How a run ended without a verdict from the log.
#[derive(Clone, Copy, Debug)]
pub enum RunEnd {
    /// The emulator exited on its own with this status (None: by a signal).
    EmulatorExited(Option<i32>),
    TimedOut(Duration),
}

const MACHINE_STOP_FAILURE: &str = "cordon: machine stop (failure)";
const FATAL_MARKERS: &[&str] = &[
    "went through the service: NO",
    "cordon: EXCEPTION",
    "cordon: PANIC",
    "cordon: FATAL",
    MACHINE_STOP_FAILURE,
];
/// Words that mark a line as a likely cause when a run fails later.
const TROUBLE_WORDS: &[&str] = &[
    "refused",
    "stopped",
    "error",
    "unsupported",
    "FAIL",
    "fault",
];
const VMX_MISSING: &str = "cordon: VMX not available";
const GUEST_PASS: &str = "RESULT: PASS";
const GUEST_FAIL: &str = "RESULT: FAIL";
const GUEST_DONE: &str = "cordon: guest done";
const FIGURE: &str = "mmio-store:";

/// Watches serial lines one at a time and decides as soon as it can.
#[derive(Debug)]
pub struct Judge {
    expectations: Expectations,
    seen: Vec<bool>,
    guest_summary: Option<String>,
    figure: Option<String>,
    last_line: Option<String>,
    /// The first line that looks like the cause of a failure, for the reason.
    first_trouble: Option<String>,
    tally_items: u64,
    tally_checked: bool,
}

impl Judge {
    pub fn new(expectations: Expectations) -> Judge {
        let seen = vec![false; expectations.required.len()];
        Judge {
            expectations,
            seen,
            guest_summary: None,
            figure: None,
            last_line: None,
            first_trouble: None,
            tally_items: 0,
            tally_checked: false,
        }
    }

    /// Takes one serial line; returns the verdict once the log decides it.
    pub fn observe(&mut self, line: &str) -> Option<Verdict> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        self.last_line = Some(line.to_string());
        let troubling = TROUBLE_WORDS.iter().any(|word| line.contains(word));
        if self.first_trouble.is_none() && troubling && !line.contains(MACHINE_STOP_FAILURE) {
            self.first_trouble = Some(line.to_string());
        }
        if line.contains(VMX_MISSING) {
            return Some(Verdict::Fail("VMX not available".into()));
        }
        let tolerated = self
            .expectations
            .tolerated
            .iter()
            .any(|marker| line.contains(marker.as_str()));
        let is_failure = !tolerated && FATAL_MARKERS.iter().any(|marker| line.contains(marker))
            || self
                .expectations
                .failures
                .iter()
                .any(|marker| line.contains(marker.as_str()));
        if is_failure {
            return Some(Verdict::Fail(
                match (&self.first_trouble, line.contains(MACHINE_STOP_FAILURE)) {
                    (Some(cause), true) => format!("{line} after: {cause}"),
                    _ => line.to_string(),
                },
            ));
        }
        if let Some(index) = line.find(GUEST_FAIL) {
            let reason = line[index + GUEST_FAIL.len()..].trim();
            return Some(Verdict::Fail(format!("guest: {reason}")));
        }
        if let Some(index) = line.find(GUEST_PASS) {
            self.guest_summary = Some(line[index + GUEST_PASS.len()..].trim().to_string());
        }
        if let Some(index) = line.find(FIGURE) {
            self.figure = Some(line[index..].to_string());
        }
        if self.expectations.guest_done_line
            && line.contains(GUEST_DONE)
            && let Err(reason) = check_guest_done(line)
        {
            return Some(Verdict::Fail(reason));
        }
        if let Some(tally) = &self.expectations.tally {
            if line.contains(tally.item.as_str()) {
                self.tally_items += 1;
            }
            if let Some(index) = line.find(tally.total.as_str()) {
                let rest = &line[index + tally.total.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                match digits.parse::<u64>() {
                    Ok(total) if total == self.tally_items && total > 0 => {
                        self.tally_checked = true
                    }
                    _ => {
                        return Some(Verdict::Fail(format!(
                            "`{line}` but {} `{}` lines were printed",
                            self.tally_items, tally.item
                        )));
                    }
                }
            }
        }
        for (marker, seen) in self.expectations.required.iter().zip(self.seen.iter_mut()) {
            *seen |= line.contains(marker.as_str());
        }
        if self.expectations.tally.is_some() && !self.tally_checked {
            return None;
        }
        self.seen
            .iter()
            .all(|seen| *seen)
            .then(|| Verdict::Pass(self.summary()))
    }

    /// The verdict for a run that ended before the log decided.
    pub fn conclude(&self, end: RunEnd) -> Verdict {
        let missing: Vec<&str> = self
            .expectations
            .required
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !**seen)
            .map(|(marker, _)| marker.as_str())
            .collect();
        if missing.is_empty() {
            return Verdict::Pass(self.summary());
        }
        let how = match end {
            RunEnd::EmulatorExited(Some(status)) => format!("emulator exited with status {status}"),
            RunEnd::EmulatorExited(None) => "emulator was killed by a signal".to_string(),
            RunEnd::TimedOut(after) => format!("timeout after {} s", after.as_secs()),
        };
        let last = self.last_line.as_deref().unwrap_or("(serial log empty)");
        Verdict::Fail(format!(
            "{how} before `{}`; last serial line: {last}",
            missing.join("`, `")
        ))
    }

    fn summary(&self) -> String {
        match (&self.guest_summary, &self.figure) {
            (Some(summary), Some(figure)) if !summary.contains(figure.as_str()) => {
                format!("{summary}; {figure}")
            }
            (Some(summary), _) => summary.clone(),
            (None, Some(figure)) => figure.clone(),
            (None, None) => self.last_line.clone().unwrap_or_default(),
        }
    }
}

/// Checks `cordon: guest done result=... guest-emulated=N service-retired=M`.
fn check_guest_done(line: &str) -> Result<(), String> {
    let field = |key: &str| {
        line.split_whitespace().find_map(|word| {
            word.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
    };
    if field("result") == Some("fail") || line.contains("guest says fail") {
        return Err(format!("the guest reported failure to the core: {line}"));
    }
    let count = |key| field(key).and_then(|value| value.trim_end_matches(',').parse::<u64>().ok());
    match (count("guest-emulated"), count("service-retired")) {
        (Some(guest), Some(service)) if guest != service => Err(format!(
            "the guest counted {guest} emulated instructions but the service retired {service}"
        )),
        _ => Ok(()),
    }
}

/// Removes terminal escape sequences (GRUB draws its menu with them) and
/// carriage returns from a serial line.
pub fn printable(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte.
                    for next in chars.by_ref() {
                        if ('@'..='~').contains(&next) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => text.push(c),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_expectations() -> Expectations {
        Expectations {
            required: vec![GUEST_PASS.into(), GUEST_DONE.into()],
            failures: vec![],
            guest_done_line: true,
            tolerated: vec![],
            tally: None,
        }
    }

    #[test]
    fn passes_once_guest_and_core_agree() {
        let mut judge = Judge::new(demo_expectations());
        assert_eq!(judge.observe("check lapic-id: ok"), None);
        assert_eq!(
            judge.observe("mmio-store: 812 ticks, ram-store: 3 ticks"),
            None
        );
        assert_eq!(judge.observe("RESULT: PASS 23 checks"), None);
        let verdict =
            judge.observe("cordon: guest done result=pass guest-emulated=57 service-retired=57");
        assert_eq!(
            verdict,
            Some(Verdict::Pass(
                "23 checks; mmio-store: 812 ticks, ram-store: 3 ticks".into()
            ))
        );
    }

    #[test]
    fn count_mismatch_and_reported_failure_fail() {
        let mut judge = Judge::new(demo_expectations());
        let verdict =
            judge.observe("cordon: guest done result=pass guest-emulated=57 service-retired=56");
        assert!(matches!(verdict, Some(Verdict::Fail(reason)) if reason.contains("57")));
        let mut judge = Judge::new(demo_expectations());
        let verdict =
            judge.observe("cordon: guest done result=fail guest-emulated=1 service-retired=1");
        assert!(matches!(verdict, Some(Verdict::Fail(_))));
    }

    #[test]
    fn fatal_lines_fail_at_once() {
        for line in [
            "cordon: EXCEPTION #GP general protection (vector 13)",
            "cordon: PANIC at kernel/src/vm.rs:10",
            "RESULT: FAIL lapic-version: got 0x14",
        ] {
            let mut judge = Judge::new(demo_expectations());
            assert!(
                matches!(judge.observe(line), Some(Verdict::Fail(_))),
                "{line}"
            );
        }
        let mut judge = Judge::new(demo_expectations());
        assert_eq!(
            judge.observe("cordon: VMX not available (CPUID.1:ECX.VMX = 0)"),
            Some(Verdict::Fail("VMX not available".into()))
        );
        let mut judge = Judge::new(Expectations {
            failures: vec!["hostile: FAIL".into()],
            ..demo_expectations()
        });
        assert!(matches!(
            judge.observe("service: hostile: FAIL map accepted"),
            Some(Verdict::Fail(_))
        ));
    }

    #[test]
    fn a_tolerated_exception_report_does_not_fail() {
        let mut judge = Judge::new(Expectations {
            required: vec!["cordon: selftest exception report ok".into()],
            tolerated: vec!["cordon: EXCEPTION #UD".into()],
            ..Expectations::default()
        });
        assert_eq!(
            judge.observe("cordon: EXCEPTION #UD invalid opcode (vector 6)"),
            None
        );
        assert!(matches!(
            judge.observe("cordon: selftest exception report ok (vector 6)"),
            Some(Verdict::Pass(_))
        ));
        let mut judge = Judge::new(Expectations {
            tolerated: vec!["cordon: EXCEPTION #UD".into()],
            ..Expectations::default()
        });
        assert!(matches!(
            judge.observe("cordon: EXCEPTION #PF page fault"),
            Some(Verdict::Fail(_))
        ));
    }

    #[test]
    fn markers_before_the_tally_line_count() {
        let mut judge = Judge::new(Expectations {
            required: vec!["isolated".into(), "hostile: PASS".into()],
            tally: Some(Tally {
                item: ": refused ".into(),
                total: "hostile: done, ".into(),
            }),
            ..Expectations::default()
        });
        judge.observe("service[0]: hostile: map-outside: refused OutOfCapability");
        assert_eq!(judge.observe("service[0]: hostile: isolated"), None);
        assert_eq!(judge.observe("service[0]: hostile: done, 1 refusals"), None);
        assert!(matches!(
            judge.observe("service[0]: hostile: PASS"),
            Some(Verdict::Pass(_))
        ));
    }

    #[test]
    fn a_tally_must_match_its_item_lines() {
        let expectations = Expectations {
            required: vec!["hostile: PASS".into()],
            tally: Some(Tally {
                item: ": refused ".into(),
                total: "hostile: done, ".into(),
            }),
            ..Expectations::default()
        };
        let mut judge = Judge::new(expectations.clone());
        judge.observe("service[0]: hostile: map-outside: refused OutOfCapability");
        judge.observe("service[0]: hostile: bad-width: refused BadArgument");
        assert_eq!(judge.observe("service[0]: hostile: done, 2 refusals"), None);
        assert!(matches!(
            judge.observe("service[0]: hostile: PASS"),
            Some(Verdict::Pass(_))
        ));

        let mut judge = Judge::new(expectations.clone());
        judge.observe("service[0]: hostile: map-outside: refused OutOfCapability");
        let verdict = judge.observe("service[0]: hostile: done, 2 refusals");
        assert!(matches!(verdict, Some(Verdict::Fail(_))), "{verdict:?}");

        let mut judge = Judge::new(expectations);
        assert_eq!(
            judge.observe("service[0]: hostile: PASS"),
            None,
            "no tally line yet"
        );
    }

    #[test]
    fn an_early_end_names_what_is_missing() {
        let mut judge = Judge::new(demo_expectations());
        judge.observe("RESULT: PASS 3 checks");
        let Verdict::Fail(reason) = judge.conclude(RunEnd::TimedOut(Duration::from_secs(30)))
        else {
            panic!("a run without the core's line must fail");
        };
        assert!(reason.contains("timeout after 30 s"), "{reason}");
        assert!(reason.contains(GUEST_DONE), "{reason}");
        assert!(reason.contains("RESULT: PASS 3 checks"), "{reason}");
        judge.observe("cordon: vm stopped on cpu 0: the service asked to stop the VM");
        judge.observe("cordon: guest rip=0x200036d");
        let Some(Verdict::Fail(reason)) = judge.observe("cordon: machine stop (failure)") else {
            panic!("a machine stop with failure must fail");
        };
        assert!(
            reason.contains("after: cordon: vm stopped on cpu 0"),
            "{reason}"
        );
    }

    #[test]
    fn escapes_and_carriage_returns_are_removed() {
        assert_eq!(
            printable("\u{1b}[H\u{1b}[J\u{1b}[1;1H  Booting `Cordon'\r"),
            "  Booting `Cordon'"
        );
        assert_eq!(printable("plain\ttext"), "plain\ttext");
    }
}
