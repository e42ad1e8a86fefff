//! Page walks in all four formats: translation, large pages, accessed and
//! dirty bits, and #PF with the exact error code and CR2 for each check.

use super::guest::*;
use crate::fault::vector;
use crate::{EmulatorConfig, Exception, Outcome, emulate, emulate_with};
use abi::ExitMessage;

pub(super) const DATA: u64 = 0x4000_0000;
pub(super) const FRAME: u64 = 0x30_0000;
pub(super) const CODE: u64 = 0x8000;

pub(super) fn page_fault(error_code: u32, cr2: u64) -> Outcome {
    Outcome::Exception(Exception {
        vector: vector::PF,
        error_code: Some(error_code),
        cr2: Some(cr2),
    })
}

/// `mov [rbx/ebx], eax` (or the given code) at CODE with DATA mapped with
/// `flags` in `format`.
pub(super) fn bench(
    format: Format,
    flags: u64,
    code: &[u8],
) -> (TestGuest, ExitMessage, PageTables) {
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, format, 0x10_0000);
    tables.map(&mut guest, CODE, CODE, RW | US);
    tables.map(&mut guest, DATA, FRAME, flags);
    let mut exit = paged_exit(format, tables.cr3());
    load_code(&mut guest, &mut exit, CODE, CODE, code);
    exit.state.gprs[0] = 0x1234_5678;
    exit.state.gprs[3] = DATA + 0x10;
    (guest, exit, tables)
}

const FORMATS: [Format; 4] = [Format::Bits32, Format::Pae, Format::Level4, Format::Level5];

#[test]
fn store_translates_and_sets_accessed_and_dirty_in_every_format() {
    for format in FORMATS {
        let (mut guest, exit, tables) = bench(format, RW, &[0x89, 0x03]);
        retired(emulate(&mut guest, &exit));
        assert_eq!(guest.peek_u32(FRAME + 0x10), 0x1234_5678, "{format:?}");
        let depth = match format {
            Format::Bits32 => 2,
            Format::Pae => 3,
            Format::Level4 => 4,
            Format::Level5 => 5,
        };
        let leaf = tables.entry(&guest, DATA, depth - 1);
        assert_eq!(leaf & (A | D), A | D, "{format:?} leaf");
        for level in 0..depth - 1 {
            let entry = tables.entry(&guest, DATA, level);
            if format == Format::Pae && level == 0 {
                assert_eq!(entry & (A | D), 0, "PAE PDPTEs have no accessed bit");
            } else {
                assert_eq!(entry & (A | D), A, "{format:?} level {level}");
            }
        }
    }
}

#[test]
fn load_sets_accessed_but_not_dirty() {
    for format in FORMATS {
        let (mut guest, exit, tables) = bench(format, RW, &[0x8b, 0x03]);
        guest.poke(FRAME + 0x10, &[1, 2, 3, 4]);
        let done = retired(emulate(&mut guest, &exit));
        assert_eq!(done.gprs[0], 0x0403_0201);
        let last = tables.shifts_len() - 1;
        assert_eq!(tables.entry(&guest, DATA, last) & (A | D), A, "{format:?}");
    }
}

#[test]
fn not_present_gives_error_code_and_cr2_and_changes_nothing() {
    for format in FORMATS {
        let (mut guest, exit, tables) = bench(format, RW, &[0x89, 0x03]);
        tables.edit(&mut guest, DATA, tables.shifts_len() - 1, |e| e & !P);
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x2, DATA + 0x10),
            "{format:?}"
        );
        assert!(guest.writes.is_empty());
        // A user-mode read of the same page.
        let (mut guest, mut exit, tables) = bench(format, RW | US, &[0x8b, 0x03]);
        tables.edit(&mut guest, DATA, tables.shifts_len() - 1, |e| e & !P);
        exit.state.cpl = 3;
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x4, DATA + 0x10),
            "{format:?}"
        );
        let leaf = tables.entry_address(&guest, DATA, tables.shifts_len() - 1);
        let touched_leaf = guest
            .compare_exchanges
            .iter()
            .any(|(pages, offset, _)| pages[0] + u64::from(*offset) == leaf);
        assert!(!touched_leaf, "no accessed bit on a fault");
    }
}

