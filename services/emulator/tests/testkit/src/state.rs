//! Builders for the exit messages the emulator starts from: 64-bit mode, 32-bit
//! protected mode (with 32-bit or PAE paging, or none), compatibility mode and
//! real mode, with flat or hand-made segments.

use abi::exit::ept_qualification;
use abi::{AbiVersion, ExitMessage, ExitReason, GuestState, SegmentRegister, ValidGroups};
use abi::{Segment, VectorRegisters};

/// CR0 bits.
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const LA57: u64 = 1 << 12;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
}

/// EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// RFLAGS bits.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const AC: u64 = 1 << 18;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Segment descriptor types (the 4-bit type field with S = 1).
pub mod segment_type {
    /// Data, read/write, accessed.
    pub const DATA_RW: u32 = 0x3;
    /// Data, read-only, accessed.
    pub const DATA_RO: u32 = 0x1;
    /// Data, read/write, expand-down, accessed.
    pub const DATA_RW_EXPAND_DOWN: u32 = 0x7;
    /// Code, execute/read, accessed.
    pub const CODE_XR: u32 = 0xb;
    /// Code, execute-only, accessed.
    pub const CODE_X: u32 = 0x9;
}

/// A present, S = 1 segment register.
pub fn segment(
    selector: u16,
    base: u64,
    limit: u32,
    kind: u32,
    dpl: u8,
    extra: u32,
) -> SegmentRegister {
    SegmentRegister {
        selector,
        access_rights: kind
            | SegmentRegister::AR_S
            | (u32::from(dpl & 3) << SegmentRegister::AR_DPL_SHIFT)
            | SegmentRegister::AR_P
            | extra,
        limit,
        base,
        ..SegmentRegister::default()
    }
}

/// A flat 4 GiB data segment.
pub fn flat_data(selector: u16, dpl: u8) -> SegmentRegister {
    segment(
        selector,
        0,
        0xffff_ffff,
        segment_type::DATA_RW,
        dpl,
        SegmentRegister::AR_DB | SegmentRegister::AR_G,
    )
}

/// A null selector: unusable.
pub fn unusable() -> SegmentRegister {
    SegmentRegister {
        access_rights: SegmentRegister::AR_UNUSABLE,
        ..SegmentRegister::default()
    }
}

/// A 64-bit code segment (L = 1).
pub fn code64(selector: u16, dpl: u8) -> SegmentRegister {
    segment(
        selector,
        0,
        0xffff_ffff,
        segment_type::CODE_XR,
        dpl,
        SegmentRegister::AR_L | SegmentRegister::AR_G,
    )
}

/// A flat 32-bit code segment (D = 1).
pub fn code32(selector: u16, dpl: u8) -> SegmentRegister {
    segment(
        selector,
        0,
        0xffff_ffff,
        segment_type::CODE_XR,
        dpl,
        SegmentRegister::AR_DB | SegmentRegister::AR_G,
    )
}

/// A real-mode segment: base = selector * 16, 64 KiB limit.
pub fn real_mode_segment(selector: u16, code: bool) -> SegmentRegister {
    let kind = if code {
        segment_type::CODE_XR
    } else {
        segment_type::DATA_RW
    };
    segment(selector, u64::from(selector) << 4, 0xffff, kind, 0, 0)
}

fn message(state: GuestState) -> ExitMessage {
    ExitMessage {
        abi_major: AbiVersion::CURRENT.major,
        abi_minor: AbiVersion::CURRENT.minor,
        vcpu: 0,
        sequence: 1,
        reason: ExitReason::EptViolation as u32,
        valid: ValidGroups::GPRS
            | ValidGroups::CONTROL
            | ValidGroups::SEGMENTS
            | ValidGroups::SSE
            | ValidGroups::AVX
            | ValidGroups::LDTR,
        qualification: ept_qualification::READ | ept_qualification::WRITE,
        guest_physical: 0,
        guest_linear: 0,
        state,
        vectors: VectorRegisters::default(),
        ldtr: SegmentRegister {
            access_rights: SegmentRegister::AR_UNUSABLE,
            ..SegmentRegister::default()
        },
    }
}

/// The control registers for paging: CR0 (PE, PG, WP, AM, ...), CR4 and EFER.
fn paged_control(state: &mut GuestState, cr3: u64) {
    state.cr0 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::AM | cr0::PG;
    state.cr3 = cr3;
    state.cr4 = cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::OSXSAVE;
    state.xcr0 = 0x7;
}

/// 64-bit mode at `cpl` with 4-level paging rooted at `cr3`: flat
/// segments, CS.L = 1, EFER.LME|LMA|NXE, CR0.PE|PG|WP|AM, CR4.PAE.
pub fn long_mode(cr3: u64, cpl: u8, rip: u64) -> ExitMessage {
    let mut state = GuestState::default();
    paged_control(&mut state, cr3);
    state.cr4 |= cr4::PAE;
    state.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE;
    state.cpl = u32::from(cpl);
    state.rip = rip;
    state.rflags = rflags::FIXED | rflags::IF;
    let rpl = u16::from(cpl);
    let data = flat_data(0x10 | rpl, cpl);
    state.segments = [data, code64(0x08 | rpl, cpl), data, data, data, data];
    message(state)
}

/// 32-bit protected mode at `cpl` with flat segments (CS.D = 1). `paging`
/// chooses CR4.PAE (true) or 32-bit paging (false) rooted at `cr3`;
/// `None` leaves paging off.
pub fn protected_mode32(paging: Option<(bool, u64)>, cpl: u8, rip: u64) -> ExitMessage {
    let mut state = GuestState::default();
    match paging {
        Some((pae, cr3)) => {
            paged_control(&mut state, cr3);
            if pae {
                state.cr4 |= cr4::PAE;
                state.efer = efer::NXE;
            }
        }
        None => {
            state.cr0 = cr0::PE | cr0::ET | cr0::NE;
            state.cr4 = cr4::OSFXSR | cr4::OSXMMEXCPT;
        }
    }
    state.cpl = u32::from(cpl);
    state.rip = rip;
    state.rflags = rflags::FIXED | rflags::IF;
    let rpl = u16::from(cpl);
    let data = flat_data(0x10 | rpl, cpl);
    state.segments = [data, code32(0x08 | rpl, cpl), data, data, data, data];
    message(state)
}

/// Compatibility mode: long mode paging, a 32-bit code segment (L = 0, D = 1).
pub fn compatibility_mode(cr3: u64, cpl: u8, rip: u64) -> ExitMessage {
    let mut exit = long_mode(cr3, cpl, rip);
    exit.state.segments[Segment::Cs as usize] = code32(0x18 | u16::from(cpl), cpl);
    exit
}

/// Real mode: CR0.PE = 0, segments with base = selector * 16.
pub fn real_mode(cs: u16, ds: u16, ip: u16) -> ExitMessage {
    let data = real_mode_segment(ds, false);
    message(GuestState {
        cr0: cr0::ET | cr0::NE,
        rip: u64::from(ip),
        rflags: rflags::FIXED,
        segments: [data, real_mode_segment(cs, true), data, data, data, data],
        ..GuestState::default()
    })
}
