//! demo-guest: the checks' pure logic (names, the 32-bit result table, LAPIC register
//! sanity, report lines and the summary), shared by the bare-metal binary and host tests.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod lapic;
pub mod phase32;
pub mod report;
