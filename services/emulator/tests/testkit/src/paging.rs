//! Builds guest page tables in [`GuestMemory`]: 4-level (long mode), PAE and
//! 32-bit paging, with 4 KiB pages, and a bump allocator for guest frames.

use crate::memory::{FRAME_SIZE, GuestMemory};

/// The paging structure format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// 32-bit paging: CR4.PAE = 0, 4-byte entries, two levels.
    Bits32,
    /// PAE paging: CR4.PAE = 1, no EFER.LMA, a 4-entry PDPT then two levels.
    Pae,
    /// 4-level paging: EFER.LMA = 1, CR4.LA57 = 0.
    Level4,
}

/// Page-table entry bits shared by all three formats.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// PAE and 4-level only (with EFER.NXE).
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// The attributes of one 4 KiB mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAttributes {
    pub writable: bool,
    pub user: bool,
    pub no_execute: bool,
}

impl PageAttributes {
    /// Writable, user, executable.
    pub const USER_RWX: PageAttributes = PageAttributes {
        writable: true,
        user: true,
        no_execute: false,
    };
    pub const USER_RW: PageAttributes = PageAttributes {
        writable: true,
        user: true,
        no_execute: true,
    };
    pub const USER_RO: PageAttributes = PageAttributes {
        writable: false,
        user: true,
        no_execute: true,
    };
    pub const SUPERVISOR_RW: PageAttributes = PageAttributes {
        writable: true,
        user: false,
        no_execute: true,
    };

    fn leaf_bits(self, mode: PagingMode) -> u64 {
        let mut bits = pte::PRESENT;
        if self.writable {
            bits |= pte::WRITABLE;
        }
        if self.user {
            bits |= pte::USER;
        }
        if self.no_execute && mode != PagingMode::Bits32 {
            bits |= pte::NO_EXECUTE;
        }
        bits
    }
}

/// Hands out zeroed guest frames from a range of [`GuestMemory`].
#[derive(Debug)]
pub struct FrameAllocator {
    next: u64,
    end: u64,
}

impl FrameAllocator {
    /// Frames from guest-physical `start` (page aligned) up to `end`.
    pub fn new(start: u64, end: u64) -> FrameAllocator {
        assert_eq!(
            start % FRAME_SIZE as u64,
            0,
            "allocator start not page aligned"
        );
        FrameAllocator { next: start, end }
    }

    /// The guest-physical address of a fresh frame (zeroed by the caller's
    /// memory being fresh; frames are never reused).
    pub fn allocate(&mut self) -> u64 {
        let frame = self.next;
        assert!(
            frame + FRAME_SIZE as u64 <= self.end,
            "test guest memory exhausted"
        );
        self.next += FRAME_SIZE as u64;
        frame
    }
}

/// A guest page-table hierarchy under construction.
#[derive(Debug)]
pub struct PageTables {
    mode: PagingMode,
    root: u64,
}

impl PageTables {
    /// An empty hierarchy; its root comes from `frames`.
    pub fn new(mode: PagingMode, memory: &GuestMemory, frames: &mut FrameAllocator) -> PageTables {
        let root = frames.allocate();
        memory.write(root, &[0; FRAME_SIZE]).expect("root frame");
        PageTables { mode, root }
    }

    pub fn mode(&self) -> PagingMode {
        self.mode
    }

    /// The CR3 value (the PDPT for PAE lives at the start of the root frame,
    /// so it is 32-byte aligned as PAE requires).
    pub fn cr3(&self) -> u64 {
        self.root
    }

    /// Maps the 4 KiB page at `linear` to `frame`. Intermediate entries are
    /// writable, user and executable so the leaf alone decides.
    pub fn map(
        &self,
        memory: &GuestMemory,
        frames: &mut FrameAllocator,
        linear: u64,
        frame: u64,
        attributes: PageAttributes,
    ) {
        let leaf = frame | attributes.leaf_bits(self.mode);
        let entry = self.leaf_entry_address(memory, frames, linear);
        self.write_entry(memory, entry, leaf);
    }

