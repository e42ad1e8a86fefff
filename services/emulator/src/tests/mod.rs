//! Host tests of the emulator against an in-memory guest: modes, faults,
//! paging walks (and the walks an `Emulator` remembers), accessed/dirty bits, split and locked accesses, and
//! instruction semantics checked against values worked out from the SDM.

extern crate std;

mod guest;
mod instructions;
mod locked;
mod modes;
mod paging;
mod registers;
mod robustness;
mod segment_loads;
mod segment_pointers;
mod walk_memo;
