//! Walks remembered between instructions: the entries above the page table
//! (PML5E/PML4E, PDPTE, PDE) of recent walks, with their addresses, so that
//! a later walk in the same 2 MiB region re-reads them all at once, as
//! independent loads, instead of one after another, and starts at the page
//! table when each still holds the value remembered. Equal entries make an
//! equal walk, so no change a guest makes to its page tables is missed; only
//! the order of the reads changes, as the CPU's paging-structure caches
//! change it.

use super::{CachedTable, Entries, Format, MAX_LEVELS, PagingContext, Rights, read_entry};
use crate::Guest;

/// How many 2 MiB regions are remembered (a guest's MMIO instructions
/// typically run from one or two code regions against one or two regions of
/// device mappings).
const SLOTS: usize = 4;

/// The entries above the page table have at most this many levels.
const UPPER_LEVELS: usize = MAX_LEVELS - 1;

/// The remembered walks of one stream of exits (one vCPU's, typically).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkMemo {
    /// Slots not yet filled are [`Remembered::UNUSED`].
    slots: [Remembered; SLOTS],
    next: usize,
}

/// What a walk depends on besides the entries it reads: the format, the
/// root table and the reserved bits (MAXPHYADDR, EFER.NXE). Two words
/// compared for each slot searched: the format sits in the root's low bits
/// (zero in a PAE or 4/5-level root), and the address mask is the bits
/// 12..51 that are not always reserved, so that comparing it too would
/// only repeat the comparison of the reserved bits. Two compares fewer,
/// and the registers they held: 10 instructions fewer an emulated MOV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WalkRoot {
    root_and_format: u64,
    always_reserved: u64,
}

impl WalkRoot {
    fn of(ctx: &PagingContext) -> WalkRoot {
        WalkRoot {
            root_and_format: ctx.root | ctx.format as u64,
            always_reserved: ctx.always_reserved,
        }
    }
}

/// One region's walk down to its page table.
#[derive(Clone, Copy, Debug)]
struct Remembered {
    root: WalkRoot,
    table: CachedTable,
    /// The entries above the page table, root first.
    gpas: [u64; UPPER_LEVELS],
    values: [u64; UPPER_LEVELS],
    count: usize,
}

impl Remembered {
    /// A slot not yet filled: its region is one no linear address has, so
    /// that a search compares regions alone (as `Option`s, the slots cost
    /// a test more each: 3 instructions an emulated MOV).
    const UNUSED: Remembered = Remembered {
        root: WalkRoot {
            root_and_format: 0,
            always_reserved: 0,
        },
        table: CachedTable {
            region: u64::MAX,
            table: 0,
            rights: Rights::ALL,
        },
        gpas: [0; UPPER_LEVELS],
        values: [0; UPPER_LEVELS],
        count: 0,
    };
}

impl WalkMemo {
    /// Nothing remembered.
    pub(crate) const EMPTY: WalkMemo = WalkMemo {
        slots: [Remembered::UNUSED; SLOTS],
        next: 0,
    };

    /// The page table of `linear`'s region, if a walk to it is remembered
    /// and every entry above it still holds the remembered value (a read
    /// that fails counts as a change: the full walk then reports it).
    /// Always inlined, as `translate` is.
    #[inline(always)]
    pub(super) fn recall<G: Guest>(
        &self,
        guest: &mut G,
        ctx: &PagingContext,
        linear: u64,
    ) -> Option<CachedTable> {
        let region = linear >> 21;
        let root = WalkRoot::of(ctx);
        let remembered = self
            .slots
            .iter()
            .find(|slot| slot.table.region == region && slot.root == root)?;
        // The loads do not depend on each other: the CPU issues them together.
        // The pairs zipped, not indexed up to the count: 3 instructions
        // fewer a store MOV, 4 a load, 6 a locked XADD.
        let upper = remembered.gpas.iter().zip(&remembered.values);
        for (&gpa, &value) in upper.take(remembered.count) {
            if read_entry(guest, gpa, true).ok()? != value {
                return None;
            }
        }
        Some(remembered.table)
    }

    /// Remembers a successful walk that reached `table`, from the entries
    /// it recorded (its last entry is the page-table entry, not kept). The
    /// walk's entries all had their accessed bits, so the values are the
    /// ones in memory.
    pub(super) fn remember(&mut self, ctx: &PagingContext, table: CachedTable, entries: &Entries) {
        let upper = entries.count.saturating_sub(1);
        if ctx.format == Format::Bits32 || upper == 0 || upper > UPPER_LEVELS {
            return;
        }
        let mut remembered = Remembered {
            root: WalkRoot::of(ctx),
            table,
            gpas: [0; UPPER_LEVELS],
            values: [0; UPPER_LEVELS],
            count: upper,
        };
        let copies = [
            (remembered.gpas.get_mut(..upper), entries.gpas.get(..upper)),
            (
                remembered.values.get_mut(..upper),
                entries.values.get(..upper),
            ),
        ];
        for (to, from) in copies {
            if let (Some(to), Some(from)) = (to, from) {
                to.copy_from_slice(from);
            }
        }
        // The region's old slot if it has one (its walk changed), else the
        // next in turn.
        let root = remembered.root;
        let slot = self
            .slots
            .iter()
            .position(|slot| slot.table.region == table.region && slot.root == root)
            .unwrap_or_else(|| {
                let next = self.next;
                self.next = (next + 1) % SLOTS;
                next
            });
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = remembered;
        }
    }
}
