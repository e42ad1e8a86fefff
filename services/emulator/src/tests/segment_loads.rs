//! Segment-register loads (MOV Sreg, POP Sreg) against the SDM in every
//! mode: real (unreal-mode limits kept), virtual-8086, 16/32-bit protected,
//! compatibility and 64-bit; GDT and LDT selectors; null selectors; every
//! fault with its vector and error code; the accessed bit and its race;
//! interrupt blocking by MOV SS and POP SS.

use super::guest::*;
use crate::fault::vector;
use crate::{Exception, Outcome, Retired, emulate};
use abi::{ExitMessage, Segment, SegmentLoad, SegmentRegister, ValidGroups};
use alloc::format;

pub const GDT: u64 = 0x5000;
pub const LDT: u64 = 0x6000;
pub const DATA: u64 = 0x2000;
const CODE: u64 = 0x8000;

pub const ES: usize = Segment::Es as usize;
pub const SS: usize = Segment::Ss as usize;
pub const DS: usize = Segment::Ds as usize;
pub const FS: usize = Segment::Fs as usize;
pub const GS: usize = Segment::Gs as usize;
pub const RAX: usize = 0;
pub const RBX: usize = 3;

/// Flat 4 GiB read/write data, not yet accessed, DPL 0.
pub const FLAT_DATA: u64 = descriptor(0, 0xf_ffff, 0x92, 0xc);

/// An 8-byte segment descriptor: `access` is the access byte (type, S,
/// DPL, P), `flags` the nibble G, D/B, L, AVL.
pub const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | ((base as u64 & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((flags as u64) & 0xf) << 52)
        | ((base as u64 >> 24) << 56)
}

/// A guest with a GDT (16 entries at [`GDT`]) and an LDT (8 entries at
/// [`LDT`]), paging off, data at [`DATA`].
pub struct Bench {
    pub guest: TestGuest,
    pub exit: ExitMessage,
    /// Guest-physical addresses of the GDT and the LDT.
    pub gdt_frame: u64,
    pub ldt_frame: u64,
}

impl Bench {
    /// 32-bit (or 16-bit) protected mode, CPL 0.
    pub fn protected(code: &[u8], code_32bit: bool) -> Bench {
        let mut exit = protected_mode();
        if !code_32bit {
            exit.state.segments[CODE_SEG].access_rights = 0x9b;
            exit.state.segments[SS].access_rights = 0x93;
            exit.state.segments[SS].limit = 0xffff;
        }
        Bench::with_tables(exit, code)
    }

    /// Adds descriptor tables, data and code to `exit`.
    pub fn with_tables(mut exit: ExitMessage, code: &[u8]) -> Bench {
        let mut guest = TestGuest::new();
        load_code(&mut guest, &mut exit, CODE, CODE, code);
        guest.add_page(DATA);
        guest.add_page(GDT);
        guest.add_page(LDT);
        exit.state.gdtr.base = GDT;
        exit.state.gdtr.limit = 16 * 8 - 1;
        exit.valid |= ValidGroups::LDTR;
        exit.ldtr = SegmentRegister {
            selector: 0x40,
            access_rights: 0x82,
            limit: 8 * 8 - 1,
            base: LDT,
            ..SegmentRegister::default()
        };
        exit.state.gprs[RBX] = DATA;
        Bench {
            guest,
            exit,
            gdt_frame: GDT,
            ldt_frame: LDT,
        }
    }

    pub fn gdt(&mut self, index: u64, descriptor: u64) {
        self.guest
            .poke(self.gdt_frame + index * 8, &descriptor.to_le_bytes());
    }

    pub fn ldt(&mut self, index: u64, descriptor: u64) {
        self.guest
            .poke(self.ldt_frame + index * 8, &descriptor.to_le_bytes());
    }

    pub fn run(&mut self) -> Outcome {
        emulate(&mut self.guest, &self.exit)
    }

