//! The `paging` guest: guest page faults on accesses to trapped memory (VGA text).
//!
//! A page table under guest-support's PDPT maps linear pages at 4 GiB: VGA through a
//! normal, a not-present, a read-only, a user, an NX and an A/D-clear entry, and an
//! alias of a code page. Each kind of fault is made twice where it can be: as the
//! instruction's first access, where the CPU's own page walk faults before any EPT
//! violation (path `cpu`), and as the second access of a MOVSQ or CMPSQ whose trapped
//! read exits first, or as an instruction fetch the TLB still allows but the page
//! tables no longer do (path `emulator`: the emulator's walk faults). Supervisor-only
//! pages are reached from CPL 3 through a GDT with user segments and a TSS of this
//! guest's own. The error code and CR2 must be exact; SMAP and SMEP cases run when
//! CPUID reports them; the emulator must set A (read) and A+D (write) in entries it
//! walks.
#![no_std]
#![no_main]

use core::arch::asm;

use experiments_guest::faults::{Expected, FaultCase, Judged, Observed, Path, emulator_work};
use experiments_guest::runtime;
use guest_support::cpu;
use guest_support::idt::{self, vector};
use guest_support::platform::VGA_TEXT_BASE;
use guest_support::serial_println;
use guest_support::trapped::TrappedMemory;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

const NAME: &str = "paging";
/// Linear base of this guest's test pages (PDPT entry 4 of the identity map's PML4[0]).
const BASE: u64 = 0x1_0000_0000;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const ACCESSED: u64 = 0x20;
const DIRTY: u64 = 0x40;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// #PF error-code bits.
const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;
const PF_USER: u64 = 4;
const PF_FETCH: u64 = 0x10;

/// The test pages: index in the page table, and the linear address.
const fn page(index: u64) -> u64 {
    BASE + index * 0x1000
}
const SOURCE: u64 = page(0);
const NOT_PRESENT: u64 = page(1);
const READ_ONLY: u64 = page(2);
const USER_PAGE: u64 = page(3);
const DIRTY_TEST: u64 = page(4);
const ACCESSED_TEST: u64 = page(5);
const CODE_ALIAS: u64 = page(6);
const NO_EXECUTE_PAGE: u64 = page(7);
const USER_CODE_ALIAS: u64 = page(8);
const USER_STACK: u64 = page(9);
const SUPERVISOR_TARGET: u64 = page(10);

/// What the source qword holds.
const SOURCE_VALUE: u64 = 0x50a6_1e00_0bad_f00d;

/// One page-table page.
#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut PAGING_PD: Table = Table([0; 512]);
static mut PAGING_PT: Table = Table([0; 512]);
static mut PAGING_USER_STACK: Table = Table([0; 512]);

unsafe extern "C" {
    static guest_pml4: [u64; 512];
    static paging_alias_page: u8;
    static paging_flip_then_load: u8;
    static paging_flip_load: u8;
    static paging_movsq: u8;
    static paging_cmpsq: u8;
    static paging_user_load: u8;
    static paging_user_movsq: u8;
    static mut paging_gdt_tss: [u64; 2];
    static paging_gdt_pointer: u8;
    static paging_tss: u8;
    static mut paging_ring3_idt: [u64; 64];
    static paging_ring3_stubs: u8;
    static paging_ring3_vector: u64;
    static paging_ring3_error: u64;
    static paging_ring3_cr2: u64;
    fn paging_ring3_probe(rip: u64, rsp: u64, rdi: u64, rsi: u64);
}

core::arch::global_asm!(include_str!("stubs.s"), options(att_syntax));

fn pt() -> *mut u64 {
    (&raw mut PAGING_PT).cast::<u64>()
}

fn pte_address(linear: u64) -> u64 {
    pt() as u64 + ((linear >> 12) & 0x1ff) * 8
}

