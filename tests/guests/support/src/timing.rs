//! Timing of single stores with fenced RDTSC (under Bochs with `clock: sync=none` the TSC
//! counts emulated instructions, so the figures are repeatable).

use core::arch::asm;

/// Stores `value` at `address` with one MOV between two fenced TSC reads; returns the
/// ticks between the reads.
///
/// # Safety
/// `address` must be mapped, writable and not memory Rust owns through a reference.
pub unsafe fn timed_store_u32(address: usize, value: u32) -> u64 {
    let start_low: u32;
    let start_high: u32;
    let end_low: u32;
    let end_high: u32;
    // SAFETY: the caller guarantees the store target; LFENCE/RDTSC only read the TSC.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "lfence",
            "mov {start_low:e}, eax",
            "mov {start_high:e}, edx",
            "mov dword ptr [{a}], {v:e}",
            "lfence",
            "rdtsc",
            "lfence",
            a = in(reg) address,
            v = in(reg) value,
            start_low = out(reg) start_low,
            start_high = out(reg) start_high,
            out("eax") end_low,
            out("edx") end_high,
            options(nostack, preserves_flags),
        );
    }
    let start = (u64::from(start_high) << 32) | u64::from(start_low);
    let end = (u64::from(end_high) << 32) | u64::from(end_low);
    end.wrapping_sub(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_store_stores() {
        let mut cell = 0u32;
        // SAFETY: `cell` is a live local, not borrowed while the store runs.
        unsafe { timed_store_u32(&mut cell as *mut u32 as usize, 0x1234_5678) };
        assert_eq!(cell, 0x1234_5678);
    }
}