    /// Runs a load that must fault: the exception, and nothing written
    /// (but for accessed bits in the page tables).
    pub fn fault(&mut self) -> Exception {
        match self.run() {
            Outcome::Exception(exception) => {
                assert!(self.guest.writes.is_empty(), "{:?}", self.guest.writes);
                assert_eq!(
                    self.table_updates(),
                    0,
                    "{:?}",
                    self.guest.compare_exchanges
                );
                exception
            }
            other => panic!("expected an exception, got {other:?}"),
        }
    }

    /// How many compare-exchanges touched the descriptor tables or the data
    /// page (not counting the page walk's accessed and dirty bits).
    pub fn table_updates(&self) -> usize {
        let frames = [self.gdt_frame, self.ldt_frame, DATA].map(|gpa| gpa & !0xfff);
        self.guest
            .compare_exchanges
            .iter()
            .filter(|(pages, ..)| pages.iter().any(|page| frames.contains(page)))
            .count()
    }

    /// Runs a load that must retire: the state and the loaded register.
    pub fn load(&mut self) -> (Retired, SegmentLoad) {
        let done = retired(self.run());
        let load = done.segment.expect("a segment register was loaded");
        (done, load)
    }
}

/// An exception with a selector error code.
pub fn with_code(vector: u8, code: u32) -> Exception {
    Exception {
        vector,
        error_code: Some(code),
        cr2: None,
    }
}

pub fn register(selector: u16, access_rights: u32, limit: u32, base: u64) -> SegmentRegister {
    SegmentRegister {
        selector,
        access_rights,
        limit,
        base,
        ..SegmentRegister::default()
    }
}

fn segment_load(register: usize, value: SegmentRegister, flags: u8) -> SegmentLoad {
    SegmentLoad {
        value,
        register: register as u8,
        flags,
        reserved: [0; 6],
    }
}

#[test]
fn mov_ds_from_memory_loads_a_gdt_descriptor_and_sets_its_accessed_bit() {
    // mov ds, [ebx]: selector 0x18 (GDT 3, RPL 0).
    let mut bench = Bench::protected(&[0x8e, 0x1b], true);
    bench.guest.poke(DATA, &0x18u16.to_le_bytes());
    bench.gdt(3, descriptor(0x1234_5678, 0xf_ffff, 0x92, 0xc));
    let (done, load) = bench.load();
    assert_eq!(
        load,
        segment_load(DS, register(0x18, 0xc093, 0xffff_ffff, 0x1234_5678), 0)
    );
    assert_eq!(done.rip, CODE + 2);
    assert_eq!(done.gprs, bench.exit.state.gprs);
    assert_eq!(bench.guest.peek(GDT + 3 * 8 + 5, 1), [0x93]);
    assert_eq!(bench.guest.compare_exchanges, [([GDT, GDT], 0x1d, 1)]);
    // Already accessed: no write at all. AVL, byte granularity and a
    // 16-bit default size come through.
    let mut bench = Bench::protected(&[0x8e, 0x1b], true);
    bench.guest.poke(DATA, &0x18u16.to_le_bytes());
    bench.gdt(3, descriptor(0xab_cdef, 0x1_2345, 0x93, 0x1));
    let (_, load) = bench.load();
    assert_eq!(load.value, register(0x18, 0x1093, 0x1_2345, 0xab_cdef));
    assert!(bench.guest.compare_exchanges.is_empty());
    assert!(bench.guest.writes.is_empty());
}

#[test]
fn a_lost_accessed_bit_race_retries_with_nothing_changed() {
    let mut bench = Bench::protected(&[0x8e, 0x1b], true);
    bench.guest.poke(DATA, &0x18u16.to_le_bytes());
    bench.gdt(3, FLAT_DATA);
    bench.guest.lose_next_race = true;
    assert_eq!(bench.run(), Outcome::Retry);
    assert_eq!(bench.guest.peek_u64(GDT + 24), FLAT_DATA);
    // The re-execution sets it.
    let (_, load) = bench.load();
    assert_eq!(load.value.access_rights, 0xc093);
    assert_eq!(bench.guest.peek_u64(GDT + 24), FLAT_DATA | 1 << 40);
}

