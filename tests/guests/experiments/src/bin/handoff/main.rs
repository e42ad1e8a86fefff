//! The `handoff` guest: the lost-update experiment of the background notes, with three
//! vCPUs and X = 0xB8000 (VGA text memory, trapped). vCPU 0 (the BSP) repeats N times:
//! spin until X reads 0, store 1, count; vCPUs 1 and 2 repeat `xchg [X], reg` with 0 and
//! count each old 1, until vCPU 0 is done and X is 0. Emulated atomically, XCHG loses
//! and doubles nothing: counter0 == counter1 + counter2. Run twice, in 64-bit mode and
//! in 32-bit protected mode (handoff.s assembles the same loop for both), with the
//! ticks per emulated access under contention; the core prints its retry count with
//! the DONE line.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use experiments_guest::handoff::{HandoffResult, VCPUS};
use experiments_guest::runtime;
use guest_support::cpu;
use guest_support::modes::call_protected32;
use guest_support::platform::VGA_TEXT_BASE;
use guest_support::serial_println;
use guest_support::trapped::TrappedMemory;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

const NAME: &str = "handoff";
/// Handoffs per phase (the issue asks for at least 10,000).
const ITERATIONS: u32 = 10_000;
/// X: the first word of VGA text memory.
const X: usize = VGA_TEXT_BASE;
/// Most loads of X vCPU 0 makes waiting for one handoff.
const SPIN_LIMIT: u32 = 100_000;
/// Most XCHGs an exchanger makes in one phase.
const XCHG_LIMIT: u32 = 100 * ITERATIONS;
/// How long the BSP waits for the helpers to arrive or finish (TSC ticks).
const WAIT_TICKS: u64 = 20_000_000_000;

/// The block the loops in handoff.s share (offsets given to the assembly below).
#[repr(C)]
struct HandoffShared {
    done: AtomicU32,
    timeouts: AtomicU32,
    counters: [AtomicU32; VCPUS],
    accesses: [AtomicU32; VCPUS],
    ticks: [AtomicU64; VCPUS],
}

#[unsafe(no_mangle)]
static HANDOFF_SHARED: HandoffShared = HandoffShared {
    done: AtomicU32::new(0),
    timeouts: AtomicU32::new(0),
    counters: [const { AtomicU32::new(0) }; VCPUS],
    accesses: [const { AtomicU32::new(0) }; VCPUS],
    ticks: [const { AtomicU64::new(0) }; VCPUS],
};

core::arch::global_asm!(
    include_str!("handoff.s"),
    SHARED = sym HANDOFF_SHARED,
    DONE = const core::mem::offset_of!(HandoffShared, done),
    TIMEOUTS = const core::mem::offset_of!(HandoffShared, timeouts),
    COUNTERS = const core::mem::offset_of!(HandoffShared, counters),
    ACCESSES = const core::mem::offset_of!(HandoffShared, accesses),
    TICKS = const core::mem::offset_of!(HandoffShared, ticks),
    X = const X,
    N = const ITERATIONS,
    SPIN_LIMIT = const SPIN_LIMIT,
    XCHG_LIMIT = const XCHG_LIMIT,
    options(att_syntax)
);

unsafe extern "C" {
    fn handoff_worker64(role: u32);
    static handoff_worker32: u8;
}

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Long64 = 1,
    Protected32 = 2,
}

const PHASES: [Phase; 2] = [Phase::Long64, Phase::Protected32];

/// The phase the BSP released (0: none yet).
static GO: AtomicU32 = AtomicU32::new(0);
/// Helpers waiting for the next phase, and helpers done with the current one.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);

fn run_role(phase: Phase, role: u32) {
    match phase {
        // SAFETY: the loop touches only X (trapped VGA, no Rust reference) and the
        // shared block (atomics); it keeps the callee-saved registers.
        Phase::Long64 => unsafe { handoff_worker64(role) },
        Phase::Protected32 => {
            let function = &raw const handoff_worker32 as usize as u32;
            // SAFETY: handoff_worker32 follows call_protected32's contract (no
            // exception, paging stays off, flat segments); the stack is in the guest
            // image below 4 GiB.
            unsafe { call_protected32(function, role) };
        }
    }
}

