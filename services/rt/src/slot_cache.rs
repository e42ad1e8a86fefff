//! Which guest-physical page sits in which map-window slot, with which rights,
//! and which slot to reuse next (least recently used). Pure bookkeeping: the
//! caller makes the `map`/`unmap` calls the [`SlotPlan`] asks for and reports
//! back with [`SlotCache::mapped`] or [`SlotCache::cleared`].

/// One occupied slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotEntry {
    page: u64,
    rights: u64,
    last_use: u64,
}

/// What the caller must do to reach `page` with the rights it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPlan {
    /// The page is in `slot` with enough rights.
    Hit { slot: usize },
    /// Map the page into `slot` with `rights`; if `occupied`, unmap the slot
    /// first (it holds another page, or this page with fewer rights).
    Map {
        slot: usize,
        rights: u64,
        occupied: bool,
    },
}

/// The slot table of one CPU's map window, `N` slots.
#[derive(Clone, Debug)]
pub struct SlotCache<const N: usize> {
    entries: [Option<SlotEntry>; N],
    clock: u64,
}

impl<const N: usize> Default for SlotCache<N> {
    fn default() -> Self {
        SlotCache {
            entries: [None; N],
            clock: 0,
        }
    }
}

impl<const N: usize> SlotCache<N> {
    /// Plans access to `page` with `needed` rights. An upgrade keeps the
    /// rights the slot already had, so a page read and written stays mapped
    /// for both.
    pub fn plan(&mut self, page: u64, needed: u64) -> SlotPlan {
        self.clock += 1;
        let now = self.clock;
        let found = self
            .entries
            .iter_mut()
            .enumerate()
            .find_map(|(slot, entry)| entry.as_mut().filter(|e| e.page == page).map(|e| (slot, e)));
        if let Some((slot, entry)) = found {
            entry.last_use = now;
            if entry.rights & needed == needed {
                return SlotPlan::Hit { slot };
            }
            return SlotPlan::Map {
                slot,
                rights: entry.rights | needed,
                occupied: true,
            };
        }
        let slot = self.victim();
        SlotPlan::Map {
            slot,
            rights: needed,
            occupied: self.entries[slot].is_some(),
        }
    }

    /// A free slot, else the least recently used one.
    fn victim(&self) -> usize {
        let mut best = 0;
        let mut best_use = u64::MAX;
        for (slot, entry) in self.entries.iter().enumerate() {
            match entry {
                None => return slot,
                Some(entry) if entry.last_use < best_use => {
                    best = slot;
                    best_use = entry.last_use;
                }
                Some(_) => {}
            }
        }
        best
    }

    /// Records that `slot` now maps `page` with `rights`.
    pub fn mapped(&mut self, slot: usize, page: u64, rights: u64) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Some(SlotEntry {
                page,
                rights,
                last_use: self.clock,
            });
        }
    }

    /// Records that `slot` maps nothing (unmapped, or a map failed).
    pub fn cleared(&mut self, slot: usize) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u64 = 1;
    const W: u64 = 2;

    /// Plays a plan as a caller whose map calls all succeed.
    fn access<const N: usize>(cache: &mut SlotCache<N>, page: u64, needed: u64) -> SlotPlan {
        let plan = cache.plan(page, needed);
        if let SlotPlan::Map { slot, rights, .. } = plan {
            cache.mapped(slot, page, rights);
        }
        plan
    }

    #[test]
    fn hits_after_the_first_map() {
        let mut cache = SlotCache::<4>::default();
        assert_eq!(
            access(&mut cache, 0x1000, R),
            SlotPlan::Map {
                slot: 0,
                rights: R,
                occupied: false
            }
        );
        assert_eq!(access(&mut cache, 0x1000, R), SlotPlan::Hit { slot: 0 });
        assert_eq!(
            access(&mut cache, 0x2000, W),
            SlotPlan::Map {
                slot: 1,
                rights: W,
                occupied: false
            }
        );
    }

    #[test]
    fn upgrade_remaps_the_same_slot_with_both_rights() {
        let mut cache = SlotCache::<4>::default();
        access(&mut cache, 0x1000, R);
        assert_eq!(
            access(&mut cache, 0x1000, W),
            SlotPlan::Map {
                slot: 0,
                rights: R | W,
                occupied: true
            }
        );
        assert_eq!(access(&mut cache, 0x1000, R), SlotPlan::Hit { slot: 0 });
        assert_eq!(access(&mut cache, 0x1000, W), SlotPlan::Hit { slot: 0 });
    }

    #[test]
    fn evicts_the_least_recently_used_slot() {
        let mut cache = SlotCache::<3>::default();
        for page in [0x1000, 0x2000, 0x3000] {
            access(&mut cache, page, R);
        }
        access(&mut cache, 0x1000, R); // 0x2000 is now the oldest.
        assert_eq!(
            access(&mut cache, 0x4000, R),
            SlotPlan::Map {
                slot: 1,
                rights: R,
                occupied: true
            }
        );
        assert_eq!(access(&mut cache, 0x3000, R), SlotPlan::Hit { slot: 2 });
        assert_eq!(
            access(&mut cache, 0x5000, R),
            SlotPlan::Map {
                slot: 0,
                rights: R,
                occupied: true
            }
        );
        assert_eq!(
            access(&mut cache, 0x2000, R),
            SlotPlan::Map {
                slot: 1,
                rights: R,
                occupied: true
            }
        );
    }

    #[test]
    fn cleared_slots_are_reused_first() {
        let mut cache = SlotCache::<2>::default();
        access(&mut cache, 0x1000, R);
        access(&mut cache, 0x2000, R);
        cache.cleared(1);
        assert_eq!(
            access(&mut cache, 0x3000, R),
            SlotPlan::Map {
                slot: 1,
                rights: R,
                occupied: false
            }
        );
        // Out-of-range slots are ignored, not a panic.
        cache.cleared(7);
        cache.mapped(7, 0x9000, R);
        assert_eq!(access(&mut cache, 0x1000, R), SlotPlan::Hit { slot: 0 });
    }

    #[test]
    fn a_failed_map_leaves_no_entry() {
        let mut cache = SlotCache::<2>::default();
        let SlotPlan::Map { slot, .. } = cache.plan(0xf000_0000, R) else {
            panic!()
        };
        cache.cleared(slot);
        assert!(matches!(
            cache.plan(0xf000_0000, R),
            SlotPlan::Map {
                occupied: false,
                ..
            }
        ));
    }
}
