//! The contract between the Cordon core (ring 0) and its ring-3 services.
//!
//! Everything here is a fixed-layout, `#[repr(C)]` type with explicit reserved
//! fields, so that a message page can be read and written as plain bytes on both
//! sides. The core never trusts a value that came from a service: every type that
//! travels from ring 3 to ring 0 is copied out of shared memory and validated.
#![no_std]

pub mod capability;
pub mod exit;
pub mod reply;
pub mod state;
pub mod syscall;

pub use capability::Rights;
pub use exit::{ExitMessage, ExitReason, ValidGroups};
pub use reply::{Action, ChangedGroups, ExceptionReply, Reply, SegmentLoad};
pub use state::{DescriptorTable, Gpr, GuestState, Segment, SegmentRegister, VectorRegisters};
pub use syscall::{CmpxchgRequest, ServiceStart, Syscall, SyscallError};

/// The version of this ABI. A service states the version it was built for in
/// its first `reply_recv`; the core refuses a different major version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiVersion {
    pub major: u16,
    pub minor: u16,
}

impl AbiVersion {
    /// The version this crate describes.
    pub const CURRENT: AbiVersion = AbiVersion { major: 1, minor: 3 };

    /// Packs the version into one register value (`major << 16 | minor`).
    pub const fn pack(self) -> u64 {
        ((self.major as u64) << 16) | self.minor as u64
    }

    /// Unpacks a register value; bits above 31 must be zero.
    pub const fn unpack(value: u64) -> Option<AbiVersion> {
        if value >> 32 != 0 {
            return None;
        }
        Some(AbiVersion {
            major: (value >> 16) as u16,
            minor: value as u16,
        })
    }

    /// A service built for `self` can talk to a core built for `core`.
    pub const fn compatible_with(self, core: AbiVersion) -> bool {
        self.major == core.major
    }
}

/// Size of a guest or host page, the unit of `map` and of EPT traps.
pub const PAGE_SIZE: u64 = 4096;

#[cfg(test)]
mod tests;
