//! Shared support for Cordon's freestanding binaries (kernel, services, guests).
//!
//! With the `bare-metal` feature this crate exports the symbols that the prebuilt
//! `libcore` of `x86_64-unknown-linux-gnu` expects from a C library. Everything
//! else (port I/O, the COM1 writer, emulator exit) is plain code that also builds
//! on the host.
#![no_std]

#[cfg(feature = "bare-metal")]
mod mem;
pub mod port;
pub mod power;
pub mod serial;

/// libcore references this symbol even with `panic = "abort"`; nothing unwinds.
#[cfg(feature = "bare-metal")]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
