//! A guest address space for one test: guest memory, a frame allocator, page
//! tables of one paging mode, and a record of what is mapped where, so tests
//! can place code and data at guest-linear addresses and read them back.

use crate::memory::{FRAME_SIZE, GuestMemory};
use crate::paging::{FrameAllocator, PageAttributes, PageTables, PagingMode};
use abi::ExitMessage;
use std::collections::BTreeMap;

/// Guest memory plus page tables and the linear-to-frame map built so far.
pub struct Scene {
    pub memory: GuestMemory,
    pub frames: FrameAllocator,
    pub tables: PageTables,
    mapped: BTreeMap<u64, u64>,
}

impl Scene {
    /// A scene of `frames` frames with empty page tables of `mode`.
    pub fn new(mode: PagingMode, frames: usize) -> Scene {
        let memory = GuestMemory::new(frames);
        let mut allocator = FrameAllocator::new(0x1000, memory.size());
        let tables = PageTables::new(mode, &memory, &mut allocator);
        Scene {
            memory,
            frames: allocator,
            tables,
            mapped: BTreeMap::new(),
        }
    }

    /// Maps the page at `linear` to a fresh frame and returns the frame.
    pub fn map_new(&mut self, linear: u64, attributes: PageAttributes) -> u64 {
        let frame = self.frames.allocate();
        self.map(linear, frame, attributes);
        frame
    }

    /// Maps the page at `linear` to `frame`.
    pub fn map(&mut self, linear: u64, frame: u64, attributes: PageAttributes) {
        let page = linear & !(FRAME_SIZE as u64 - 1);
        self.tables
            .map(&self.memory, &mut self.frames, page, frame, attributes);
        self.mapped.insert(page, frame);
    }

    /// Removes the mapping of the page at `linear`.
    pub fn unmap(&mut self, linear: u64) {
        let page = linear & !(FRAME_SIZE as u64 - 1);
        self.tables.unmap(&self.memory, &mut self.frames, page);
        self.mapped.remove(&page);
    }

    /// The guest-physical address of `linear`, if its page was mapped here.
    pub fn translate(&self, linear: u64) -> Option<u64> {
        let page = linear & !(FRAME_SIZE as u64 - 1);
        self.mapped.get(&page).map(|frame| frame + (linear - page))
    }

    /// Writes `bytes` at `linear` (may cross mapped pages).
    pub fn write_linear(&self, linear: u64, bytes: &[u8]) {
        for (index, byte) in bytes.iter().enumerate() {
            let gpa = self
                .translate(linear + index as u64)
                .expect("write_linear to an unmapped page");
            self.memory
                .write(gpa, &[*byte])
                .expect("mapped frames lie in memory");
        }
    }

    /// Reads `len` bytes at `linear` (may cross mapped pages).
    pub fn read_linear(&self, linear: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|index| {
                let gpa = self
                    .translate(linear + index)
                    .expect("read_linear from an unmapped page");
                let mut byte = [0];
                self.memory
                    .read(gpa, &mut byte)
                    .expect("mapped frames lie in memory");
                byte[0]
            })
            .collect()
    }

    /// An exit in this scene's paging mode: 64-bit mode for 4-level paging,
    /// 32-bit protected mode (CS.D = 1) for PAE and 32-bit paging.
    pub fn exit(&self, cpl: u8, rip: u64) -> ExitMessage {
        match self.tables.mode() {
            PagingMode::Level4 => crate::state::long_mode(self.tables.cr3(), cpl, rip),
            PagingMode::Pae => {
                crate::state::protected_mode32(Some((true, self.tables.cr3())), cpl, rip)
            }
            PagingMode::Bits32 => {
                crate::state::protected_mode32(Some((false, self.tables.cr3())), cpl, rip)
            }
        }
    }
}