#[test]
fn write_protection_user_and_supervisor() {
    for format in FORMATS {
        // User write to a read-only user page: P|W|U.
        let (mut guest, mut exit, _) = bench(format, US, &[0x89, 0x03]);
        exit.state.cpl = 3;
        assert_eq!(emulate(&mut guest, &exit), page_fault(0x7, DATA + 0x10));
        // User access to a supervisor page: P|U.
        let (mut guest, mut exit, _) = bench(format, RW, &[0x8b, 0x03]);
        exit.state.cpl = 3;
        assert_eq!(emulate(&mut guest, &exit), page_fault(0x5, DATA + 0x10));
        // Supervisor write to a read-only page: faults with CR0.WP only.
        let (mut guest, mut exit, _) = bench(format, 0, &[0x89, 0x03]);
        assert_eq!(emulate(&mut guest, &exit), page_fault(0x3, DATA + 0x10));
        exit.state.cr0 &= !(1 << 16);
        retired(emulate(&mut guest, &exit));
        assert_eq!(guest.peek_u32(FRAME + 0x10), 0x1234_5678);
    }
}

#[test]
fn no_execute_and_smep_on_fetch() {
    for format in [Format::Pae, Format::Level4, Format::Level5] {
        let (mut guest, exit, tables) = bench(format, RW, &[0x89, 0x03]);
        tables.edit(&mut guest, CODE, tables.shifts_len() - 1, |e| e | NX);
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x11, CODE),
            "{format:?}"
        );
        // Without EFER.NXE the NX bit is reserved: P|RSVD|I/D.
        let mut exit = exit;
        exit.state.efer &= !0x800;
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x9, CODE),
            "{format:?}"
        );
    }
    // SMEP: supervisor fetch from a user page (the code page is US).
    for format in FORMATS {
        let (mut guest, mut exit, _) = bench(format, RW, &[0x89, 0x03]);
        exit.state.cr4 |= 1 << 20;
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x11, CODE),
            "{format:?}"
        );
    }
}

#[test]
fn smap_depends_on_rflags_ac() {
    for format in FORMATS {
        let (mut guest, mut exit, _) = bench(format, RW | US, &[0x8b, 0x03]);
        exit.state.cr4 |= 1 << 21;
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(0x1, DATA + 0x10),
            "{format:?}"
        );
        exit.state.rflags |= 1 << 18;
        retired(emulate(&mut guest, &exit));
    }
}

#[test]
fn protection_keys_in_long_formats() {
    for format in [Format::Level4, Format::Level5] {
        let (mut guest, mut exit, tables) = bench(format, RW | US, &[0x89, 0x03]);
        tables.edit(&mut guest, DATA, tables.shifts_len() - 1, |e| e | (3 << 59));
        exit.state.cr4 |= 1 << 22;
        exit.state.cpl = 3;
        // Key 3 write-disabled: user write faults with P|W|U|PK.
        exit.state.pkru = 0b10 << 6;
        assert_eq!(emulate(&mut guest, &exit), page_fault(0x27, DATA + 0x10));
        // Access-disabled: a read faults too.
        exit.state.pkru = 0b01 << 6;
        let mut read = exit;
        guest.poke(CODE, &[0x8b, 0x03]);
        read.state.rip = CODE;
        assert_eq!(emulate(&mut guest, &read), page_fault(0x25, DATA + 0x10));
        read.state.pkru = 0;
        retired(emulate(&mut guest, &read));
    }
}

