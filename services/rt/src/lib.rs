//! The Cordon ring-3 runtime: what every service binary stands on.
//!
//! - [`syscall`]: the system calls, as functions returning `Result`.
//! - [`log!`]: formatted lines to the console through the `log` syscall.
//! - [`message`]: the per-CPU message page (copy the exit out, the reply in).
//! - [`reply`]: the reply for each kind of answer.
//! - [`read_log`]: which instruction bytes an emulation fetched (for traces).
//! - [`guest_memory`]: guest-physical memory through the map window, with a
//!   slot cache ([`slot_cache`]), and compare-exchange.
//! - With the `bare-metal` feature: the `_start` entry (see [`entry!`]), the
//!   panic handler and the global allocator.
//!
//! Linking a service: see the `service-link` crate (services/service-link).
#![no_std]

pub use abi;

pub mod guest_memory;
pub mod lapic;
pub mod log;
pub mod message;
pub mod read_log;
pub mod reply;
pub mod slot_cache;
pub mod syscall;

#[cfg(feature = "bare-metal")]
mod entry;
#[cfg(feature = "bare-metal")]
mod heap;
#[cfg(feature = "bare-metal")]
mod panic;

#[cfg(feature = "bare-metal")]
use baremetal as _;

/// Declares the service's `main`: `rt::entry!(main)` with
/// `fn main(start: rt::abi::ServiceStart) -> !`. The runtime's `_start` aligns
/// the stack and calls it with the registers the core set.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __cordon_service_main(start: $crate::abi::ServiceStart) -> ! {
            let main: fn($crate::abi::ServiceStart) -> ! = $main;
            main(start)
        }
    };
}
