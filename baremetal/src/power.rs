//! Ending the machine under an emulator: Bochs, QEMU, or a halt on real hardware.
//!
//! Bochs: the magic breakpoint (`xchg bx, bx`, with `magic_break: enabled=1`)
//! drops into the debugger, whose command file then runs `quit` (exit status 0);
//! writing "Shutdown" to port 0x8900 ends Bochs with status 1. QEMU: a write to
//! the `isa-debug-exit` device at port 0xf4 exits with status `(value << 1) | 1`.
//! On real hardware none of these does anything and the CPU halts.

use crate::port;
use crate::serial::Com1;
use core::arch::asm;

/// The `isa-debug-exit` port the boot tool gives QEMU.
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
/// Bochs's APM shutdown port.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Stops the machine: `success` selects exit status 0 (pass) or 1 (fail) where
/// the emulator lets us choose. Waits for COM1 to finish sending first (Bochs
/// drops bytes still in the UART when it quits). Never returns.
///
/// # Safety
/// Ends everything running on the machine; the caller must have flushed what it
/// needs (serial output is synchronous, so a printed line is already out).
pub unsafe fn stop_machine(success: bool) -> ! {
    // SAFETY: the debug-exit, magic-breakpoint and shutdown ports have no effect
    // on real hardware beyond an ignored port write; the caller accepts the stop.
    unsafe {
        Com1::already_initialised().flush();
        // QEMU exits with status 1 for value 0 and 3 for value 1.
        port::write_u8(QEMU_DEBUG_EXIT_PORT, if success { 0 } else { 1 });
        if success {
            asm!("xchg bx, bx", options(nomem, nostack, preserves_flags));
        } else {
            for byte in b"Shutdown" {
                port::write_u8(BOCHS_SHUTDOWN_PORT, *byte);
            }
        }
        loop {
            asm!("cli", "hlt", options(nomem, nostack));
        }
    }
}