#[test]
fn reserved_bits_give_rsvd_error_code() {
    // PS in a PML4E is reserved (one the code's walk does not share).
    let (mut guest, mut exit, mut tables) = bench(Format::Level4, RW, &[0x89, 0x03]);
    let far = 0x80_0000_0000;
    tables.map(&mut guest, far, FRAME, RW);
    tables.edit(&mut guest, far, 0, |e| e | PS);
    exit.state.gprs[3] = far;
    assert_eq!(emulate(&mut guest, &exit), page_fault(0xb, far));
    // A physical-address bit above MAXPHYADDR in a PTE.
    let (mut guest, exit, tables) = bench(Format::Level4, RW, &[0x89, 0x03]);
    tables.edit(&mut guest, DATA, 3, |e| e | (1 << 45));
    let config = EmulatorConfig {
        physical_address_bits: 40,
        ..EmulatorConfig::DEFAULT
    };
    assert_eq!(
        emulate_with(&mut guest, &exit, &config),
        page_fault(0xb, DATA + 0x10)
    );
    // PAE PDPTE reserved bit 1.
    let (mut guest, exit, tables) = bench(Format::Pae, RW, &[0x89, 0x03]);
    tables.edit(&mut guest, DATA, 0, |e| e | 2);
    assert_eq!(emulate(&mut guest, &exit), page_fault(0xb, DATA + 0x10));
    // 2 MiB page with a reserved bit in 20:13.
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
    tables.map(&mut guest, CODE, CODE, RW);
    tables.map_large(&mut guest, DATA, 0x60_0000 | (1 << 14), RW, 2);
    let mut exit = paged_exit(Format::Level4, tables.cr3());
    load_code(&mut guest, &mut exit, CODE, CODE, &[0x89, 0x03]);
    exit.state.gprs[3] = DATA;
    assert_eq!(emulate(&mut guest, &exit), page_fault(0xb, DATA));
}

#[test]
fn large_pages_in_each_format() {
    let cases = [
        (Format::Bits32, 0, 0x40_0000u64),
        (Format::Pae, 1, 0x20_0000),
        (Format::Level4, 2, 0x20_0000),
        (Format::Level4, 1, 0x4000_0000),
        (Format::Level5, 3, 0x20_0000),
        (Format::Level5, 2, 0x4000_0000),
    ];
    for (format, depth, frame) in cases {
        let mut guest = TestGuest::new();
        let mut tables = PageTables::new(&mut guest, format, 0x10_0000);
        tables.map(&mut guest, CODE, CODE, RW);
        let linear = 0x8000_0000u64;
        tables.map_large(&mut guest, linear, frame, RW, depth);
        let mut exit = paged_exit(format, tables.cr3());
        load_code(&mut guest, &mut exit, CODE, CODE, &[0x89, 0x03]);
        exit.state.gprs[0] = 0xaabb_ccdd;
        exit.state.gprs[3] = linear + 0x12344;
        guest.add_page(frame + 0x12000);
        retired(emulate(&mut guest, &exit));
        assert_eq!(
            guest.peek_u32(frame + 0x12344),
            0xaabb_ccdd,
            "{format:?} depth {depth}"
        );
        assert_eq!(tables.entry(&guest, linear, depth) & (A | D), A | D);
    }
}

#[test]
fn split_plain_store_is_two_partial_writes() {
    for format in FORMATS {
        let mut guest = TestGuest::new();
        let mut tables = PageTables::new(&mut guest, format, 0x10_0000);
        tables.map(&mut guest, CODE, CODE, RW);
        tables.map(&mut guest, DATA, FRAME, RW);
        tables.map(&mut guest, DATA + 0x1000, 0x50_0000, RW);
        let mut exit = paged_exit(format, tables.cr3());
        load_code(&mut guest, &mut exit, CODE, CODE, &[0x89, 0x03]);
        exit.state.gprs[0] = 0x4433_2211;
        exit.state.gprs[3] = DATA + 0xffe;
        retired(emulate(&mut guest, &exit));
        assert_eq!(guest.peek(FRAME + 0xffe, 2), [0x11, 0x22]);
        assert_eq!(guest.peek(0x50_0000, 2), [0x33, 0x44]);
        assert_eq!(guest.writes, [(FRAME + 0xffe, 2), (0x50_0000, 2)]);
        // If the second page is not present nothing is written and CR2 is
        // the start of the second page.
        let mut guest2 = TestGuest::new();
        let mut tables2 = PageTables::new(&mut guest2, format, 0x10_0000);
        tables2.map(&mut guest2, CODE, CODE, RW);
        tables2.map(&mut guest2, DATA, FRAME, RW);
        guest2.poke(CODE, &[0x89, 0x03]);
        assert_eq!(emulate(&mut guest2, &exit), page_fault(0x2, DATA + 0x1000));
        assert!(guest2.writes.is_empty());
    }
}

