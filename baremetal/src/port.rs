//! x86 port I/O (`in`/`out`), the one primitive every device access here needs.

use core::arch::asm;

/// Writes one byte to an I/O port.
///
/// # Safety
/// The write must not break an invariant of the device behind `port`.
pub unsafe fn write_u8(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes one 16-bit word to an I/O port.
///
/// # Safety
/// The write must not break an invariant of the device behind `port`.
pub unsafe fn write_u16(port: u16, value: u16) {
    // SAFETY: the caller vouches for the device; `out` touches no memory.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads one byte from an I/O port.
///
/// # Safety
/// The read must not break an invariant of the device behind `port` (some
/// registers change state when read).
pub unsafe fn read_u8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the device; `in` touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}
