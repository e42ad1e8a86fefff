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
    /// The mode the exit state describes (CR0.PE, RFLAGS.VM, EFER.LMA, CS.L).
    pub(crate) fn of(exit: &ExitMessage) -> Mode {
        let state = &exit.state;
        let cs = &state.segments[abi::Segment::Cs as usize];
        if state.cr0 & control::CR0_PE == 0 {
            Mode::Real
        } else if state.rflags & rflags::VM != 0 {
            Mode::Virtual8086
        } else if state.efer & control::EFER_LMA != 0 {
            if cs.access_rights & abi::SegmentRegister::AR_L != 0 {
                Mode::Long
            } else {
                Mode::Compatibility
            }
        } else {
            Mode::Protected
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

    /// The current privilege level in this mode.
    pub(crate) fn cpl(self, exit: &ExitMessage) -> u8 {
        match self {
            Mode::Real => 0,
            Mode::Virtual8086 => 3,
            _ => (exit.state.cpl & 3) as u8,
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
    pub(crate) fn gpr(&self, reg: Register) -> Option<u64> {
        // 64- and 32-bit registers first: address bases and most operands.
        let value = match reg {
            _ if reg.is_gpr64() => *self.gprs.get(reg.number())?,
            _ if reg.is_gpr32() => *self.gprs.get(reg.number())? & 0xffff_ffff,
            Register::RIP => self.rip,
            Register::EIP => self.rip & 0xffff_ffff,
            _ if reg.is_gpr8() => {
                let (index, shift) = byte_register(reg.number());
                (*self.gprs.get(index)? >> shift) & 0xff
            }
            _ if reg.is_gpr16() => *self.gprs.get(reg.number())? & 0xffff,
            _ => return None,
        };
        Some(value)
    }

    /// Writes a general-purpose register with the CPU's merge rules: 8- and
    /// 16-bit writes keep the other bits, 32-bit writes zero the upper half.
    /// Returns false for a register that is not a GPR.
    pub(crate) fn set_gpr(&mut self, reg: Register, value: u64) -> bool {
        let (index, mask, shift) = if reg.is_gpr8() {
            let (index, shift) = byte_register(reg.number());
            (index, 0xffu64, shift)
        } else if reg.is_gpr16() {
            (reg.number(), 0xffff, 0)
        } else if reg.is_gpr32() || reg.is_gpr64() {
            (reg.number(), u64::MAX, 0)
        } else {
            return false;
        };
        let value = if reg.is_gpr32() {
            value & 0xffff_ffff
        } else {
            value
        };
        match self.gprs.get_mut(index) {
            Some(slot) => {
                *slot = (*slot & !(mask << shift)) | ((value & mask) << shift);
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

/// GPR index and bit shift of byte register number `n` (iced order: AL, CL,
/// DL, BL, AH, CH, DH, BH, SPL, BPL, SIL, DIL, R8L..R15L).
fn byte_register(n: usize) -> (usize, u32) {
    match n {
        0..=3 => (n, 0),
        4..=7 => (n - 4, 8),
        _ => (n - 4, 0),
    }
}