#[test]
fn mov_ss_blocks_interrupts_and_each_register_is_named() {
    // mov es/ss/ds/fs/gs, ax (8e c0 + reg << 3), selector 0x10.
    for (reg, segment) in [(0u8, ES), (2, SS), (3, DS), (4, FS), (5, GS)] {
        let mut bench = Bench::protected(&[0x8e, 0xc0 | reg << 3], true);
        bench.exit.state.gprs[RAX] = 0xffff_0010;
        bench.gdt(2, FLAT_DATA);
        let (done, load) = bench.load();
        let flags = if segment == SS {
            SegmentLoad::BLOCKS_INTERRUPTS
        } else {
            0
        };
        assert_eq!(
            load,
            segment_load(segment, register(0x10, 0xc093, 0xffff_ffff, 0), flags)
        );
        assert_eq!(done.rip, CODE + 2);
    }
    // 8e /1 (CS) and /6, /7 (reserved) are #UD, memory or register form,
    // before any memory is touched.
    for code in [
        &[0x8e, 0xc8][..],
        &[0x8e, 0x0b],
        &[0x8e, 0x33],
        &[0x66, 0x8e, 0xf8],
    ] {
        let mut bench = Bench::protected(code, true);
        assert_eq!(
            bench.run(),
            Outcome::Exception(Exception {
                vector: vector::UD,
                error_code: None,
                cr2: None,
            }),
            "{code:02x?}"
        );
    }
}

/// (descriptor, selector, CPL, expected fault) for a DS load.
type Case = (u64, u16, u8, Option<Exception>);

#[test]
fn data_segment_type_privilege_and_presence_faults() {
    let gp = |selector: u32| Some(with_code(vector::GP, selector));
    let np = |selector: u32| Some(with_code(vector::NP, selector));
    let cases: &[Case] = &[
        // Read-only data, DPL 0, RPL 0, CPL 0.
        (descriptor(0, 0xffff, 0x90, 0), 0x18, 0, None),
        // Expand-down data.
        (descriptor(0, 0xfff, 0x96, 4), 0x18, 0, None),
        // Data DPL 3 from CPL 0 (RPL 2).
        (descriptor(0, 0xffff, 0xf2, 0), 0x1a, 0, None),
        // Data DPL 0, RPL 1: RPL > DPL.
        (descriptor(0, 0xffff, 0x92, 0), 0x19, 0, gp(0x18)),
        // Data DPL 1, CPL 2: CPL > DPL.
        (descriptor(0, 0xffff, 0xb2, 0), 0x19, 2, gp(0x18)),
        // Data DPL 2, CPL 2, RPL 2.
        (descriptor(0, 0xffff, 0xd2, 0), 0x1a, 2, None),
        // Execute-only code.
        (descriptor(0, 0xffff, 0x98, 4), 0x18, 0, gp(0x18)),
        // Readable code, DPL 0.
        (descriptor(0, 0xffff, 0x9a, 4), 0x18, 0, None),
        // Readable non-conforming code DPL 0 at CPL 3.
        (descriptor(0, 0xffff, 0x9a, 4), 0x1b, 3, gp(0x18)),
        // Readable conforming code DPL 0 at CPL 3, RPL 3: no privilege check.
        (descriptor(0, 0xffff, 0x9e, 4), 0x1b, 3, None),
        // Execute-only conforming code.
        (descriptor(0, 0xffff, 0x9c, 4), 0x18, 0, gp(0x18)),
        // System descriptors (LDT, 32-bit TSS, call gate).
        (descriptor(0x6000, 0x3f, 0x82, 0), 0x18, 0, gp(0x18)),
        (descriptor(0, 0x67, 0x89, 0), 0x18, 0, gp(0x18)),
        (descriptor(0, 0, 0x8c, 0), 0x18, 0, gp(0x18)),
        // Not present: #NP, after the type and privilege checks.
        (descriptor(0, 0xffff, 0x12, 0), 0x18, 0, np(0x18)),
        (descriptor(0, 0xffff, 0x1a, 0), 0x1b, 0, gp(0x18)),
        (descriptor(0, 0xffff, 0x1e, 0), 0x1b, 3, np(0x18)),
    ];
    for &(raw, selector, cpl, expected) in cases {
        let mut bench = Bench::protected(&[0x8e, 0xd8], true);
        bench.exit.state.gprs[RAX] = u64::from(selector);
        bench.exit.state.cpl = u32::from(cpl);
        bench.gdt(3, raw);
        let context = format!("descriptor {raw:#018x} selector {selector:#x} cpl {cpl}");
        match expected {
            Some(exception) => assert_eq!(bench.fault(), exception, "{context}"),
            None => {
                let (_, load) = bench.load();
                assert_eq!(load.value.selector, selector, "{context}");
                let access = ((raw >> 40) & 0xff) as u32 | 1;
                assert_eq!(load.value.access_rights & 0xff, access, "{context}");
            }
        }
    }
}

