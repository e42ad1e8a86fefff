//! An in-memory guest (a sparse map of 4 KiB pages), exit-state builders for
//! each mode, and a page-table builder for the four paging formats.

use crate::{Guest, MemoryError, Outcome, Retired};
use abi::{ExitMessage, GuestState, SegmentRegister, ValidGroups, VectorRegisters};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Guest-physical memory made of the pages a test creates; touching any
/// other page is `MemoryError::NoAccess`.
#[derive(Clone, Default)]
pub struct TestGuest {
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
    /// Every compare-exchange: (pages, offset, width).
    pub compare_exchanges: Vec<([u64; 2], u16, usize)>,
    /// Every plain write: (gpa, length).
    pub writes: Vec<(u64, usize)>,
    /// When set, the next compare-exchange on data (not a paging entry) fails
    /// as if another CPU had changed the value first.
    pub lose_next_race: bool,
}

impl TestGuest {
    pub fn new() -> TestGuest {
        TestGuest::default()
    }

    /// Creates (zeroed) the page holding `gpa`.
    pub fn add_page(&mut self, gpa: u64) {
        self.pages
            .entry(gpa & !0xfff)
            .or_insert_with(|| Box::new([0; 4096]));
    }

    /// Stores bytes (creating pages as needed).
    pub fn poke(&mut self, gpa: u64, data: &[u8]) {
        for (index, byte) in data.iter().enumerate() {
            let address = gpa + index as u64;
            self.add_page(address);
            if let Some(page) = self.pages.get_mut(&(address & !0xfff)) {
                page[(address & 0xfff) as usize] = *byte;
            }
        }
    }

    pub fn peek(&self, gpa: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|index| {
                let address = gpa + index;
                self.pages
                    .get(&(address & !0xfff))
                    .map_or(0, |page| page[(address & 0xfff) as usize])
            })
            .collect()
    }

    pub fn peek_u64(&self, gpa: u64) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.peek(gpa, 8));
        u64::from_le_bytes(bytes)
    }

    pub fn peek_u32(&self, gpa: u64) -> u32 {
        self.peek_u64(gpa) as u32
    }

    fn page(&mut self, gpa: u64) -> Result<&mut [u8; 4096], MemoryError> {
        self.pages
            .get_mut(&(gpa & !0xfff))
            .map(|page| &mut **page)
            .ok_or(MemoryError::NoAccess)
    }
}

impl Guest for TestGuest {
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let offset = (gpa & 0xfff) as usize;
        assert!(offset + buf.len() <= 4096, "read crosses a page");
        let page = self.page(gpa)?;
        buf.copy_from_slice(&page[offset..offset + buf.len()]);
        Ok(())
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let offset = (gpa & 0xfff) as usize;
        assert!(offset + data.len() <= 4096, "write crosses a page");
        let page = self.page(gpa)?;
        page[offset..offset + data.len()].copy_from_slice(data);
        self.writes.push((gpa, data.len()));
        Ok(())
    }

    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError> {
        let len = expected.len();
        assert!(matches!(len, 1 | 2 | 4 | 8 | 16));
        assert_eq!(new.len(), len);
        assert_eq!(current.len(), len);
        assert!(usize::from(offset) < 4096);
        self.compare_exchanges.push((pages, offset, len));
        let address = |index: usize| {
            let at = usize::from(offset) + index;
            if at < 4096 {
                pages[0] + at as u64
            } else {
                pages[1] + (at - 4096) as u64
            }
        };
        for (index, byte) in current.iter_mut().enumerate() {
            let at = address(index);
            *byte = self.page(at)?[(at & 0xfff) as usize];
        }
        // A paging-structure update is 4 or 8 bytes at an aligned offset with
        // only A/D bits changing; the data tests use other shapes too, so the
        // injected race applies to whatever comes first.
        if self.lose_next_race {
            self.lose_next_race = false;
            return Ok(false);
        }
        if current != expected {
            return Ok(false);
        }
        for (index, byte) in new.iter().enumerate() {
            let at = address(index);
            self.page(at)?[(at & 0xfff) as usize] = *byte;
        }
        Ok(true)
    }
}

pub const CODE_SEG: usize = 1;

fn segment(selector: u16, access_rights: u32, base: u64, limit: u32) -> SegmentRegister {
    SegmentRegister {
        selector,
        reserved0: 0,
        access_rights,
        limit,
        reserved1: 0,
        base,
    }
}

