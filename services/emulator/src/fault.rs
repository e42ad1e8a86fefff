//! Why an instruction stopped before retiring, and the architectural
//! exceptions the emulator raises.

use crate::{Exception, MemoryError};

/// Exception vectors the emulator raises.
pub(crate) mod vector {
    pub const DE: u8 = 0;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const AC: u8 = 17;
}

/// An instruction that did not retire; nothing it did is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Exception(Exception),
    /// Re-execute the instruction (a compare-exchange lost a race, or the
    /// exit's guest-linear address does not match what the instruction touches).
    Retry,
    Memory(MemoryError),
    /// The emulator does not handle this (the text says what).
    Unsupported(&'static str),
}

impl From<MemoryError> for Fault {
    fn from(error: MemoryError) -> Fault {
        Fault::Memory(error)
    }
}

impl Fault {
    /// An exception with error code 0 (#GP(0), #SS(0), #AC(0)).
    pub(crate) fn with_zero_code(vector: u8) -> Fault {
        Fault::Exception(Exception {
            vector,
            error_code: Some(0),
            cr2: None,
        })
    }

    /// An exception without an error code (#UD, #DE, #NM).
    pub(crate) fn without_code(vector: u8) -> Fault {
        Fault::Exception(Exception {
            vector,
            error_code: None,
            cr2: None,
        })
    }

    pub(crate) fn gp0() -> Fault {
        Fault::with_zero_code(vector::GP)
    }

    pub(crate) fn page_fault(error_code: u32, linear: u64) -> Fault {
        Fault::Exception(Exception {
            vector: vector::PF,
            error_code: Some(error_code),
            cr2: Some(linear),
        })
    }
}
