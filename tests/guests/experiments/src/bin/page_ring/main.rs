//! The `page-ring` guest: split locked accesses. Two trapped RAM frames A, A+4K
//! (`cordon.trap=...,0x3000000-0x3001fff`) are mapped at linear V, V+4K, V+8K -> A,
//! A+4K, A; vCPU 0 runs LOCK CMPXCHG8B at every dword from V to V+0x1ffc (V+0xffc and
//! V+0x1ffc split across the frames, in both orders) while vCPU 1 runs LOCK XADD on the
//! very dwords vCPU 0 is working on (page_ring.s). The values are designed so every lost update shows
//! (experiments_guest::ring). Run with 4-level paging in 64-bit mode and with PAE
//! paging in 32-bit protected mode.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use experiments_guest::ring::{
    CMPXCHG8B_HIGH_ADD, CMPXCHG8B_LOW_ADD, CMPXCHG8B_PASSES, MAX_XADDS_PER_WORD, RING_BYTES,
    RING_WORDS, RingVerdict, XADD_ADD, initial_word,
};
use experiments_guest::runtime;
use guest_support::cpu;
use guest_support::modes::call_protected32;
use guest_support::serial_println;
use guest_support::trapped::TrappedMemory;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

const NAME: &str = "page-ring";
/// Frame A (trapped by the catalog's kernel command line, with A + 4K).
const FRAME_A: u64 = 0x300_0000;
/// V in 64-bit mode: 4 GiB, just above the identity map.
const V64: u64 = 0x1_0000_0000;
/// V in 32-bit PAE mode: 3 GiB (PDPT entry 3).
const V32: u32 = 0xc000_0000;
/// Most failed CMPXCHG8B compares before vCPU 0 gives up.
const FAIL_LIMIT: u32 = 1_000_000;
/// How long the BSP waits for the helper (TSC ticks).
const WAIT_TICKS: u64 = 20_000_000_000;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const LARGE: u64 = 0x80;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Results the sweeps leave (offsets given to the assembly below).
#[repr(C)]
struct RingShared {
    accesses: [AtomicU32; 2],
    failures: AtomicU32,
    timeouts: AtomicU32,
    passes_left: AtomicU32,
    /// The dword vCPU 0 works on (counted from the phase's start).
    position: AtomicU32,
    /// Set by vCPU 0 when its sweeps are over.
    done0: AtomicU32,
    /// XADDs per dword.
    xadds: [AtomicU8; RING_WORDS],
}

static RING_SHARED: RingShared = RingShared {
    accesses: [const { AtomicU32::new(0) }; 2],
    failures: AtomicU32::new(0),
    timeouts: AtomicU32::new(0),
    passes_left: AtomicU32::new(0),
    position: AtomicU32::new(0),
    done0: AtomicU32::new(0),
    xadds: [const { AtomicU8::new(0) }; RING_WORDS],
};

/// One page-table page.
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The tables this guest adds: a PD and a PT under guest-support's PDPT for V64, and
/// the PAE hierarchy (PDPT, identity PD for [0, 1 GiB), PD and PT for V32).
#[repr(C)]
struct RingTables {
    pd64: Table,
    pt64: Table,
    pae_pdpt: Table,
    pae_pd_low: Table,
    pae_pd_high: Table,
    pae_pt: Table,
}

static mut RING_TABLES: RingTables = RingTables {
    pd64: Table([0; 512]),
    pt64: Table([0; 512]),
    pae_pdpt: Table([0; 512]),
    pae_pd_low: Table([0; 512]),
    pae_pd_high: Table([0; 512]),
    pae_pt: Table([0; 512]),
};

