//! The `smp-sipi` guest binary: the `smp` guest (smp/common.rs) waking the APs with
//! SIPI-SIPI only, which Cordon's vCPUs, parked in wait-for-SIPI, need. Under Bochs 2.7
//! an INIT stays pending after it became a VM exit, so a vCPU that got one can never
//! run again there; this variant shows the rest of the AP start-up path works.
#![no_std]
#![no_main]

#[path = "smp/common.rs"]
mod common;

use guest_support::smp::StartupSequence;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    common::bsp_main(StartupSequence::SipiSipi)
}
