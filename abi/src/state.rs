//! Guest register state as the core captures it at a VM exit: GPRs, control
//! registers, segment registers (in VMCS form) and vector registers.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Index of a general-purpose register in [`GuestState::gprs`]: the x86
/// encoding order, so a ModRM/REX register number indexes the array directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// Index of a segment register in [`GuestState::segments`] (x86 encoding order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Segment {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

/// One segment register as VMX stores it in the guest-state area.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SegmentRegister {
    pub selector: u16,
    pub reserved0: u16,
    /// Access rights in VMX format: type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13,
    /// D/B 14, G 15, unusable 16.
    pub access_rights: u32,
    /// The byte-granular limit (VMX stores it already expanded by G).
    pub limit: u32,
    pub reserved1: u32,
    pub base: u64,
}
const _: () = assert!(size_of::<SegmentRegister>() == 24);

impl SegmentRegister {
    pub const AR_TYPE_MASK: u32 = 0xf;
    pub const AR_S: u32 = 1 << 4;
    pub const AR_DPL_SHIFT: u32 = 5;
    pub const AR_P: u32 = 1 << 7;
    pub const AR_L: u32 = 1 << 13;
    pub const AR_DB: u32 = 1 << 14;
    pub const AR_G: u32 = 1 << 15;
    pub const AR_UNUSABLE: u32 = 1 << 16;

    /// The descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        ((self.access_rights >> Self::AR_DPL_SHIFT) & 3) as u8
    }

    /// The segment is marked unusable (null selector loaded, or never set).
    pub const fn unusable(&self) -> bool {
        self.access_rights & Self::AR_UNUSABLE != 0
    }
}

/// GDTR or IDTR.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DescriptorTable {
    pub limit: u32,
    pub reserved: u32,
    pub base: u64,
}
const _: () = assert!(size_of::<DescriptorTable>() == 16);

/// The guest's architectural state that instruction emulation needs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GuestState {
    /// General-purpose registers, indexed by [`Gpr`].
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub xcr0: u64,
    pub pkru: u32,
    /// Current privilege level (SS.DPL, as the SDM defines CPL under VMX).
    pub cpl: u32,
    /// Segment registers, indexed by [`Segment`].
    pub segments: [SegmentRegister; 6],
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
}
const _: () = assert!(size_of::<GuestState>() == 128 + 64 + 8 + 144 + 32);

impl GuestState {
    pub fn gpr(&self, reg: Gpr) -> u64 {
        self.gprs[reg as usize]
    }

    pub fn segment(&self, seg: Segment) -> &SegmentRegister {
        &self.segments[seg as usize]
    }
}

/// The 16 vector registers YMM0-YMM15 (the low 16 bytes of each are XMMn).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VectorRegisters {
    pub ymm: [[u8; 32]; 16],
}
const _: () = assert!(size_of::<VectorRegisters>() == 512);