core::arch::global_asm!(
    include_str!("page_ring.s"),
    SHARED = sym RING_SHARED,
    ACCESSES = const core::mem::offset_of!(RingShared, accesses),
    FAILURES = const core::mem::offset_of!(RingShared, failures),
    TIMEOUTS = const core::mem::offset_of!(RingShared, timeouts),
    PASSES_LEFT = const core::mem::offset_of!(RingShared, passes_left),
    POSITION = const core::mem::offset_of!(RingShared, position),
    DONE0 = const core::mem::offset_of!(RingShared, done0),
    XADDS = const core::mem::offset_of!(RingShared, xadds),
    MAX_XADDS = const MAX_XADDS_PER_WORD,
    WORD_MASK = const RING_WORDS - 1,
    PAE_PDPT = sym RING_TABLES,
    PAE_PDPT_OFFSET = const core::mem::offset_of!(RingTables, pae_pdpt),
    WORDS = const RING_WORDS,
    RING_BYTES = const RING_BYTES,
    CX_PASSES = const CMPXCHG8B_PASSES,
    P = const CMPXCHG8B_LOW_ADD,
    Q = const CMPXCHG8B_HIGH_ADD,
    R = const XADD_ADD,
    FAIL_LIMIT = const FAIL_LIMIT,
    V32 = const V32,
    options(att_syntax)
);

unsafe extern "C" {
    fn ring_worker64(role: u32, v: u64);
    static ring_worker32: u8;
    static guest_pml4: [u64; 512];
}

/// Writes one table entry.
///
/// # Safety
/// `table` must be one of `RING_TABLES`' tables or guest-support's PDPT, not in use
/// for the addresses the entry maps.
unsafe fn set_entry(table: *mut u64, index: usize, value: u64) {
    // SAFETY: forwarded from the caller; index < 512 by construction at the callers.
    unsafe { table.add(index).write_volatile(value) };
}

/// Maps V64, V64+4K, V64+8K -> A, A+4K, A under guest_pml4, and builds the PAE tables.
fn build_tables() {
    let tables = &raw mut RING_TABLES;
    // SAFETY: RING_TABLES is only touched here, before any CPU uses the mappings; the
    // support's PDPT (from guest_pml4[0]) has no entry 4 yet (its map stops at 4 GiB).
    unsafe {
        let pd64 = (&raw mut (*tables).pd64.0).cast::<u64>();
        let pt64 = (&raw mut (*tables).pt64.0).cast::<u64>();
        let pdpt64 = ((&raw const guest_pml4).cast::<u64>().read_volatile() & ADDRESS_MASK) as usize
            as *mut u64;
        for (index, frame) in [FRAME_A, FRAME_A + 0x1000, FRAME_A].into_iter().enumerate() {
            set_entry(pt64, index, frame | PRESENT | WRITABLE);
        }
        set_entry(pd64, 0, pt64 as u64 | PRESENT | WRITABLE);
        set_entry(
            pdpt64,
            (V64 >> 30) as usize,
            pd64 as u64 | PRESENT | WRITABLE,
        );

        let pdpt = (&raw mut (*tables).pae_pdpt.0).cast::<u64>();
        let pd_low = (&raw mut (*tables).pae_pd_low.0).cast::<u64>();
        let pd_high = (&raw mut (*tables).pae_pd_high.0).cast::<u64>();
        let pt = (&raw mut (*tables).pae_pt.0).cast::<u64>();
        for index in 0..512 {
            set_entry(
                pd_low,
                index,
                ((index as u64) << 21) | PRESENT | WRITABLE | LARGE,
            );
        }
        for (index, frame) in [FRAME_A, FRAME_A + 0x1000, FRAME_A].into_iter().enumerate() {
            set_entry(pt, index, frame | PRESENT | WRITABLE);
        }
        set_entry(pd_high, 0, pt as u64 | PRESENT | WRITABLE);
        // PAE PDPTEs have no R/W bit (reserved): present only.
        set_entry(pdpt, 0, pd_low as u64 | PRESENT);
        set_entry(pdpt, (V32 >> 30) as usize, pd_high as u64 | PRESENT);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Long64 = 1,
    Pae32 = 2,
}

const PHASES: [Phase; 2] = [Phase::Long64, Phase::Pae32];

static GO: AtomicU32 = AtomicU32::new(0);
static ARRIVED: AtomicU32 = AtomicU32::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);

fn run_role(phase: Phase, role: u32) {
    match phase {
        // SAFETY: the sweep touches only the ring through V64 (trapped frames no Rust
        // reference covers) and the shared block; it keeps the callee-saved registers.
        Phase::Long64 => unsafe { ring_worker64(role, V64) },
        Phase::Pae32 => {
            let function = &raw const ring_worker32 as usize as u32;
            // SAFETY: ring_worker32 follows call_protected32's contract: its PAE tables
            // identity-map [0, 1 GiB) (code, stack, data) and it turns paging off again.
            unsafe { call_protected32(function, role) };
        }
    }
}

