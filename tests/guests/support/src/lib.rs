//! guest-support: what Cordon's bare-metal test guests share: the multiboot2 entry and
//! long-mode switch, the COM1 console, CPU helpers, the exception IDT, a page-table
//! builder and counted accesses to trapped memory.
#![no_std]

#[cfg(any(test, feature = "build"))]
extern crate std;

#[cfg(feature = "build")]
pub mod build_script;
pub mod cpu;
// `guest-support/bare-metal` in a guest's feature list also reaches its build-dependency
// copy (the one with `build`), which must not carry the entry code into a host program.
#[cfg(all(feature = "bare-metal", not(feature = "build")))]
pub mod entry;
pub mod idt;
pub mod paging;
pub mod platform;
pub mod serial;
pub mod timing;
pub mod trapped;