fn read_pte(linear: u64) -> u64 {
    // SAFETY: the entry is inside PAGING_PT, which only this CPU uses.
    unsafe { (pte_address(linear) as *const u64).read_volatile() }
}

/// Writes the PTE of `linear` and flushes its TLB entry.
fn set_pte(linear: u64, value: u64) {
    // SAFETY: as in `read_pte`; INVLPG only drops a translation.
    unsafe {
        (pte_address(linear) as *mut u64).write_volatile(value);
        asm!("invlpg [{}]", in(reg) linear, options(nostack, preserves_flags));
    }
}

fn alias_physical() -> u64 {
    &raw const paging_alias_page as u64
}

/// The entries of every test page (rebuilt before each case that changes one).
fn reset_pages() {
    let vga = |offset: u64| VGA_TEXT_BASE as u64 + offset;
    let normal = PRESENT | WRITABLE | ACCESSED | DIRTY;
    set_pte(SOURCE, vga(0) | normal);
    set_pte(NOT_PRESENT, vga(0x1000) | WRITABLE);
    set_pte(READ_ONLY, vga(0x1000) | PRESENT | ACCESSED | DIRTY);
    set_pte(USER_PAGE, vga(0x2000) | normal | USER);
    set_pte(DIRTY_TEST, vga(0x3000) | PRESENT | WRITABLE);
    set_pte(ACCESSED_TEST, vga(0x4000) | PRESENT | WRITABLE);
    set_pte(CODE_ALIAS, alias_physical() | PRESENT | ACCESSED);
    set_pte(NO_EXECUTE_PAGE, vga(0x5000) | normal | NO_EXECUTE);
    set_pte(
        USER_CODE_ALIAS,
        alias_physical() | PRESENT | ACCESSED | USER,
    );
    let stack = (&raw const PAGING_USER_STACK) as u64;
    set_pte(USER_STACK, stack | normal | USER);
    set_pte(SUPERVISOR_TARGET, vga(0x6000) | normal);
}

/// Loads this guest's GDT (guest-support's selectors plus user segments 0x23/0x2b and
/// a 64-bit TSS at 0x30 whose RSP0 the CPU uses when ring 3 faults) and builds the
/// ring-3 IDT (32 interrupt gates to paging_ring3_stubs, 16 bytes apart).
fn prepare_ring3() {
    let tss = &raw const paging_tss as u64;
    let low = 103 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
    let stubs = &raw const paging_ring3_stubs as u64;
    // SAFETY: the GDT, TSS and IDT are this guest's statics; the new GDT keeps the
    // selectors in use (0x08, 0x10, 0x18) with the same descriptors; LTR marks the TSS
    // busy, which only the CPU reads (RSP0 on a ring-3 exception).
    unsafe {
        let descriptor = (&raw mut paging_gdt_tss).cast::<u64>();
        descriptor.write_volatile(low);
        descriptor.add(1).write_volatile(tss >> 32);
        asm!("lgdt [{}]", in(reg) &raw const paging_gdt_pointer, options(nostack));
        asm!("ltr {:x}", in(reg) 0x30u16, options(nostack));
        let idt = (&raw mut paging_ring3_idt).cast::<u64>();
        for vector in 0..32u64 {
            let handler = stubs + vector * 16;
            let gate = (handler & 0xffff)
                | (0x18 << 16)
                | (0x8e00 << 32)
                | (((handler >> 16) & 0xffff) << 48);
            idt.add(2 * vector as usize).write_volatile(gate);
            idt.add(2 * vector as usize + 1)
                .write_volatile(handler >> 32);
        }
    }
}

