//! The exit message: what the core writes into a CPU's message page when it
//! forwards a VM exit to that CPU's service thread.

use crate::state::{GuestState, SegmentRegister, VectorRegisters};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Basic VM-exit reasons the core forwards (SDM Vol. 3 Appendix C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitReason {
    EptViolation = 48,
}

impl ExitReason {
    pub const fn from_raw(raw: u32) -> Option<ExitReason> {
        match raw {
            48 => Some(ExitReason::EptViolation),
            _ => None,
        }
    }
}

/// Which groups of an [`ExitMessage`] hold valid data (a NOVA-style mask, so
/// the message can grow without breaking older services).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidGroups;

impl ValidGroups {
    pub const GPRS: u32 = 1 << 0;
    pub const CONTROL: u32 = 1 << 1;
    pub const SEGMENTS: u32 = 1 << 2;
    pub const GUEST_LINEAR: u32 = 1 << 3;
    /// XMM0-15 (low 128 bits of each vector register).
    pub const SSE: u32 = 1 << 4;
    /// The upper 128 bits of YMM0-15.
    pub const AVX: u32 = 1 << 5;
    /// [`ExitMessage::ldtr`] (ABI 1.3).
    pub const LDTR: u32 = 1 << 6;
}

/// EPT-violation exit qualification bits (SDM Vol. 3 Table 28-7).
pub mod ept_qualification {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const FETCH: u64 = 1 << 2;
    pub const GUEST_LINEAR_VALID: u64 = 1 << 7;
    /// With GUEST_LINEAR_VALID: the access was to the final translation, not
    /// to a paging-structure entry during the guest's page walk.
    pub const TRANSLATED_ACCESS: u64 = 1 << 8;
}

/// One forwarded VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ExitMessage {
    pub abi_major: u16,
    pub abi_minor: u16,
    /// Index of the vCPU that exited.
    pub vcpu: u32,
    /// Increases with every message on this CPU; the reply must echo it.
    pub sequence: u64,
    /// Basic exit reason (see [`ExitReason`]).
    pub reason: u32,
    /// [`ValidGroups`] bits.
    pub valid: u32,
    pub qualification: u64,
    pub guest_physical: u64,
    pub guest_linear: u64,
    pub state: GuestState,
    pub vectors: VectorRegisters,
    /// LDTR, for selectors with TI set (appended in ABI 1.3, so services
    /// built for 1.2 still find everything else where it was).
    pub ldtr: SegmentRegister,
}
const _: () = assert!(size_of::<ExitMessage>() == 48 + size_of::<GuestState>() + 512 + 24);
const _: () = assert!(size_of::<ExitMessage>() <= 2048);
