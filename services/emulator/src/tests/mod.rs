//! Host tests of the emulator against an in-memory guest: modes, faults,
//! paging walks, accessed/dirty bits, split and locked accesses, and
//! instruction semantics checked against values worked out from the SDM.

extern crate std;

mod guest;
mod instructions;
mod locked;
mod modes;
mod paging;
mod robustness;
mod segment_loads;
mod segment_pointers;