/// vCPUs 1 and 2: each phase, arrive, wait for the BSP's go, exchange, finish.
fn helper_main(slot: u32) -> ! {
    if slot as usize >= VCPUS {
        cpu::halt_forever();
    }
    for phase in PHASES {
        ARRIVED.fetch_add(1, Ordering::SeqCst);
        while GO.load(Ordering::SeqCst) != phase as u32 {
            core::hint::spin_loop();
        }
        run_role(phase, slot);
        FINISHED.fetch_add(1, Ordering::SeqCst);
    }
    cpu::halt_forever()
}

fn reset_shared() {
    let shared = &HANDOFF_SHARED;
    shared.done.store(0, Ordering::SeqCst);
    shared.timeouts.store(0, Ordering::SeqCst);
    for vcpu in 0..VCPUS {
        shared.counters[vcpu].store(0, Ordering::SeqCst);
        shared.accesses[vcpu].store(0, Ordering::SeqCst);
        shared.ticks[vcpu].store(0, Ordering::SeqCst);
    }
}

fn collect(final_value: u32) -> HandoffResult {
    let shared = &HANDOFF_SHARED;
    let mut result = HandoffResult {
        iterations: ITERATIONS,
        timeouts: shared.timeouts.load(Ordering::SeqCst),
        final_value,
        ..HandoffResult::default()
    };
    for vcpu in 0..VCPUS {
        result.counters[vcpu] = shared.counters[vcpu].load(Ordering::SeqCst);
        result.accesses[vcpu] = shared.accesses[vcpu].load(Ordering::SeqCst);
        result.ticks[vcpu] = shared.ticks[vcpu].load(Ordering::SeqCst);
    }
    result
}

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    let mut checks = runtime::begin(NAME);
    let mut memory = TrappedMemory::new();
    runtime::start_helper_cpus(&mut checks, &mut memory, VCPUS - 1, helper_main);

    for (index, phase) in PHASES.into_iter().enumerate() {
        let mode = match phase {
            Phase::Long64 => "64",
            Phase::Protected32 => "32",
        };
        let helpers = (VCPUS as u32 - 1) * (index as u32 + 1);
        if !runtime::wait_until(WAIT_TICKS, || ARRIVED.load(Ordering::SeqCst) >= helpers) {
            runtime::fail_now(format_args!("[{mode}] the helper vCPUs did not arrive"));
        }
        reset_shared();
        // SAFETY: X is trapped VGA memory no Rust reference covers.
        unsafe { memory.store_u32(X, 0) };
        let started = cpu::rdtsc_fenced();
        GO.store(phase as u32, Ordering::SeqCst);
        run_role(phase, 0);
        if !runtime::wait_until(WAIT_TICKS, || FINISHED.load(Ordering::SeqCst) >= helpers) {
            runtime::fail_now(format_args!("[{mode}] the exchangers did not finish"));
        }
        let elapsed = cpu::rdtsc_fenced().wrapping_sub(started);
        // SAFETY: as above.
        let final_value = unsafe { memory.load_u32(X) };
        let result = collect(final_value);
        for vcpu in 0..VCPUS {
            memory.add_counted_elsewhere(result.accesses[vcpu]);
        }
        checks.check(
            &format_name(mode),
            result.passed(),
            format_args!("{}", result.counters_line()),
        );
        serial_println!(
            "{NAME}: [{mode}] {} phase-ticks={elapsed}",
            result.figure_line()
        );
    }
    checks.finish(memory.instructions())
}

/// `[64] counters` or `[32] counters`.
fn format_name(mode: &str) -> heapless::String<16> {
    let mut name = heapless::String::new();
    // Both fit in 16 bytes.
    let _ = name.push_str("[");
    let _ = name.push_str(mode);
    let _ = name.push_str("] counters");
    name
}
