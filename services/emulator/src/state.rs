//! The register file an instruction works on: a private copy of the exit's
//! GPRs, RIP, RFLAGS and vector registers, committed only when it retires, and
//! the processor mode the exit state puts the guest in.

use abi::ExitMessage;
use iced_x86::Register;

/// RFLAGS bits the emulator reads or writes.
pub(crate) mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    /// The six status flags that arithmetic instructions write.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Control-register and EFER bits the emulator reads.
pub(crate) mod control {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;
    pub const CR4_PKE: u64 = 1 << 22;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// The processor mode, which decides addressing, segmentation and bitness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Real,
    Virtual8086,
    Protected,
    Compatibility,
    Long,
}

impl Mode {
    /// The mode the exit state describes (CR0.PE, RFLAGS.VM, EFER.LMA, CS.L)
    /// and the current privilege level in it, told apart together: the
    /// CPL matched on the mode again cost 9 instructions an emulated MOV.
    pub(crate) fn of(exit: &ExitMessage) -> (Mode, u8) {
        let state = &exit.state;
        let cs = &state.segments[abi::Segment::Cs as usize];
        let cpl = (state.cpl & 3) as u8;
        if state.cr0 & control::CR0_PE == 0 {
            (Mode::Real, 0)
        } else if state.rflags & rflags::VM != 0 {
            (Mode::Virtual8086, 3)
        } else if state.efer & control::EFER_LMA != 0 {
            if cs.access_rights & abi::SegmentRegister::AR_L != 0 {
                (Mode::Long, cpl)
            } else {
                (Mode::Compatibility, cpl)
            }
        } else {
            (Mode::Protected, cpl)
        }
    }

    /// Default code size in bits (16, 32 or 64).
    pub(crate) fn bitness(self, exit: &ExitMessage) -> u32 {
        let cs = &exit.state.segments[abi::Segment::Cs as usize];
        match self {
            Mode::Long => 64,
            Mode::Virtual8086 => 16,
            _ if cs.access_rights & abi::SegmentRegister::AR_DB != 0 => 32,
            _ => 16,
        }
    }
}

/// The registers an instruction may change.
#[derive(Clone, Debug)]
pub(crate) struct Registers {
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// The vector register the instruction wrote (index, new YMM value);
    /// the others are read from the exit message.
    pub vector_write: Option<(usize, [u8; 32])>,
    /// The segment register the instruction loaded (the others are read
    /// from the exit message, which the instruction never sees changed).
    pub segment_load: Option<abi::SegmentLoad>,
}

impl Registers {
    pub(crate) fn from_exit(exit: &ExitMessage) -> Registers {
        Registers {
            gprs: exit.state.gprs,
            rip: exit.state.rip,
            rflags: exit.state.rflags,
            vector_write: None,
            segment_load: None,
        }
    }

    /// The value of a general-purpose register of any size (zero-extended),
    /// or of RIP/EIP. Other registers read as `None`.
    // GPRs first: RIP and EIP, tested first, cost two compares on every
    // register operand (5 instructions a MOV). The 16-, 32- and 64-bit
    // GPRs always inline, the rest out of line: called whole, a 32-bit
    // operand took 21 instructions (store MOV 919.7 -> 910.7; inlined
    // whole, 9 more than called).
    #[inline(always)]
    pub(crate) fn gpr(&self, reg: Register) -> Option<u64> {
        if let Some(slot) = GprSlot::wide(reg) {
            return Some(*self.gprs.get(slot.index)? & slot.mask);
        }
        self.narrow_gpr(reg)
    }

    /// [`Registers::gpr`] of an 8-bit GPR, RIP or EIP.
    #[inline(never)]
    fn narrow_gpr(&self, reg: Register) -> Option<u64> {
        if let Some(slot) = GprSlot::of(reg) {
            return Some((*self.gprs.get(slot.index)? >> slot.shift) & slot.mask);
        }
        match reg {
            Register::RIP => Some(self.rip),
            Register::EIP => Some(self.rip & 0xffff_ffff),
            _ => None,
        }
    }