/// Runs `body` (one of stubs.s's user bodies, through the user code alias) in ring 3
/// with RDI, RSI = `arguments`; UD2 at its end counts as "no fault".
fn ring3(body: u64, arguments: [u64; 2]) -> Result<u64, idt::ExceptionRecord> {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ring3_idt = Pointer {
        limit: 32 * 16 - 1,
        base: &raw const paging_ring3_idt as u64,
    };
    let rip = USER_CODE_ALIAS + (body - alias_physical());
    // SAFETY: the ring-3 IDT is built (prepare_ring3); the body runs in ring 3 on the
    // user stack page and ends in an exception that paging_ring3_probe's handler turns
    // into its return; guest-support's IDT is loaded again right after.
    let (vector, error_code, cr2) = unsafe {
        asm!("lidt [{}]", in(reg) &raw const ring3_idt, options(nostack));
        paging_ring3_probe(rip, USER_STACK + 0x1000, arguments[0], arguments[1]);
        (
            (&raw const paging_ring3_vector).read_volatile(),
            (&raw const paging_ring3_error).read_volatile(),
            (&raw const paging_ring3_cr2).read_volatile(),
        )
    };
    idt::install(|_| cpu::halt_forever());
    if vector == u64::from(vector::INVALID_OPCODE) {
        return Ok(0);
    }
    Err(idt::ExceptionRecord {
        vector: vector as u8,
        error_code,
        rip: 0,
        cr2,
    })
}

fn build_tables() {
    // SAFETY: PAGING_PD/PT are only touched here and through `set_pte`; PML4[0] points
    // at guest-support's PDPT, whose entry 4 is free (its map stops at 4 GiB). User
    // access needs U at every level: the identity map's leaves stay supervisor.
    unsafe {
        let pml4 = (&raw const guest_pml4).cast::<u64>().cast_mut();
        let pdpt = (pml4.read_volatile() & ADDRESS_MASK) as *mut u64;
        let pd = (&raw mut PAGING_PD).cast::<u64>();
        pd.write_volatile(pt() as u64 | PRESENT | WRITABLE | USER);
        pdpt.add((BASE >> 30) as usize)
            .write_volatile(pd as u64 | PRESENT | WRITABLE | USER);
        pml4.write_volatile(pml4.read_volatile() | USER);
        asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
    }
    reset_pages();
}

fn read_cr(register: u8) -> u64 {
    let value: u64;
    // SAFETY: reading CR0 or CR4 has no side effect.
    unsafe {
        match register {
            0 => asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)),
            _ => asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)),
        }
    }
    value
}

/// Sets or clears `bits` of CR0 (`register` 0) or CR4.
fn update_cr(register: u8, bits: u64, set: bool) {
    let old = read_cr(register);
    let new = if set { old | bits } else { old & !bits };
    // SAFETY: the callers change only WP (CR0), SMAP and SMEP (CR4, when CPUID has
    // them); the guest's code and data stay supervisor pages.
    unsafe {
        match register {
            0 => asm!("mov cr0, {}", in(reg) new, options(nostack)),
            _ => asm!("mov cr4, {}", in(reg) new, options(nostack)),
        }
    }
}

const CR0_WP: u64 = 1 << 16;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;

fn set_ac(set: bool) {
    // SAFETY: STAC/CLAC only change RFLAGS.AC (SMAP is reported by CPUID here).
    unsafe {
        if set {
            asm!("stac", options(nomem, nostack));
        } else {
            asm!("clac", options(nomem, nostack));
        }
    }
}

const fn pf(name: &'static str, error_code: u64, cr2: u64, path: Path) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Fault {
            vector: vector::PAGE_FAULT,
            error_code,
            cr2: Some(cr2),
        },
        path,
    }
}

const fn through_emulator(name: &'static str, value: u64) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Value(value),
        path: Path::Emulator,
    }
}

fn call(function: u64, arguments: [u64; 3]) -> Result<u64, idt::ExceptionRecord> {
    // SAFETY: every function probed here is one of stubs.s's (or an address whose
    // fetch faults); they touch only the test pages and their own PTE.
    unsafe { idt::probe_call(function, arguments) }
}

fn movsq(destination: u64, source: u64) -> Result<u64, idt::ExceptionRecord> {
    call(&raw const paging_movsq as u64, [destination, source, 0])
}

