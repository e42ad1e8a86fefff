//! guest-support: what Cordon's bare-metal test guests share: the multiboot2 entry and
//! long-mode switch, the COM1 console, CPU helpers, the exception IDT, a page-table
//! builder and counted accesses to trapped memory.
//!
//! A new guest (see tests/guests/demo for a complete one):
//! - Cargo.toml: feature `bare-metal = ["guest-support/bare-metal", "baremetal/bare-metal"]`,
//!   a `[[bin]]` with `required-features = ["bare-metal"]` and `test = false`, and
//!   `guest-support` with feature `build` as a build-dependency;
//! - build.rs: `guest_support::build_script::link_guest_binaries();` (links at 32 MiB
//!   with `guest.ld`, only for the bare-metal build);
//! - the bin defines `#[unsafe(no_mangle)] extern "C" fn guest_main64(magic: u32,
//!   info: u32) -> !` and `use baremetal as _;` (mem* for libcore), and may define a
//!   32-bit `guest_phase32` in `global_asm!` that runs before paging (see `entry.s`);
//! - it prints one line per check with [`serial_println!`] and ends with
//!   [`cpu::finish`] (DONE hypercall under Cordon, Bochs magic breakpoint natively).
//!
//! SMP guests find the CPUs with [`acpi::find_madt`] and start the APs with
//! `smp::start_aps` (trampoline at 0x8000, INIT-SIPI-SIPI or SIPI-SIPI through the
//! trapped ICR; each AP runs a function of the guest in 64-bit mode on its own stack);
//! `modes::call_protected32` runs a 32-bit function in protected mode and comes back
//! to long mode; [`idt::probe_call`] and [`idt::probe_movsq`] catch the exceptions
//! of probes aimed at trapped memory (see tests/guests/experiments).
#![no_std]

#[cfg(any(test, feature = "build"))]
extern crate std;

pub mod acpi;
#[cfg(feature = "build")]
pub mod build_script;
pub mod cpu;
// `guest-support/bare-metal` in a guest's feature list also reaches its build-dependency
// copy (the one with `build`), which must not carry the entry code into a host program.
#[cfg(all(feature = "bare-metal", not(feature = "build")))]
pub mod entry;
pub mod idt;
#[cfg(all(feature = "bare-metal", not(feature = "build")))]
pub mod modes;
pub mod paging;
pub mod platform;
pub mod serial;
#[cfg(all(feature = "bare-metal", not(feature = "build")))]
pub mod smp;
pub mod timing;
pub mod trapped;
