//! The core's policy decisions as pure logic: configuration from the command
//! line, the capability table, and the checks of everything a service hands the
//! core (replies, `cmpxchg` requests, user pointers). No hardware access here;
//! all of it is unit-tested on the host.

pub mod capability;
pub mod cmdline;
pub mod cmpxchg_check;
pub mod reply_check;
pub mod segment_check;
pub mod user_range;

use abi::PAGE_SIZE;

/// A half-open range `[start, end)` of guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

impl PhysRange {
    /// The local APIC page at its architectural default address.
    pub const LAPIC: PhysRange = PhysRange {
        start: 0xfee0_0000,
        end: 0xfee0_1000,
    };
    /// VGA text memory (colour and monochrome), 0xB8000-0xBFFFF.
    pub const VGA_TEXT: PhysRange = PhysRange {
        start: 0xb_8000,
        end: 0xc_0000,
    };

    /// The range, or `None` if it is empty or inverted.
    pub const fn new(start: u64, end: u64) -> Option<PhysRange> {
        if start < end {
            Some(PhysRange { start, end })
        } else {
            None
        }
    }

    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    pub const fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Both ends are multiples of the page size.
    pub const fn is_page_aligned(&self) -> bool {
        self.start.is_multiple_of(PAGE_SIZE) && self.end.is_multiple_of(PAGE_SIZE)
    }

    /// The whole pages inside the range (start rounded up, end rounded down),
    /// or `None` if no whole page fits.
    pub const fn shrink_to_pages(&self) -> Option<PhysRange> {
        let start = match self.start.checked_next_multiple_of(PAGE_SIZE) {
            Some(start) => start,
            None => return None,
        };
        PhysRange::new(start, self.end - self.end % PAGE_SIZE)
    }

    /// The pages the range touches (start rounded down, end rounded up; an end
    /// that would pass 2^64 saturates to the last page boundary's end).
    pub const fn grow_to_pages(&self) -> PhysRange {
        let end = match self.end.checked_next_multiple_of(PAGE_SIZE) {
            Some(end) => end,
            None => u64::MAX,
        };
        PhysRange {
            start: self.start - self.start % PAGE_SIZE,
            end,
        }
    }

    /// `self` minus `hole`: up to two pieces (below and above the hole).
    pub const fn subtract(&self, hole: &PhysRange) -> [Option<PhysRange>; 2] {
        if !self.overlaps(hole) {
            return [Some(*self), None];
        }
        let below = PhysRange::new(self.start, hole.start);
        let above = PhysRange::new(hole.end, self.end);
        [below, above]
    }
}

#[cfg(test)]
mod tests {
    use super::PhysRange;

    #[test]
    fn subtract_splits_around_a_hole() {
        let ram = PhysRange::new(0, 0x1000_0000).unwrap();
        let hole = PhysRange::new(0x10_0000, 0x200_0000).unwrap();
        assert_eq!(
            ram.subtract(&hole),
            [
                PhysRange::new(0, 0x10_0000),
                PhysRange::new(0x200_0000, 0x1000_0000)
            ]
        );
        let inside = PhysRange::new(0x20_0000, 0x30_0000).unwrap();
        assert_eq!(inside.subtract(&hole), [None, None]);
        let apart = PhysRange::new(0x300_0000, 0x400_0000).unwrap();
        assert_eq!(apart.subtract(&hole), [Some(apart), None]);
    }

    #[test]
    fn page_rounding() {
        let odd = PhysRange::new(0x9_fc00, 0x10_0400).unwrap();
        assert_eq!(odd.shrink_to_pages(), PhysRange::new(0xa_0000, 0x10_0000));
        assert_eq!(
            odd.grow_to_pages(),
            PhysRange::new(0x9_f000, 0x10_1000).unwrap()
        );
        assert_eq!(PhysRange::new(0x10, 0xff0).unwrap().shrink_to_pages(), None);
        let top = PhysRange::new(u64::MAX - 5, u64::MAX).unwrap();
        assert_eq!(top.shrink_to_pages(), None);
        assert_eq!(top.grow_to_pages().end, u64::MAX);
    }
}