#[test]
fn stack_segment_faults() {
    let gp = |selector: u32| Some(with_code(vector::GP, selector));
    let cases: &[Case] = &[
        (descriptor(0, 0xffff, 0x92, 0), 0x18, 0, None),
        // Writable expand-down data.
        (descriptor(0, 0xfff, 0x96, 4), 0x18, 0, None),
        // DPL 3 = RPL 3 = CPL 3.
        (descriptor(0, 0xffff, 0xf2, 0), 0x1b, 3, None),
        // RPL != CPL.
        (descriptor(0, 0xffff, 0x92, 0), 0x19, 0, gp(0x18)),
        // DPL != CPL.
        (descriptor(0, 0xffff, 0xf2, 0), 0x1b, 0, gp(0x18)),
        (descriptor(0, 0xffff, 0xf2, 0), 0x18, 0, gp(0x18)),
        // Read-only data, readable code, system.
        (descriptor(0, 0xffff, 0x90, 0), 0x18, 0, gp(0x18)),
        (descriptor(0, 0xffff, 0x9a, 0), 0x18, 0, gp(0x18)),
        (descriptor(0, 0xffff, 0x82, 0), 0x18, 0, gp(0x18)),
        // Not present: #SS(selector), after the other checks.
        (
            descriptor(0, 0xffff, 0x12, 0),
            0x18,
            0,
            Some(with_code(vector::SS, 0x18)),
        ),
        (descriptor(0, 0xffff, 0x10, 0), 0x18, 0, gp(0x18)),
        // Null: #GP(0) outside 64-bit mode.
        (FLAT_DATA, 0, 0, gp(0)),
        (FLAT_DATA, 3, 3, gp(0)),
    ];
    for &(raw, selector, cpl, expected) in cases {
        // mov ss, ax
        let mut bench = Bench::protected(&[0x8e, 0xd0], true);
        bench.exit.state.gprs[RAX] = u64::from(selector);
        bench.exit.state.cpl = u32::from(cpl);
        bench.gdt(3, raw);
        let context = format!("descriptor {raw:#018x} selector {selector:#x} cpl {cpl}");
        match expected {
            Some(exception) => assert_eq!(bench.fault(), exception, "{context}"),
            None => {
                let (_, load) = bench.load();
                assert_eq!(load.register, SS as u8);
                assert_eq!(load.flags, SegmentLoad::BLOCKS_INTERRUPTS, "{context}");
            }
        }
    }
}

