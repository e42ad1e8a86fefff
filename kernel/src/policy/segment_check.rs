//! Validation of the one segment-register load a reply may carry (ABI 1.3,
//! [`SegmentLoad`]): which register, its flags, and a value that passes the
//! VM-entry checks on guest segment registers (SDM Vol. 3 26.3.1.2, with
//! unrestricted guest on) in the guest's mode at the exit, without changing
//! the guest's privilege level.

use super::reply_check::GuestMode;
use abi::{GuestState, Segment, SegmentLoad, SegmentRegister};

/// Why a segment load was refused. [`SegmentLoadError::describe`] is what the
/// core prints; the texts are stable (tests grep them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentLoadError {
    /// The reply does not retire the instruction (no new RIP).
    WithoutNewRip,
    /// CS: only far transfers load it, and no emulated instruction does.
    CodeSegmentRegister,
    /// Register number above GS.
    UnknownRegister,
    /// Flag bits other than [`SegmentLoad::BLOCKS_INTERRUPTS`].
    UnknownFlags,
    /// [`SegmentLoad::BLOCKS_INTERRUPTS`] on a register other than SS.
    BlockingWithoutSs,
    /// Virtual-8086 mode: the value is not base = selector << 4, limit
    /// 0xffff, access rights 0xf3.
    NotVirtual8086Segment,
    /// Access-rights bits 11:8 or 31:17 set.
    AccessRightsReservedBits,
    /// A usable segment whose type has the accessed bit clear.
    NotAccessed,
    /// A usable code segment that is not readable.
    CodeNotReadable,
    /// A usable segment with S = 0 (a system descriptor).
    SystemSegment,
    /// A usable segment with P = 0.
    NotPresent,
    /// G does not fit the byte-granular limit.
    GranularityMismatch,
    /// A usable SS that is not a read/write data segment (type 3 or 7).
    StackNotWritableData,
    /// SS.DPL differs from the CPL at the exit: the load would change the
    /// guest's privilege level.
    StackDplNotCpl,
    /// The SS selector's RPL differs from the CPL (protected and long mode).
    StackRplNotCpl,
    /// FS or GS base not canonical.
    NonCanonicalBase,
    /// A usable ES, SS or DS with a base at or above 4 GiB.
    BaseAbove4GiB,
}

impl SegmentLoadError {
    pub const fn describe(self) -> &'static str {
        match self {
            SegmentLoadError::WithoutNewRip => "segment load on a reply that sets no new RIP",
            SegmentLoadError::CodeSegmentRegister => "segment load into CS",
            SegmentLoadError::UnknownRegister => "segment load into an unknown register",
            SegmentLoadError::UnknownFlags => "segment load flags have unknown bits",
            SegmentLoadError::BlockingWithoutSs => {
                "segment load blocks interrupts but does not load SS"
            }
            SegmentLoadError::NotVirtual8086Segment => {
                "segment load in virtual-8086 mode is not base selector*16, limit 0xffff, rights 0xf3"
            }
            SegmentLoadError::AccessRightsReservedBits => {
                "segment access rights reserved bit set (11:8 or 31:17)"
            }
            SegmentLoadError::NotAccessed => "usable segment without the accessed bit",
            SegmentLoadError::CodeNotReadable => "usable code segment not readable",
            SegmentLoadError::SystemSegment => "usable segment with S = 0 (system descriptor)",
            SegmentLoadError::NotPresent => "usable segment not present",
            SegmentLoadError::GranularityMismatch => "segment granularity does not fit the limit",
            SegmentLoadError::StackNotWritableData => "SS is not a read/write data segment",
            SegmentLoadError::StackDplNotCpl => {
                "SS.DPL differs from the CPL (the privilege level would change)"
            }
            SegmentLoadError::StackRplNotCpl => "SS selector RPL differs from the CPL",
            SegmentLoadError::NonCanonicalBase => "FS or GS base not canonical",
            SegmentLoadError::BaseAbove4GiB => "ES, SS or DS base above 4 GiB",
        }
    }
}

/// A checked segment load, ready to be written into the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentUpdate {
    pub register: Segment,
    pub value: SegmentRegister,
    /// MOV SS / POP SS: set blocking by MOV SS for the next instruction.
    pub blocks_interrupts: bool,
}

/// Why a segment load was refused: its reserved bytes (the caller reports
/// those as it reports every reserved field) or a rule of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentLoadRefusal {
    ReservedFieldNotZero,
    Rule(SegmentLoadError),
}

impl From<SegmentLoadError> for SegmentLoadRefusal {
    fn from(error: SegmentLoadError) -> Self {
        SegmentLoadRefusal::Rule(error)
    }
}

const RFLAGS_VM: u64 = 1 << 17;
/// Access rights of every segment register in virtual-8086 mode.
const VIRTUAL_8086_RIGHTS: u32 = 0xf3;
/// Access-rights bits VM entry requires clear: 11:8 and 31:17.
const AR_RESERVED: u32 = 0x0000_0f00 | 0xfffe_0000;
const TYPE_ACCESSED: u32 = 1 << 0;
const TYPE_READABLE: u32 = 1 << 1;
const TYPE_CODE: u32 = 1 << 3;
/// SS types VM entry accepts: read/write data, expand-up or expand-down, accessed.
const STACK_TYPES: [u32; 2] = [3, 7];

