//! The figure: average ticks of one emulated MMIO store (MOV to VGA text memory) against
//! one ordinary RAM store, each timed alone between fenced RDTSCs.

use demo_guest::report::StoreFigure;
use guest_support::platform::VGA_TEXT_BASE;
use guest_support::timing::timed_store_u32;
use guest_support::trapped::TrappedMemory;

/// Stores timed per kind (each MMIO store counts as a trapped instruction).
pub const SAMPLES: u32 = 64;
/// Where the MMIO stores go (a VGA cell no check uses).
const MMIO_TARGET: usize = VGA_TEXT_BASE + 0x600;

/// Times `SAMPLES` stores of each kind and returns the averages.
pub fn measure(memory: &mut TrappedMemory) -> StoreFigure {
    let mut ram_cell = [0u32; 1];
    let ram_target = ram_cell.as_mut_ptr() as usize;
    let mut mmio_total = 0u64;
    let mut ram_total = 0u64;
    for sample in 0..SAMPLES {
        // SAFETY: VGA text memory is identity-mapped device memory no reference points
        // at; `ram_cell` is a local only this store writes.
        unsafe {
            mmio_total += memory.timed_store_u32(MMIO_TARGET, sample);
            ram_total += timed_store_u32(ram_target, sample);
        }
    }
    StoreFigure {
        mmio_ticks: mmio_total / u64::from(SAMPLES),
        ram_ticks: ram_total / u64::from(SAMPLES),
    }
}