#[test]
fn table_limits_and_ldt_selectors() {
    let gdt_case = |limit: u32, selector: u16| {
        let mut bench = Bench::protected(&[0x8e, 0xd8], true);
        bench.exit.state.gdtr.limit = limit;
        bench.exit.state.gprs[RAX] = u64::from(selector);
        bench.gdt(4, FLAT_DATA);
        bench
    };
    // Entry 4 occupies bytes 0x20-0x27: limit 0x27 reaches it, 0x26 does not.
    let (_, load) = gdt_case(0x27, 0x20).load();
    assert_eq!(load.value.selector, 0x20);
    assert_eq!(gdt_case(0x26, 0x23).fault(), with_code(vector::GP, 0x20));
    assert_eq!(gdt_case(0x1f, 0x20).fault(), with_code(vector::GP, 0x20));
    assert_eq!(gdt_case(0, 0xfff8).fault(), with_code(vector::GP, 0xfff8));

    // TI set: LDT entry 1 (selector 0x0c, RPL 0), its own base and limit.
    let ldt_case = |selector: u16| {
        let mut bench = Bench::protected(&[0x8e, 0xc0], true);
        bench.exit.state.gprs[RAX] = u64::from(selector);
        bench.ldt(1, descriptor(0x0070_0000, 0x1fff, 0x92, 0x4));
        bench
    };
    let mut bench = ldt_case(0x0c);
    let (_, load) = bench.load();
    assert_eq!(
        load,
        segment_load(ES, register(0x0c, 0x4093, 0x1fff, 0x70_0000), 0)
    );
    assert_eq!(bench.guest.peek(LDT + 8 + 5, 1), [0x93]);
    // TI with index 0 is not null: LDT entry 0 (all zero: a system type).
    assert_eq!(ldt_case(0x04).fault(), with_code(vector::GP, 0x04));
    // Beyond the LDT's limit (8 entries).
    assert_eq!(ldt_case(0x47).fault(), with_code(vector::GP, 0x44));
    // An unusable LDTR: #GP(selector).
    let mut bench = ldt_case(0x0f);
    bench.exit.ldtr.access_rights = SegmentRegister::AR_UNUSABLE;
    assert_eq!(bench.fault(), with_code(vector::GP, 0x0c));
    // An exit without LDTR cannot be emulated.
    let mut bench = ldt_case(0x0c);
    bench.exit.valid &= !ValidGroups::LDTR;
    assert!(matches!(bench.run(), Outcome::Unsupported(_)));
}

#[test]
fn null_selectors_per_register_and_mode() {
    // Protected and compatibility mode: DS/ES/FS/GS become unusable with
    // the selector (RPL included) kept; SS is #GP(0). Any RPL, any CPL.
    let bench_in = |compatibility: bool, code: &[u8]| {
        if compatibility {
            let (mut bench, _) = long_bench(code);
            bench.exit.state.segments[CODE_SEG].access_rights = 0xc09b;
            bench
        } else {
            Bench::protected(code, true)
        }
    };
    for compatibility in [false, true] {
        for (reg, segment) in [(0u8, ES), (3, DS), (4, FS), (5, GS)] {
            for selector in 0..4u16 {
                let mut bench = bench_in(compatibility, &[0x8e, 0xc0 | reg << 3]);
                bench.exit.state.gprs[RAX] = u64::from(selector);
                bench.exit.state.cpl = 3;
                let (_, load) = bench.load();
                assert_eq!(
                    load,
                    segment_load(segment, register(selector, 0x1_0000, 0, 0), 0)
                );
                assert_eq!(bench.table_updates(), 0);
            }
        }
        for selector in 0..4u16 {
            let mut bench = bench_in(compatibility, &[0x8e, 0xd0]);
            bench.exit.state.gprs[RAX] = u64::from(selector);
            bench.exit.state.cpl = u32::from(selector);
            assert_eq!(bench.fault(), with_code(vector::GP, 0));
        }
    }
}

/// 64-bit mode, 4-level paging: code at linear 0x40_0000, the GDT at
/// linear 0x7100_0000 (frame [`GDT`]), data at 0x7000_0000 (frame [`DATA`]).
pub fn long_bench(code: &[u8]) -> (Bench, PageTables) {
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
    tables.map(&mut guest, 0x40_0000, 0x8000, RW | US);
    tables.map(&mut guest, 0x7000_0000, DATA, RW | US);
    tables.map(&mut guest, 0x7100_0000, GDT, RW);
    let exit = long_mode(tables.cr3());
    let mut bench = Bench::with_tables(exit, code);
    bench.guest = guest;
    load_code(&mut bench.guest, &mut bench.exit, CODE, 0x40_0000, code);
    bench.exit.state.gdtr.base = 0x7100_0000;
    bench.exit.ldtr.access_rights = SegmentRegister::AR_UNUSABLE;
    bench.exit.state.gprs[RBX] = 0x7000_0000;
    (bench, tables)
}

