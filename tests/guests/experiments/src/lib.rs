//! experiments-guest: the issue-5 experiment guests (smp, handoff, page-ring, segments,
//! paging). The pure logic (check tally, the handoff balance, the page-ring's expected
//! words, fault expectations) lives here and is tested on the host; `runtime` is the
//! bare-metal part the binaries share (console, exceptions, panic, the final verdict).
#![no_std]

#[cfg(test)]
extern crate std;

pub mod faults;
pub mod handoff;
pub mod report;
pub mod ring;
#[cfg(feature = "bare-metal")]
pub mod runtime;
