//! The kernel console on COM1: `println!`/`print!` under a spin lock, and an
//! emergency path for exception and panic reports that cannot wait for a lock
//! the interrupted code may hold.

use baremetal::serial::Com1;
use core::fmt::{self, Write};
use spin::Mutex;

static CONSOLE: Mutex<Option<Com1>> = Mutex::new(None);

/// How often the emergency path retries the lock before writing without it.
const EMERGENCY_LOCK_ATTEMPTS: u32 = 1_000_000;

/// Programs COM1 and makes it the console. Call once, on the boot CPU.
pub fn init() {
    // SAFETY: the kernel owns COM1; this runs once, before anything prints.
    let port = unsafe { Com1::init() };
    *CONSOLE.lock() = Some(port);
}

/// Prints formatted text as one uninterrupted unit (used by `print!`).
pub fn print_args(args: fmt::Arguments) {
    if let Some(port) = CONSOLE.lock().as_mut() {
        // Com1 never reports an error; a formatting error only truncates output.
        let _ = port.write_fmt(args);
    }
}

/// Prints even if the console lock is held (by the code an exception
/// interrupted, say): waits a bounded time for the lock, then writes anyway.
pub fn emergency_print_args(args: fmt::Arguments) {
    for _ in 0..EMERGENCY_LOCK_ATTEMPTS {
        if let Some(mut console) = CONSOLE.try_lock() {
            if let Some(port) = console.as_mut() {
                let _ = port.write_fmt(args);
                return;
            }
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: either nobody initialised the console (then the UART is in its
    // reset state and still transmits in Bochs/QEMU) or the lock holder is stuck;
    // interleaved characters are the accepted cost of getting the report out.
    let mut port = unsafe { Com1::already_initialised() };
    let _ = port.write_fmt(args);
}

/// Prints to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::arch::serial::print_args(format_args!($($arg)*)));
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::arch::serial::print_args(format_args!("{}\n", format_args!($($arg)*))));
}

/// Prints a line to the console without waiting for its lock (for reports
/// from exception and panic handlers).
#[macro_export]
macro_rules! emergency_println {
    ($($arg:tt)*) => ($crate::arch::serial::emergency_print_args(
        format_args!("{}\n", format_args!($($arg)*))
    ));
}