/// vCPU 1: the XADD chase, each phase.
fn helper_main(slot: u32) -> ! {
    if slot != 1 {
        cpu::halt_forever();
    }
    for phase in PHASES {
        ARRIVED.fetch_add(1, Ordering::SeqCst);
        while GO.load(Ordering::SeqCst) != phase as u32 {
            core::hint::spin_loop();
        }
        run_role(phase, 1);
        FINISHED.fetch_add(1, Ordering::SeqCst);
    }
    cpu::halt_forever()
}

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    let mut checks = runtime::begin(NAME);
    let mut memory = TrappedMemory::new();
    build_tables();
    runtime::start_helper_cpus(&mut checks, &mut memory, 1, helper_main);

    for (index, phase) in PHASES.into_iter().enumerate() {
        let mode = match phase {
            Phase::Long64 => "[64] 4-level",
            Phase::Pae32 => "[32] PAE",
        };
        let arrived = index as u32 + 1;
        if !runtime::wait_until(WAIT_TICKS, || ARRIVED.load(Ordering::SeqCst) >= arrived) {
            runtime::fail_now(format_args!("{mode}: the XADD vCPU did not arrive"));
        }
        for word in 0..RING_WORDS {
            // SAFETY: frames A, A+4K are trapped guest RAM, identity-mapped, that no
            // Rust reference covers.
            unsafe { memory.store_u32(FRAME_A as usize + 4 * word, initial_word(word)) };
        }
        for counter in [&RING_SHARED.accesses[0], &RING_SHARED.accesses[1]] {
            counter.store(0, Ordering::SeqCst);
        }
        RING_SHARED.failures.store(0, Ordering::SeqCst);
        RING_SHARED.done0.store(0, Ordering::SeqCst);
        for count in &RING_SHARED.xadds {
            count.store(0, Ordering::SeqCst);
        }
        RING_SHARED.timeouts.store(0, Ordering::SeqCst);
        let started = cpu::rdtsc_fenced();
        GO.store(phase as u32, Ordering::SeqCst);
        run_role(phase, 0);
        if !runtime::wait_until(WAIT_TICKS, || FINISHED.load(Ordering::SeqCst) >= arrived) {
            runtime::fail_now(format_args!("{mode}: the XADD vCPU did not finish"));
        }
        let elapsed = cpu::rdtsc_fenced().wrapping_sub(started);
        let cmpxchg8b = RING_SHARED.accesses[0].load(Ordering::SeqCst);
        let xadd = RING_SHARED.accesses[1].load(Ordering::SeqCst);
        let failures = RING_SHARED.failures.load(Ordering::SeqCst);
        let timeouts = RING_SHARED.timeouts.load(Ordering::SeqCst);
        memory.add_counted_elsewhere(cmpxchg8b);
        memory.add_counted_elsewhere(xadd);
        // Read back through the alias V64 (both frames; the same words as A, A+4K).
        let mut values = [0u32; RING_WORDS];
        for (word, value) in values.iter_mut().enumerate() {
            // SAFETY: V64.. maps the trapped frames (build_tables), no Rust reference.
            *value = unsafe { memory.load_u32(V64 as usize + 4 * word) };
        }
        let verdict = RingVerdict::check(
            |word| values[word],
            |word| RING_SHARED.xadds[word].load(Ordering::SeqCst),
        );
        let split_low = values[1023];
        let split_high = values[1024];
        let wrap_low = values[2047];
        let wrap_high = values[0];
        checks.check(
            mode,
            verdict.passed() && timeouts == 0 && cmpxchg8b >= CMPXCHG8B_PASSES * RING_WORDS as u32,
            format_args!(
                "words-ok={}/{RING_WORDS} first-wrong={:?} split V+0xffc=({split_low:#x},{split_high:#x}) V+0x1ffc=({wrap_low:#x},{wrap_high:#x}) timeouts={timeouts}",
                verdict.words_ok, verdict.first_wrong
            ),
        );
        serial_println!(
            "{NAME}: {mode} lock-cmpxchg8b={cmpxchg8b} (failed compares {failures}) lock-xadd={xadd} phase-ticks={elapsed}"
        );
    }
    checks.finish(memory.instructions())
}