/// Flat read/write data segment (32-bit, present, DPL `dpl`).
pub fn data_segment(selector: u16, dpl: u32) -> SegmentRegister {
    segment(selector, 0xc093 | (dpl << 5), 0, 0xffff_ffff)
}

fn exit_with(state: GuestState) -> ExitMessage {
    ExitMessage {
        abi_major: 1,
        abi_minor: 0,
        vcpu: 0,
        sequence: 1,
        reason: 48,
        valid: ValidGroups::GPRS
            | ValidGroups::CONTROL
            | ValidGroups::SEGMENTS
            | ValidGroups::SSE
            | ValidGroups::AVX,
        qualification: 0,
        guest_physical: 0,
        guest_linear: 0,
        state,
        vectors: VectorRegisters::default(),
        ldtr: SegmentRegister::default(),
    }
}

/// 64-bit mode, CPL 0, 4-level paging with CR3 = `cr3`.
pub fn long_mode(cr3: u64) -> ExitMessage {
    let mut state = GuestState {
        rflags: 0x2,
        cr0: 0x8005_0033,
        cr3,
        cr4: 0x406a0,
        efer: 0xd00,
        xcr0: 0x7,
        ..GuestState::default()
    };
    for seg in &mut state.segments {
        *seg = data_segment(0x10, 0);
    }
    state.segments[CODE_SEG] = segment(0x08, 0xa09b, 0, 0xffff_ffff);
    exit_with(state)
}

/// 32-bit protected mode, flat segments, paging off.
pub fn protected_mode() -> ExitMessage {
    let mut state = GuestState {
        rflags: 0x2,
        cr0: 0x11,
        cr4: 0x600,
        ..GuestState::default()
    };
    for seg in &mut state.segments {
        *seg = data_segment(0x10, 0);
    }
    state.segments[CODE_SEG] = segment(0x08, 0xc09b, 0, 0xffff_ffff);
    exit_with(state)
}

/// Real mode: every segment register `selector`, base selector*16, 64K limit.
pub fn real_mode(selector: u16) -> ExitMessage {
    let mut state = GuestState {
        rflags: 0x2,
        cr0: 0x10,
        ..GuestState::default()
    };
    for seg in &mut state.segments {
        *seg = segment(selector, 0x93, u64::from(selector) * 16, 0xffff);
    }
    state.segments[CODE_SEG] = segment(selector, 0x9b, u64::from(selector) * 16, 0xffff);
    exit_with(state)
}

/// Places `code` at guest-physical `gpa` and points RIP at `rip`.
pub fn load_code(guest: &mut TestGuest, exit: &mut ExitMessage, gpa: u64, rip: u64, code: &[u8]) {
    guest.poke(gpa, code);
    exit.state.rip = rip;
}

/// The retired state, or a panic naming the outcome.
pub fn retired(outcome: Outcome) -> Retired {
    match outcome {
        Outcome::Retired(retired) => retired,
        other => panic!("expected Retired, got {other:?}"),
    }
}

/// Paging formats the page-table builder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Bits32,
    Pae,
    Level4,
    Level5,
}

/// Builds page tables in guest memory from a bump allocator.
pub struct PageTables {
    pub format: Format,
    pub root: u64,
    next_table: u64,
}

pub const P: u64 = 1;
pub const RW: u64 = 2;
pub const US: u64 = 4;
pub const A: u64 = 0x20;
pub const D: u64 = 0x40;
pub const PS: u64 = 0x80;
pub const NX: u64 = 1 << 63;

impl PageTables {
    /// Tables are allocated from `table_area` upward.
    pub fn new(guest: &mut TestGuest, format: Format, table_area: u64) -> PageTables {
        guest.add_page(table_area);
        PageTables {
            format,
            root: table_area,
            next_table: table_area + 0x1000,
        }
    }

    /// The CR3 value (the PDPT for PAE is at the root page start).
    pub fn cr3(&self) -> u64 {
        self.root
    }

    /// How many levels the format has.
    pub fn shifts_len(&self) -> usize {
        self.shifts().len()
    }

    fn entry_size(&self) -> u64 {
        if self.format == Format::Bits32 { 4 } else { 8 }
    }

