//! The 32-bit phase's result table: what the assembly records for each check, in order,
//! and how the 64-bit phase turns it into report lines.

use crate::report::{CheckLine, Phase};

/// One record, as the 32-bit assembly writes it (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Phase32Record {
    /// 1 if every comparison of the check held.
    pub passed: u32,
    /// First reported value.
    pub first: u32,
    /// Second reported value.
    pub second: u32,
    /// Written as zero.
    pub reserved: u32,
}

/// Size of one record in bytes (the assembly indexes records by shifting by 4).
pub const RECORD_BYTES: usize = 16;
const _: () = assert!(size_of::<Phase32Record>() == RECORD_BYTES);

/// Name and value labels of a 32-bit check.
#[derive(Debug, Clone, Copy)]
pub struct Phase32Check {
    /// Check name.
    pub name: &'static str,
    /// Label of `first`.
    pub first: &'static str,
    /// Label of `second`.
    pub second: &'static str,
}

const fn check(name: &'static str, first: &'static str, second: &'static str) -> Phase32Check {
    Phase32Check {
        name,
        first,
        second,
    }
}

/// The checks in the order the assembly records them (keep in step with phase32.s).
pub const CHECKS: [Phase32Check; 19] = [
    check("lapic-id", "id", "cpuid"),
    check("lapic-version", "version", "max-lvt"),
    check("tpr", "got", "expected"),
    check("mov8", "got", "expected"),
    check("mov16", "got", "expected"),
    check("mov32", "got", "expected"),
    check("movzx8", "got", "expected"),
    check("movzx16", "got", "expected"),
    check("movsx8", "got", "expected"),
    check("movsx16", "got", "expected"),
    check("add", "got", "expected"),
    check("or", "got", "expected"),
    check("and", "got", "expected"),
    check("xchg", "old", "memory"),
    check("lock-xadd", "old", "memory"),
    check("lock-cmpxchg", "returned", "memory"),
    check("rep-stosb", "first", "last"),
    check("rep-movsb-to-vga", "first", "last"),
    check("rep-movsb-from-vga", "first", "last"),
];

/// The report line of record `index` (None past the table).
pub fn line(index: usize, record: &Phase32Record) -> Option<CheckLine> {
    let check = CHECKS.get(index)?;
    Some(CheckLine {
        phase: Phase::Protected32,
        name: check.name,
        passed: record.passed == 1,
        first: (check.first, u64::from(record.first)),
        second: (check.second, u64::from(record.second)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn records_become_lines() {
        let record = Phase32Record {
            passed: 1,
            first: 0,
            second: 0,
            reserved: 0,
        };
        let text = line(0, &record).unwrap().to_string();
        assert_eq!(text, "demo: [32] lapic-id ok (id=0x0 cpuid=0x0)");
        let failed = Phase32Record {
            passed: 0,
            first: 0x12,
            second: 0x34,
            reserved: 0,
        };
        assert_eq!(
            line(3, &failed).unwrap().to_string(),
            "demo: [32] mov8 FAIL (got=0x12 expected=0x34)"
        );
        assert!(line(CHECKS.len(), &record).is_none());
    }
}