fn cmpsq(destination: u64, source: u64) -> Result<u64, idt::ExceptionRecord> {
    call(&raw const paging_cmpsq as u64, [destination, source, 0])
}

/// Where the flipping stub starts in `alias`.
fn flip_entry(alias: u64) -> u64 {
    alias + (&raw const paging_flip_then_load as u64 - alias_physical())
}

/// Runs the stub through `alias` after it set `bits` in the alias's own PTE.
fn flip_then_load(alias: u64, bits: u64) -> Result<u64, idt::ExceptionRecord> {
    call(flip_entry(alias), [pte_address(alias), SOURCE, bits])
}

fn flip_load_address(alias: u64) -> u64 {
    alias + (&raw const paging_flip_load as u64 - alias_physical())
}

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    let mut checks = runtime::begin(NAME);
    let mut memory = TrappedMemory::new();
    build_tables();
    update_cr(0, CR0_WP, true);
    let features = cpu::cpuid(7, 0).ebx;
    let smep = features & (1 << 7) != 0;
    let smap = features & (1 << 20) != 0;
    let nx = cpu::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    serial_println!(
        "{NAME}: cr0.wp={} nx={nx} smep={smep} smap={smap}",
        read_cr(0) & CR0_WP != 0
    );
    // SAFETY: SOURCE and USER_PAGE map VGA text memory (trapped), no Rust reference
    // covers it.
    unsafe {
        memory.store_u64(SOURCE as usize, SOURCE_VALUE);
        memory.store_u64(VGA_TEXT_BASE + 0x2000, SOURCE_VALUE);
    }

    let ram_source = [SOURCE_VALUE; 1];
    let ram = ram_source.as_ptr() as u64;
    let flip_cr2 = flip_load_address(CODE_ALIAS);
    let mut cases: heapless::Vec<(FaultCase, Observed), 24> = heapless::Vec::new();
    let mut run = |case: FaultCase,
                   probe: &mut dyn FnMut() -> Result<u64, idt::ExceptionRecord>| {
        reset_pages();
        let observed = runtime::timed(probe);
        let _ = cases.push((case, observed));
    };

    run(
        pf("not-present-load", 0, NOT_PRESENT, Path::Cpu),
        // SAFETY: the load faults (not present).
        &mut || unsafe { idt::probe_load_u8(NOT_PRESENT as usize) }.map(u64::from),
    );
    run(
        pf(
            "not-present-movsq-dest",
            PF_WRITE,
            NOT_PRESENT,
            Path::Emulator,
        ),
        &mut || movsq(NOT_PRESENT, SOURCE),
    );
    run(
        pf(
            "read-only-wp-movsq-from-ram",
            PF_PRESENT | PF_WRITE,
            READ_ONLY,
            Path::Cpu,
        ),
        &mut || movsq(READ_ONLY, ram),
    );
    run(
        pf(
            "read-only-wp-movsq-dest",
            PF_PRESENT | PF_WRITE,
            READ_ONLY,
            Path::Emulator,
        ),
        &mut || movsq(READ_ONLY, SOURCE),
    );
    if nx {
        run(
            pf(
                "nx-fetch",
                PF_PRESENT | PF_FETCH,
                NO_EXECUTE_PAGE,
                Path::Cpu,
            ),
            &mut || call(NO_EXECUTE_PAGE, [0; 3]),
        );
        run(
            pf(
                "nx-fetch-stale-tlb",
                PF_PRESENT | PF_FETCH,
                flip_cr2,
                Path::Emulator,
            ),
            &mut || flip_then_load(CODE_ALIAS, NO_EXECUTE),
        );
    }
    if smap {
        update_cr(4, CR4_SMAP, true);
        run(
            pf("smap-load", PF_PRESENT, USER_PAGE, Path::Cpu),
            // SAFETY: the load faults (SMAP, AC clear).
            &mut || unsafe { idt::probe_load_u8(USER_PAGE as usize) }.map(u64::from),
        );
        run(
            pf(
                "smap-movsq-dest",
                PF_PRESENT | PF_WRITE,
                USER_PAGE,
                Path::Emulator,
            ),
            &mut || movsq(USER_PAGE, SOURCE),
        );
        run(
            through_emulator("smap-stac-movsq-dest", SOURCE_VALUE),
            &mut || {
                set_ac(true);
                let outcome = movsq(USER_PAGE, SOURCE);
                set_ac(false);
                // Read back through the identity map (supervisor): USER_PAGE maps
                // VGA + 0x2000.
                // SAFETY: trapped VGA memory no Rust reference covers.
                outcome.map(|_| unsafe { memory.load_u64(VGA_TEXT_BASE + 0x2000) })
            },
        );
        update_cr(4, CR4_SMAP, false);
    }
    if smep {
        update_cr(4, CR4_SMEP, true);
        run(
            pf(
                "smep-fetch",
                PF_PRESENT | PF_FETCH,
                flip_entry(USER_CODE_ALIAS),
                Path::Cpu,
            ),
            &mut || flip_then_load(USER_CODE_ALIAS, 0),
        );
        run(
            pf(
                "smep-fetch-stale-tlb",
                PF_PRESENT | PF_FETCH,
                flip_cr2,
                Path::Emulator,
            ),
            &mut || flip_then_load(CODE_ALIAS, USER),
        );
        update_cr(4, CR4_SMEP, false);
    }
    prepare_ring3();
    run(
        pf(
            "cpl3-load-supervisor-page",
            PF_PRESENT | PF_USER,
            SOURCE,
            Path::Cpu,
        ),
        &mut || ring3(&raw const paging_user_load as u64, [SOURCE, 0]),
    );
    run(
        pf(
            "cpl3-movsq-dest-supervisor-page",
            PF_PRESENT | PF_WRITE | PF_USER,
            SUPERVISOR_TARGET,
            Path::Emulator,
        ),
        &mut || {
            ring3(
                &raw const paging_user_movsq as u64,
                [SUPERVISOR_TARGET, USER_PAGE],
            )
        },
    );
    run(
        through_emulator("cpl3-movsq-dest-user-page", SOURCE_VALUE),
        &mut || {
            let outcome = ring3(
                &raw const paging_user_movsq as u64,
                [USER_PAGE + 0x100, USER_PAGE],
            );
            // SAFETY: USER_PAGE maps VGA + 0x2000: trapped, no Rust reference.
            outcome.map(|_| unsafe { memory.load_u64(VGA_TEXT_BASE + 0x2100) })
        },
    );
    run(
        through_emulator("accessed-dirty-set-by-emulator-write", ACCESSED | DIRTY),
        &mut || movsq(DIRTY_TEST, SOURCE).map(|_| read_pte(DIRTY_TEST) & (ACCESSED | DIRTY)),
    );
    run(
        through_emulator("accessed-set-by-emulator-read", ACCESSED),
        &mut || cmpsq(ACCESSED_TEST, SOURCE).map(|_| read_pte(ACCESSED_TEST) & (ACCESSED | DIRTY)),
    );
    reset_pages();

    for (case, observed) in &cases {
        if observed.fault.is_none() && case.path == Path::Emulator {
            memory.add_counted_elsewhere(1);
        }
        let judged = Judged {
            case,
            observed: *observed,
        };
        checks.check(case.name, judged.passed(), format_args!("{judged}"));
    }
    let mut ran: heapless::Vec<FaultCase, 24> = heapless::Vec::new();
    for (case, _) in &cases {
        let _ = ran.push(*case);
    }
    let (retired, injected) = emulator_work(&ran);
    serial_println!(
        "{NAME}: the cases expect the emulator to retire {retired} and inject {injected} (core's exceptions-injected)"
    );
    checks.finish(memory.instructions())
}