/// Checks `load` against the guest state the core captured at the exit;
/// `new_rip` is the RIP the reply sets, if it sets one.
pub fn check_segment_load(
    load: &SegmentLoad,
    state: &GuestState,
    mode: GuestMode,
    new_rip: Option<u64>,
) -> Result<SegmentUpdate, SegmentLoadRefusal> {
    let value = load.value;
    if load.reserved != [0; 6] || value.reserved0 != 0 || value.reserved1 != 0 {
        return Err(SegmentLoadRefusal::ReservedFieldNotZero);
    }
    if new_rip.is_none_or(|rip| rip == state.rip) {
        return Err(SegmentLoadError::WithoutNewRip.into());
    }
    let register = match load.register {
        0 => Segment::Es,
        1 => return Err(SegmentLoadError::CodeSegmentRegister.into()),
        2 => Segment::Ss,
        3 => Segment::Ds,
        4 => Segment::Fs,
        5 => Segment::Gs,
        _ => return Err(SegmentLoadError::UnknownRegister.into()),
    };
    if load.flags & !SegmentLoad::BLOCKS_INTERRUPTS != 0 {
        return Err(SegmentLoadError::UnknownFlags.into());
    }
    let blocks_interrupts = load.flags & SegmentLoad::BLOCKS_INTERRUPTS != 0;
    if blocks_interrupts && register != Segment::Ss {
        return Err(SegmentLoadError::BlockingWithoutSs.into());
    }
    let virtual_8086 = mode == GuestMode::Protected && state.rflags & RFLAGS_VM != 0;
    if virtual_8086 {
        check_virtual_8086(&value)?;
    } else {
        check_rights(register, &value)?;
        check_base(register, &value, mode)?;
    }
    if register == Segment::Ss {
        check_privilege(&value, state.cpl, mode, virtual_8086)?;
    }
    Ok(SegmentUpdate {
        register,
        value,
        blocks_interrupts,
    })
}

fn check_virtual_8086(value: &SegmentRegister) -> Result<(), SegmentLoadError> {
    let fits = value.base == u64::from(value.selector) << 4
        && value.limit == 0xffff
        && value.access_rights == VIRTUAL_8086_RIGHTS;
    if fits {
        Ok(())
    } else {
        Err(SegmentLoadError::NotVirtual8086Segment)
    }
}

/// The access-rights rules for ES, SS, DS, FS and GS outside virtual-8086 mode.
fn check_rights(register: Segment, value: &SegmentRegister) -> Result<(), SegmentLoadError> {
    let rights = value.access_rights;
    if rights & AR_RESERVED != 0 {
        return Err(SegmentLoadError::AccessRightsReservedBits);
    }
    if value.unusable() {
        return Ok(());
    }
    let segment_type = rights & SegmentRegister::AR_TYPE_MASK;
    if segment_type & TYPE_ACCESSED == 0 {
        return Err(SegmentLoadError::NotAccessed);
    }
    if segment_type & TYPE_CODE != 0 && segment_type & TYPE_READABLE == 0 {
        return Err(SegmentLoadError::CodeNotReadable);
    }
    if register == Segment::Ss && !STACK_TYPES.contains(&segment_type) {
        return Err(SegmentLoadError::StackNotWritableData);
    }
    if rights & SegmentRegister::AR_S == 0 {
        return Err(SegmentLoadError::SystemSegment);
    }
    if rights & SegmentRegister::AR_P == 0 {
        return Err(SegmentLoadError::NotPresent);
    }
    let granular = rights & SegmentRegister::AR_G != 0;
    let low_bits_full = value.limit & 0xfff == 0xfff;
    let high_bits_clear = value.limit >> 20 == 0;
    if (granular && !low_bits_full) || (!granular && !high_bits_clear) {
        return Err(SegmentLoadError::GranularityMismatch);
    }
    Ok(())
}

fn check_base(
    register: Segment,
    value: &SegmentRegister,
    mode: GuestMode,
) -> Result<(), SegmentLoadError> {
    match register {
        Segment::Fs | Segment::Gs => {
            // Canonical for the CPU's linear-address width, whatever the mode
            // (VM entry checks against 48 bits, or 57 with LA57 in long mode).
            let la57 = matches!(mode, GuestMode::Long { la57: true });
            if !(GuestMode::Long { la57 }).address_is_valid(value.base) {
                return Err(SegmentLoadError::NonCanonicalBase);
            }
        }
        _ if !value.unusable() && value.base >> 32 != 0 => {
            return Err(SegmentLoadError::BaseAbove4GiB);
        }
        _ => {}
    }
    Ok(())
}

/// SS keeps the privilege level: DPL (the CPL under VMX, even when SS is
/// unusable) equal to the CPL at the exit, and in protected and long mode
/// the selector's RPL too, as MOV SS, POP SS and LSS require.
fn check_privilege(
    value: &SegmentRegister,
    cpl: u32,
    mode: GuestMode,
    virtual_8086: bool,
) -> Result<(), SegmentLoadError> {
    if u32::from(value.dpl()) != cpl {
        return Err(SegmentLoadError::StackDplNotCpl);
    }
    let selector_rpl = u32::from(value.selector & 3);
    if mode != GuestMode::Real && !virtual_8086 && selector_rpl != cpl {
        return Err(SegmentLoadError::StackRplNotCpl);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
