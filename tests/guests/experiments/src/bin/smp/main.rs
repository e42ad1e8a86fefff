//! The `smp` guest binary: the APs are woken with INIT-SIPI-SIPI, as the MP
//! specification and real operating systems do (see common.rs).
#![no_std]
#![no_main]

mod common;

use guest_support::smp::StartupSequence;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    common::bsp_main(StartupSequence::InitSipiSipi)
}
