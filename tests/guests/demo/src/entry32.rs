//! The 32-bit phase (phase32.s) assembled into the guest, and its results as read from
//! the 64-bit phase.

use core::ptr::{addr_of, read_volatile};

use demo_guest::lapic;
use demo_guest::phase32::{CHECKS, Phase32Record};
use guest_support::platform::{LAPIC_ID, LAPIC_TPR, LAPIC_VERSION, VGA_TEXT_BASE};

core::arch::global_asm!(
    include_str!("phase32.s"),
    RECORDS = const CHECKS.len(),
    LAPIC_ID = const LAPIC_ID,
    LAPIC_VERSION = const LAPIC_VERSION,
    LAPIC_TPR = const LAPIC_TPR,
    VGA = const VGA_TEXT_BASE,
    VERSION_MIN = const lapic::VERSION_MIN,
    VERSION_MAX = const lapic::VERSION_MAX,
    MAX_LVT_MIN = const lapic::MAX_LVT_MIN,
    MAX_LVT_MAX = const lapic::MAX_LVT_MAX,
    options(att_syntax)
);

unsafe extern "C" {
    static demo_phase32_results: [Phase32Record; CHECKS.len()];
    static demo_phase32_recorded: u32;
    static demo_phase32_trapped: u32;
}

/// What the 32-bit phase left behind.
pub struct Phase32Results {
    /// The records, in `CHECKS` order.
    pub records: [Phase32Record; CHECKS.len()],
    /// How many records the assembly wrote.
    pub recorded: u32,
    /// Instructions of the 32-bit phase that touched trapped memory.
    pub trapped_instructions: u32,
}

/// Reads the 32-bit phase's table (it ran before long mode; nothing writes it now).
pub fn results() -> Phase32Results {
    // SAFETY: the symbols are the assembly's data, written only by the 32-bit phase,
    // which finished before the 64-bit code runs; volatile reads because Rust did not
    // see the writes.
    unsafe {
        Phase32Results {
            records: read_volatile(addr_of!(demo_phase32_results)),
            recorded: read_volatile(addr_of!(demo_phase32_recorded)),
            trapped_instructions: read_volatile(addr_of!(demo_phase32_trapped)),
        }
    }
}
