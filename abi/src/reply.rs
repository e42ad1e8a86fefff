//! The reply: what a service writes back into the message page before it calls
//! `reply_recv`. The core copies it out, validates every field, then applies it.

use crate::state::{SegmentRegister, VectorRegisters};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// What the core should do with the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// The instruction was emulated: apply the changed groups and resume.
    Resume = 1,
    /// Inject the exception described in [`Reply::exception`] and resume.
    InjectException = 2,
    /// Resume without changes: the guest re-executes the instruction.
    Retry = 3,
    /// Stop this VM (the service could not emulate the instruction).
    Stop = 4,
}

impl Action {
    pub const fn from_raw(raw: u32) -> Option<Action> {
        match raw {
            1 => Some(Action::Resume),
            2 => Some(Action::InjectException),
            3 => Some(Action::Retry),
            4 => Some(Action::Stop),
            _ => None,
        }
    }
}

/// Which groups of a [`Reply`] the core should write back into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangedGroups;

impl ChangedGroups {
    pub const GPRS: u32 = 1 << 0;
    pub const RIP: u32 = 1 << 1;
    pub const RFLAGS: u32 = 1 << 2;
    /// Vector registers: which ones is in [`Reply::vector_mask`].
    pub const VECTORS: u32 = 1 << 3;
    /// One segment register, described by [`Reply::segment`] (ABI 1.3).
    pub const SEGMENT: u32 = 1 << 4;
    pub const ALL: u32 = Self::GPRS | Self::RIP | Self::RFLAGS | Self::VECTORS | Self::SEGMENT;
}

/// A segment register an emulated instruction loaded (MOV Sreg, POP Sreg,
/// LDS/LES/LFS/LGS/LSS): the whole register as the descriptor load left it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SegmentLoad {
    /// Selector, base, limit and access rights in VMCS form.
    pub value: SegmentRegister,
    /// Which register, as a raw [`crate::Segment`] (never CS).
    pub register: u8,
    /// [`SegmentLoad::BLOCKS_INTERRUPTS`].
    pub flags: u8,
    pub reserved: [u8; 6],
}
const _: () = assert!(size_of::<SegmentLoad>() == 32);

impl SegmentLoad {
    /// MOV SS or POP SS: interrupts (and single-step traps) are blocked
    /// until the next instruction retires (SDM "blocking by MOV SS").
    pub const BLOCKS_INTERRUPTS: u8 = 1 << 0;
}

/// An exception for the core to inject.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ExceptionReply {
    pub vector: u8,
    /// [`ExceptionReply::HAS_ERROR_CODE`] and [`ExceptionReply::SETS_CR2`].
    pub flags: u8,
    pub reserved: u16,
    pub error_code: u32,
    /// The faulting linear address for #PF.
    pub cr2: u64,
}
const _: () = assert!(size_of::<ExceptionReply>() == 16);

impl ExceptionReply {
    pub const HAS_ERROR_CODE: u8 = 1 << 0;
    pub const SETS_CR2: u8 = 1 << 1;
}

/// A service's answer to one [`crate::ExitMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Reply {
    pub abi_major: u16,
    pub abi_minor: u16,
    /// An [`Action`] as a raw value (validated by the core).
    pub action: u32,
    /// Must equal the `sequence` of the message being answered.
    pub sequence: u64,
    /// [`ChangedGroups`] bits.
    pub changed: u32,
    /// With [`ChangedGroups::VECTORS`]: bit n set means YMMn changed.
    pub vector_mask: u32,
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub exception: ExceptionReply,
    /// With [`ChangedGroups::SEGMENT`]: the segment register the instruction
    /// loaded; all zero otherwise (these were reserved bytes before ABI 1.3).
    pub segment: SegmentLoad,
    pub vectors: VectorRegisters,
}
const _: () = assert!(size_of::<Reply>() == 24 + 128 + 16 + 16 + 32 + 512);
const _: () = assert!(size_of::<Reply>() <= 2048);

impl Reply {
    /// An empty reply for `sequence` with the current ABI version.
    pub fn new(sequence: u64, action: Action) -> Reply {
        let mut reply = Reply::new_zeroed();
        reply.abi_major = crate::AbiVersion::CURRENT.major;
        reply.abi_minor = crate::AbiVersion::CURRENT.minor;
        reply.sequence = sequence;
        reply.action = action as u32;
        reply
    }
}
