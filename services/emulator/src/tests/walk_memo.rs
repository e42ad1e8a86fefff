//! Walks an [`Emulator`] remembers between instructions: a change the guest
//! makes to an entry above a page table, to CR3 or to EFER.NXE is seen by
//! the next instruction, which comes out as a fresh emulation of it does.

use super::guest::*;
use super::paging::{CODE, DATA, FRAME, bench, page_fault};
use crate::{Emulator, EmulatorConfig, Outcome, emulate_with};
use abi::ExitMessage;
use alloc::vec::Vec;

/// Where the other mapping of DATA points.
const OTHER_FRAME: u64 = 0x31_0000;
/// A page table made by hand for the other mapping.
const OTHER_TABLE: u64 = 0x32_0000;

const FORMATS: [Format; 4] = [Format::Bits32, Format::Pae, Format::Level4, Format::Level5];
const VALUE: u32 = 0x1234_5678;

/// `mov [rbx], eax` with `emulator`, which remembers the walks of the
/// instructions before; a fresh emulation on a copy of the guest must come
/// out the same, in its outcome and in the guest's memory.
fn store(emulator: &mut Emulator, guest: &mut TestGuest, exit: &ExitMessage) -> Outcome {
    let mut copy = guest.clone();
    let fresh = emulate_with(&mut copy, exit, &EmulatorConfig::DEFAULT);
    let remembering = emulator.emulate(guest, exit);
    assert_eq!(remembering, fresh);
    for frame in [FRAME, OTHER_FRAME] {
        assert_eq!(
            guest.peek(frame, 0x20),
            copy.peek(frame, 0x20),
            "{frame:#x}"
        );
    }
    remembering
}

/// Two stores: the first sets the accessed and dirty bits, the second
/// walks entries that have them, which the emulator then remembers.
fn remember_walks(emulator: &mut Emulator, guest: &mut TestGuest, exit: &ExitMessage) {
    for _ in 0..2 {
        retired(store(emulator, guest, exit));
    }
}

/// `mov [rbx], eax` with DATA mapped to FRAME with `flags`; OTHER_FRAME
/// exists but is not mapped.
fn setup(format: Format, flags: u64) -> (TestGuest, ExitMessage, PageTables) {
    let (mut guest, exit, tables) = bench(format, flags, &[0x89, 0x03]);
    guest.add_page(OTHER_FRAME);
    (guest, exit, tables)
}

/// The depth of the page-directory entry for DATA.
fn directory_depth(tables: &PageTables) -> usize {
    tables.shifts_len() - 2
}

#[test]
fn a_cleared_present_bit_above_the_page_table_is_seen() {
    for format in FORMATS {
        let (mut guest, exit, tables) = setup(format, RW);
        let mut emulator = Emulator::default();
        // The entries above DATA's page table that the code page does not
        // share (clearing those would fault the fetch).
        let own = (0..tables.shifts_len() - 1).filter(|&depth| {
            tables.entry_address(&guest, DATA, depth) != tables.entry_address(&guest, CODE, depth)
        });
        for depth in own.collect::<Vec<_>>() {
            remember_walks(&mut emulator, &mut guest, &exit);
            tables.edit(&mut guest, DATA, depth, |entry| entry & !P);
            let outcome = store(&mut emulator, &mut guest, &exit);
            assert_eq!(outcome, page_fault(0x2, DATA + 0x10), "{format:?} {depth}");
            tables.edit(&mut guest, DATA, depth, |entry| entry | P);
        }
        retired(store(&mut emulator, &mut guest, &exit));
        assert_eq!(guest.peek_u32(FRAME + 0x10), VALUE, "{format:?}");
    }
}

#[test]
fn a_directory_entry_pointed_at_another_page_table_is_followed() {
    for format in FORMATS {
        let (mut guest, exit, tables) = setup(format, RW);
        let mut emulator = Emulator::default();
        remember_walks(&mut emulator, &mut guest, &exit);
        // A page table that maps DATA's page to OTHER_FRAME.
        guest.add_page(OTHER_TABLE);
        let (index, size) = match format {
            Format::Bits32 => ((DATA >> 12) & 0x3ff, 4),
            _ => ((DATA >> 12) & 0x1ff, 8),
        };
        let entry = (OTHER_FRAME | P | RW | A | D).to_le_bytes();
        guest.poke(OTHER_TABLE + index * size, &entry[..size as usize]);
        tables.edit(&mut guest, DATA, directory_depth(&tables), |entry| {
            (entry & 0xfff) | OTHER_TABLE
        });
        retired(store(&mut emulator, &mut guest, &exit));
        assert_eq!(guest.peek_u32(OTHER_FRAME + 0x10), VALUE, "{format:?}");
    }
}

#[test]
fn a_user_bit_cleared_above_the_page_table_denies_user_code() {
    for format in FORMATS {
        let (mut guest, mut exit, tables) = setup(format, RW | US);
        exit.state.cpl = 3;
        let mut emulator = Emulator::default();
        remember_walks(&mut emulator, &mut guest, &exit);
        tables.edit(&mut guest, DATA, directory_depth(&tables), |entry| {
            entry & !US
        });
        let outcome = store(&mut emulator, &mut guest, &exit);
        assert_eq!(outcome, page_fault(0x7, DATA + 0x10), "{format:?}");
    }
}

#[test]
fn a_new_cr3_gets_its_own_walks() {
    for format in FORMATS {
        let (mut guest, mut exit, _) = setup(format, RW);
        let mut emulator = Emulator::default();
        remember_walks(&mut emulator, &mut guest, &exit);
        let mut other = PageTables::new(&mut guest, format, 0x20_0000);
        other.map(&mut guest, CODE, CODE, RW | US);
        other.map(&mut guest, DATA, OTHER_FRAME, RW);
        exit.state.cr3 = other.cr3();
        retired(store(&mut emulator, &mut guest, &exit));
        assert_eq!(guest.peek_u32(OTHER_FRAME + 0x10), VALUE, "{format:?}");
    }
}

#[test]
fn clearing_efer_nxe_makes_a_remembered_xd_bit_reserved() {
    for format in [Format::Pae, Format::Level4, Format::Level5] {
        let (mut guest, mut exit, tables) = setup(format, RW);
        exit.state.efer |= 0x800;
        tables.edit(&mut guest, DATA, directory_depth(&tables), |entry| {
            entry | NX
        });
        let mut emulator = Emulator::default();
        remember_walks(&mut emulator, &mut guest, &exit);
        exit.state.efer &= !0x800;
        let outcome = store(&mut emulator, &mut guest, &exit);
        assert_eq!(outcome, page_fault(0xb, DATA + 0x10), "{format:?}");
    }
}