    /// Writes a general-purpose register with the CPU's merge rules: 8- and
    /// 16-bit writes keep the other bits, 32-bit writes zero the upper half.
    /// Returns false for a register that is not a GPR.
    #[inline]
    pub(crate) fn set_gpr(&mut self, reg: Register, value: u64) -> bool {
        let Some(slot) = GprSlot::of(reg) else {
            return false;
        };
        match self.gprs.get_mut(slot.index) {
            Some(old) => {
                *old = (*old & slot.kept) | ((value & slot.mask) << slot.shift);
                true
            }
            None => false,
        }
    }

    /// Replaces YMM`index` and marks it changed.
    pub(crate) fn set_vector(&mut self, index: usize, value: [u8; 32]) {
        if index < 16 {
            self.vector_write = Some((index, value));
        }
    }

    /// YMM`index` as the instruction sees it.
    pub(crate) fn vector(&self, exit: &ExitMessage, index: usize) -> Option<[u8; 32]> {
        match self.vector_write {
            Some((written, value)) if written == index => Some(value),
            _ => exit.vectors.ymm.get(index).copied(),
        }
    }

    /// The arithmetic flags in `mask` replaced by those in `flags`.
    pub(crate) fn set_flags(&mut self, mask: u64, flags: u64) {
        self.rflags = (self.rflags & !mask) | (flags & mask);
    }

    pub(crate) fn flag(&self, flag: u64) -> bool {
        self.rflags & flag != 0
    }
}

/// Where a general-purpose register operand lives in the register file.
/// Worked out from iced-x86's numbering (AL..R15L, AX..R15W, EAX..R15D,
/// RAX..R15, each in encoding order) by arithmetic: `Register::number` is
/// a table lookup, a load on the path of every operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GprSlot {
    /// The 64-bit register, as an index into `gprs`.
    pub index: usize,
    /// The bit position of the operand (8 for AH, CH, DH and BH).
    pub shift: u32,
    /// The operand's bits, before the shift.
    pub mask: u64,
    /// The bits of the 64-bit register a write keeps (none for a 32-bit
    /// write, which zeroes the upper half).
    pub kept: u64,
}

impl GprSlot {
    pub(crate) fn of(reg: Register) -> Option<GprSlot> {
        let number = |first: Register| reg as usize - first as usize;
        let slot = |index, shift, mask: u64, kept| GprSlot {
            index,
            shift,
            mask,
            kept,
        };
        Some(if reg.is_gpr64() {
            slot(number(Register::RAX), 0, u64::MAX, 0)
        } else if reg.is_gpr32() {
            slot(number(Register::EAX), 0, 0xffff_ffff, 0)
        } else if reg.is_gpr16() {
            slot(number(Register::AX), 0, 0xffff, !0xffff)
        } else if reg.is_gpr8() {
            // AH, CH, DH and BH (4..=7) are bits 15:8 of RAX..RBX; with
            // REX, 4..=7 are SPL..DIL and the rest follow in order.
            match number(Register::AL) {
                high @ 4..=7 => slot(high - 4, 8, 0xff, !0xff00),
                low @ 0..=3 => slot(low, 0, 0xff, !0xff),
                other => slot(other - 4, 0, 0xff, !0xff),
            }
        } else {
            return None;
        })
    }

    /// The slot of a 16-, 32- or 64-bit GPR. AX..R15W, EAX..R15D and
    /// RAX..R15 follow one another: one compare tells all three widths
    /// from the rest, the width is the row and its masks come from a
    /// table (for `Registers::gpr`'s inlined part; `of`, inlined where a
    /// 64-bit register is the common case, tests that width first).
    #[inline(always)]
    fn wide(reg: Register) -> Option<GprSlot> {
        let wide = (reg as usize).wrapping_sub(Register::AX as usize);
        if wide >= 48 {
            return None;
        }
        let (mask, kept) = *WIDE_MASKS.get(wide >> 4)?;
        Some(GprSlot {
            index: wide & 15,
            shift: 0,
            mask,
            kept,
        })
    }
}

/// The operand mask and the bits a write keeps, of 16-, 32- and 64-bit
/// GPRs (a 32-bit write zeroes the upper half).
const WIDE_MASKS: [(u64, u64); 3] = [(0xffff, !0xffff), (0xffff_ffff, 0), (u64::MAX, 0)];

const _: () = assert!(
    Register::EAX as usize == Register::AX as usize + 16
        && Register::RAX as usize == Register::AX as usize + 32
        && Register::R15L as usize == Register::AL as usize + 19
);
