//! The COM1 console every guest prints its check lines on (the `baremetal` crate's 16550
//! writer behind a lock, so several CPUs can print whole lines), and the print macros.

use core::fmt::{self, Write};

use baremetal::serial::Com1;
use spin::Mutex;

static CONSOLE: Mutex<Option<Com1>> = Mutex::new(None);

/// Programs COM1 (115200 8N1). Printing before this writes nothing.
pub fn init() {
    // SAFETY: the guest owns COM1 (passed through by Cordon) and only this console
    // programs it; the lock serializes writers.
    let com1 = unsafe { Com1::init() };
    *CONSOLE.lock() = Some(com1);
}

/// Writes formatted text to the console; used by the print macros.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(com1) = CONSOLE.lock().as_mut() {
        // Com1's writer never fails.
        let _ = com1.write_fmt(args);
    }
}

/// Prints to COM1.
#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => {
        $crate::serial::write_fmt(format_args!($($arg)*))
    };
}

/// Prints a line to COM1.
#[macro_export]
macro_rules! serial_println {
    () => {
        $crate::serial::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