#[test]
fn instruction_fetch_crosses_a_page_boundary() {
    // mov [rbx], eax encoded long (89 83 00 00 00 00: [ebx+disp32]) so the
    // bytes run from CODE+0xffc into the next page, mapped elsewhere.
    for format in FORMATS {
        let mut guest = TestGuest::new();
        let mut tables = PageTables::new(&mut guest, format, 0x10_0000);
        tables.map(&mut guest, CODE, CODE, RW);
        tables.map(&mut guest, CODE + 0x1000, 0x70_0000, RW);
        tables.map(&mut guest, DATA, FRAME, RW);
        let mut exit = paged_exit(format, tables.cr3());
        guest.poke(CODE + 0xffc, &[0x89, 0x83, 0x10, 0x00]);
        guest.poke(0x70_0000, &[0x00, 0x00]);
        exit.state.rip = CODE + 0xffc;
        exit.state.gprs[0] = 0x99;
        exit.state.gprs[3] = DATA;
        let done = retired(emulate(&mut guest, &exit));
        assert_eq!(done.rip, CODE + 0x1002);
        assert_eq!(guest.peek_u32(FRAME + 0x10), 0x99);
        // Second code page not present: #PF on fetch at its start.
        tables.edit(&mut guest, CODE + 0x1000, tables.shifts_len() - 1, |e| {
            e & !P
        });
        // I/D is reported where NX exists (EFER.NXE with PAE-style paging).
        let fetch = if format == Format::Bits32 { 0 } else { 0x10 };
        assert_eq!(
            emulate(&mut guest, &exit),
            page_fault(fetch, CODE + 0x1000),
            "{format:?}"
        );
    }
}

#[test]
fn accessed_bit_race_is_retried_inside_the_walk() {
    let (mut guest, exit, tables) = bench(Format::Level4, RW, &[0x89, 0x03]);
    guest.lose_next_race = true;
    retired(emulate(&mut guest, &exit));
    assert_eq!(tables.entry(&guest, DATA, 3) & (A | D), A | D);
    // With one attempt a lost race retries the instruction.
    let (mut guest, exit, _) = bench(Format::Level4, RW, &[0x89, 0x03]);
    guest.lose_next_race = true;
    let config = EmulatorConfig {
        page_walk_attempts: 1,
        ..EmulatorConfig::DEFAULT
    };
    assert_eq!(emulate_with(&mut guest, &exit, &config), Outcome::Retry);
    assert!(guest.writes.is_empty());
}

#[test]
fn implicit_supervisor_accesses_ignore_rflags_ac_under_smap() {
    use crate::paging::{
        AccessKind, ControlState, PagingContext, PhysicalMasks, WalkCache, translate,
    };
    let (mut guest, exit, _) = bench(Format::Level4, RW | US, &[0x8b, 0x03]);
    let control = ControlState {
        cr0: exit.state.cr0,
        cr3: exit.state.cr3,
        cr4: exit.state.cr4 | (1 << 21),
        efer: exit.state.efer,
        pkru: 0,
    };
    let ctx = PagingContext::new(&control, true, &PhysicalMasks::new(52), 1);
    let explicit = AccessKind::data(false, 0);
    let implicit = AccessKind::implicit_supervisor(false);
    let mut cache = WalkCache::default();
    assert_eq!(
        translate(&mut guest, &ctx, DATA, explicit, &mut cache),
        Ok(FRAME)
    );
    let fault = translate(&mut guest, &ctx, DATA, implicit, &mut cache);
    assert_eq!(fault, Err(crate::fault::Fault::page_fault(0x1, DATA)));
}