    /// Removes the mapping of `linear` (its leaf entry becomes 0).
    pub fn unmap(&self, memory: &GuestMemory, frames: &mut FrameAllocator, linear: u64) {
        let entry = self.leaf_entry_address(memory, frames, linear);
        self.write_entry(memory, entry, 0);
    }

    /// Sets `bits` in the leaf entry of `linear` (for reserved-bit, PKU or
    /// A/D tests).
    pub fn set_leaf_bits(
        &self,
        memory: &GuestMemory,
        frames: &mut FrameAllocator,
        linear: u64,
        bits: u64,
    ) {
        let entry = self.leaf_entry_address(memory, frames, linear);
        let value = self.read_entry(memory, entry);
        self.write_entry(memory, entry, value | bits);
    }

    /// The leaf entry's current value.
    pub fn leaf(&self, memory: &GuestMemory, frames: &mut FrameAllocator, linear: u64) -> u64 {
        let entry = self.leaf_entry_address(memory, frames, linear);
        self.read_entry(memory, entry)
    }

    /// The guest-physical address of the leaf entry of `linear` (creating
    /// tables on the way), for tests that change it while the emulator runs.
    pub fn leaf_address(
        &self,
        memory: &GuestMemory,
        frames: &mut FrameAllocator,
        linear: u64,
    ) -> u64 {
        self.leaf_entry_address(memory, frames, linear)
    }

    fn entry_size(&self) -> u64 {
        match self.mode {
            PagingMode::Bits32 => 4,
            PagingMode::Pae | PagingMode::Level4 => 8,
        }
    }

    fn read_entry(&self, memory: &GuestMemory, address: u64) -> u64 {
        match self.mode {
            PagingMode::Bits32 => u64::from(memory.read_u32(address)),
            PagingMode::Pae | PagingMode::Level4 => memory.read_u64(address),
        }
    }

    fn write_entry(&self, memory: &GuestMemory, address: u64, value: u64) {
        match self.mode {
            PagingMode::Bits32 => memory.write_u32(address, value as u32),
            PagingMode::Pae | PagingMode::Level4 => memory.write_u64(address, value),
        }
    }

    /// Index of `linear` in each level, root first.
    fn indices(&self, linear: u64) -> Vec<u64> {
        match self.mode {
            PagingMode::Bits32 => vec![(linear >> 22) & 0x3ff, (linear >> 12) & 0x3ff],
            PagingMode::Pae => vec![
                (linear >> 30) & 3,
                (linear >> 21) & 0x1ff,
                (linear >> 12) & 0x1ff,
            ],
            PagingMode::Level4 => vec![
                (linear >> 39) & 0x1ff,
                (linear >> 30) & 0x1ff,
                (linear >> 21) & 0x1ff,
                (linear >> 12) & 0x1ff,
            ],
        }
    }

    /// Walks to the leaf entry of `linear`, creating tables on the way.
    fn leaf_entry_address(
        &self,
        memory: &GuestMemory,
        frames: &mut FrameAllocator,
        linear: u64,
    ) -> u64 {
        let indices = self.indices(linear);
        let (leaf_index, upper) = indices.split_last().expect("at least two levels");
        let mut table = self.root;
        for (level, index) in upper.iter().enumerate() {
            let entry = table + index * self.entry_size();
            let value = self.read_entry(memory, entry);
            table = if value & pte::PRESENT != 0 {
                value & 0x000f_ffff_ffff_f000
            } else {
                let next = frames.allocate();
                memory.write(next, &[0; FRAME_SIZE]).expect("table frame");
                // PAE PDPTEs have no R/W, U/S or A bits (they are reserved).
                let bits = if self.mode == PagingMode::Pae && level == 0 {
                    pte::PRESENT
                } else {
                    pte::PRESENT | pte::WRITABLE | pte::USER
                };
                self.write_entry(memory, entry, next | bits);
                next
            };
        }
        table + leaf_index * self.entry_size()
    }
}