    fn shifts(&self) -> &'static [u32] {
        match self.format {
            Format::Bits32 => &[22, 12],
            Format::Pae => &[30, 21, 12],
            Format::Level4 => &[39, 30, 21, 12],
            Format::Level5 => &[48, 39, 30, 21, 12],
        }
    }

    fn index(&self, linear: u64, depth: usize, shift: u32) -> u64 {
        let bits = if self.format == Format::Bits32 { 10 } else { 9 };
        let mask = if self.format == Format::Pae && depth == 0 {
            3
        } else {
            (1 << bits) - 1
        };
        (linear >> shift) & mask
    }

    fn read(&self, guest: &TestGuest, gpa: u64) -> u64 {
        if self.entry_size() == 4 {
            u64::from(guest.peek_u32(gpa))
        } else {
            guest.peek_u64(gpa)
        }
    }

    fn write(&self, guest: &mut TestGuest, gpa: u64, value: u64) {
        let bytes = value.to_le_bytes();
        guest.poke(gpa, &bytes[..self.entry_size() as usize]);
    }

    /// The guest-physical address of the entry for `linear` at `depth`.
    pub fn entry_address(&self, guest: &TestGuest, linear: u64, depth: usize) -> u64 {
        let mut table = self.root;
        for (level, &shift) in self.shifts().iter().enumerate() {
            let gpa = table + self.index(linear, level, shift) * self.entry_size();
            if level == depth {
                return gpa;
            }
            table = self.read(guest, gpa) & 0x000f_ffff_ffff_f000;
        }
        panic!("no such depth");
    }

    /// Maps the 4 KiB page at `linear` to `physical` with leaf flags `flags`
    /// (P is added); intermediate entries get P|RW|US (PDPTEs only P).
    pub fn map(&mut self, guest: &mut TestGuest, linear: u64, physical: u64, flags: u64) {
        self.map_at_depth(guest, linear, physical, flags, self.shifts().len() - 1);
    }

    /// Maps a large page whose leaf is at `depth` (PS is added).
    pub fn map_large(
        &mut self,
        guest: &mut TestGuest,
        linear: u64,
        physical: u64,
        flags: u64,
        depth: usize,
    ) {
        self.map_at_depth(guest, linear, physical, flags | PS, depth);
    }

    fn map_at_depth(
        &mut self,
        guest: &mut TestGuest,
        linear: u64,
        physical: u64,
        flags: u64,
        leaf: usize,
    ) {
        guest.add_page(physical);
        let mut table = self.root;
        for (depth, &shift) in self.shifts().iter().enumerate() {
            let gpa = table + self.index(linear, depth, shift) * self.entry_size();
            if depth == leaf {
                self.write(guest, gpa, physical | flags | P);
                return;
            }
            let existing = self.read(guest, gpa);
            if existing & P != 0 {
                table = existing & 0x000f_ffff_ffff_f000;
                continue;
            }
            let new_table = self.next_table;
            self.next_table += 0x1000;
            guest.add_page(new_table);
            let upper = if self.format == Format::Pae && depth == 0 {
                P
            } else {
                P | RW | US
            };
            self.write(guest, gpa, new_table | upper);
            table = new_table;
        }
    }

    /// Rewrites the entry for `linear` at `depth` with `update(old)`.
    pub fn edit(
        &self,
        guest: &mut TestGuest,
        linear: u64,
        depth: usize,
        update: impl FnOnce(u64) -> u64,
    ) {
        let gpa = self.entry_address(guest, linear, depth);
        let old = self.read(guest, gpa);
        self.write(guest, gpa, update(old));
    }

    pub fn entry(&self, guest: &TestGuest, linear: u64, depth: usize) -> u64 {
        self.read(guest, self.entry_address(guest, linear, depth))
    }
}

/// The control state for `format` on top of `exit` (64-bit code for the
/// long formats, 32-bit otherwise).
pub fn paged_exit(format: Format, cr3: u64) -> ExitMessage {
    match format {
        Format::Level4 | Format::Level5 => {
            let mut exit = long_mode(cr3);
            if format == Format::Level5 {
                exit.state.cr4 |= 1 << 12;
            }
            exit
        }
        Format::Pae | Format::Bits32 => {
            let mut exit = protected_mode();
            exit.state.cr0 |= 0x8001_0000;
            exit.state.cr3 = cr3;
            if format == Format::Pae {
                exit.state.cr4 |= 0x20;
                exit.state.efer = 0x800;
            } else {
                exit.state.cr4 |= 0x10;
            }
            exit
        }
    }
}