#[test]
fn long_mode_loads() {
    // mov fs, [rbx]: the descriptor's 32-bit base, upper half zero.
    let (mut bench, _) = long_bench(&[0x8e, 0x23]);
    bench.guest.poke(DATA, &0x28u16.to_le_bytes());
    bench.gdt(5, descriptor(0xfedc_ba98, 0xf_ffff, 0x92, 0xc));
    let (done, load) = bench.load();
    assert_eq!(
        load,
        segment_load(FS, register(0x28, 0xc093, 0xffff_ffff, 0xfedc_ba98), 0)
    );
    assert_eq!(done.rip, 0x40_0002);
    // The descriptor was read and its accessed bit set through the page
    // walk (the GDT's frame, not its linear address).
    assert_eq!(bench.guest.peek(GDT + 5 * 8 + 5, 1), [0x93]);

    // Null SS: allowed at CPL < 3 with RPL = CPL (DPL stays the CPL).
    for (cpl, selector, allowed) in [(0, 0, true), (1, 1, true), (2, 2, true), (0, 3, false)] {
        let (mut bench, _) = long_bench(&[0x8e, 0xd0]);
        bench.exit.state.cpl = cpl;
        bench.exit.state.gprs[RAX] = u64::from(selector);
        if allowed {
            let (_, load) = bench.load();
            let rights = 0x1_0000 | cpl << 5;
            assert_eq!(
                load,
                segment_load(
                    SS,
                    register(selector, rights, 0, 0),
                    SegmentLoad::BLOCKS_INTERRUPTS
                )
            );
        } else {
            assert_eq!(bench.fault(), with_code(vector::GP, 0));
        }
    }
    for selector in [0u16, 3] {
        let (mut bench, _) = long_bench(&[0x8e, 0xd0]);
        bench.exit.state.cpl = 3;
        bench.exit.state.gprs[RAX] = u64::from(selector);
        assert_eq!(bench.fault(), with_code(vector::GP, 0));
    }
    // Null DS/GS with REX.W (mov gs, rax).
    let (mut bench, _) = long_bench(&[0x48, 0x8e, 0xe8]);
    bench.exit.state.gprs[RAX] = 0xdead_0000_0000_0002;
    let (_, load) = bench.load();
    assert_eq!(load, segment_load(GS, register(2, 0x1_0000, 0, 0), 0));
    // A 64-bit code segment is readable code: its L bit is kept.
    let (mut bench, _) = long_bench(&[0x8e, 0xd8]);
    bench.exit.state.gprs[RAX] = 0x08;
    bench.gdt(1, descriptor(0, 0xf_ffff, 0x9b, 0xa));
    let (_, load) = bench.load();
    assert_eq!(load.value, register(0x08, 0xa09b, 0xffff_ffff, 0));
}

#[test]
fn descriptor_reads_page_fault_as_supervisor_accesses() {
    // 32-bit paging, CPL 3: the GDT at linear 0x7100_0000 is not mapped.
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Bits32, 0x10_0000);
    tables.map(&mut guest, CODE, CODE, RW | US);
    tables.map(&mut guest, DATA, DATA, RW | US);
    let mut exit = paged_exit(Format::Bits32, tables.cr3());
    exit.state.cpl = 3;
    let mut bench = Bench::with_tables(exit, &[0x8e, 0x1b]);
    bench.guest = guest;
    load_code(&mut bench.guest, &mut bench.exit, CODE, CODE, &[0x8e, 0x1b]);
    bench.exit.state.gdtr.base = 0x7100_0000;
    bench.guest.poke(DATA, &0x1bu16.to_le_bytes());
    let page_fault = |code: u32, cr2: u64| Exception {
        vector: vector::PF,
        error_code: Some(code),
        cr2: Some(cr2),
    };
    // Not present, supervisor read (U/S clear although CPL is 3).
    assert_eq!(bench.fault(), page_fault(0, 0x7100_0018));
    // Read-only supervisor page (CR0.WP): the read succeeds, setting the
    // accessed bit is a faulting supervisor write at the access byte.
    tables.map(&mut bench.guest, 0x7100_0000, GDT, 0);
    bench.gdt(3, descriptor(0, 0xf_ffff, 0xf2, 0xc));
    assert_eq!(bench.fault(), page_fault(0x3, 0x7100_001d));
    assert_eq!(bench.guest.peek(GDT + 0x1d, 1), [0xf2]);
    // Already accessed: no write, the load succeeds.
    bench.gdt(3, descriptor(0, 0xf_ffff, 0xf3, 0xc));
    let (_, load) = bench.load();
    assert_eq!(load.value, register(0x1b, 0xc0f3, 0xffff_ffff, 0));
    // Without CR0.WP the supervisor write goes through.
    bench.gdt(3, descriptor(0, 0xf_ffff, 0xf2, 0xc));
    bench.exit.state.cr0 &= !(1 << 16);
    let (_, load) = bench.load();
    assert_eq!(load.value.access_rights, 0xc0f3);
    assert_eq!(bench.guest.peek(GDT + 0x1d, 1), [0xf3]);
}

#[test]
fn the_memory_operand_faults_before_the_descriptor_checks() {
    // mov ds, [ebx+1] at CPL 3 with alignment checks: #AC(0), although
    // GDT entry 3 would be #GP.
    let mut bench = Bench::protected(&[0x8e, 0x5b, 0x01], true);
    bench.exit.state.cpl = 3;
    bench.exit.state.cr0 |= 1 << 18;
    bench.exit.state.rflags |= 1 << 18;
    bench.guest.poke(DATA + 1, &0x18u16.to_le_bytes());
    bench.gdt(3, descriptor(0, 0, 0x82, 0));
    assert_eq!(bench.fault(), with_code(vector::AC, 0));
    bench.exit.state.rflags &= !(1 << 18);
    assert_eq!(bench.fault(), with_code(vector::GP, 0x18));
    // Beyond DS's limit: #GP(0).
    bench.exit.state.segments[DS].limit = 0x2001;
    assert_eq!(bench.fault(), with_code(vector::GP, 0));
}

#[test]
fn real_mode_keeps_limits_and_attributes() {
    // mov ds, ax in real mode with an unreal DS (4 GiB limit, unusable
    // flag left by a null load in protected mode): only selector and base
    // change, and the register becomes usable. No descriptor is read.
    let mut guest = TestGuest::new();
    let mut exit = real_mode(0);
    load_code(&mut guest, &mut exit, 0x100, 0x100, &[0x8e, 0xd8]);
    exit.state.segments[DS] = register(0, 0x1_c093, 0xffff_ffff, 0);
    exit.state.gprs[RAX] = 0x1234;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        done.segment,
        Some(segment_load(
            DS,
            register(0x1234, 0xc093, 0xffff_ffff, 0x1_2340),
            0
        ))
    );
    // mov ss, [bx]: the selector from memory, interrupts blocked.
    load_code(&mut guest, &mut exit, 0x100, 0x100, &[0x8e, 0x17]);
    exit.state.gprs[RBX] = 0x200;
    guest.poke(0x200, &0xf000u16.to_le_bytes());
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        done.segment,
        Some(segment_load(
            SS,
            register(0xf000, 0x93, 0xffff, 0xf_0000),
            SegmentLoad::BLOCKS_INTERRUPTS
        ))
    );
}

#[test]
fn virtual_8086_mode_loads_base_limit_and_rights() {
    let mut guest = TestGuest::new();
    let mut exit = real_mode(0);
    exit.state.cr0 |= 1;
    exit.state.rflags |= 1 << 17;
    for segment in &mut exit.state.segments {
        segment.access_rights = 0xf3;
    }
    load_code(&mut guest, &mut exit, 0x100, 0x100, &[0x8e, 0xe0]);
    exit.state.gprs[RAX] = 0xb800;
    exit.state.segments[FS] = register(0, 0xc093, 0xffff_ffff, 0x1000);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        done.segment,
        Some(segment_load(
            FS,
            register(0xb800, 0xf3, 0xffff, 0xb_8000),
            0
        ))
    );
}

#[test]
fn ordinary_instructions_load_no_segment() {
    let mut bench = Bench::protected(&[0x8b, 0x03], true);
    assert_eq!(retired(bench.run()).segment, None);
}
