//! Loading a data or stack segment register (ES, SS, DS, FS, GS) from a
//! selector as the CPU does in each mode: real and virtual-8086 mode
//! arithmetic, and in protected, compatibility and 64-bit mode the null
//! selector rules, the GDT/LDT descriptor fetch through the guest page walk
//! (implicit supervisor accesses), the type and privilege checks with their
//! faults, and the descriptor's accessed bit set by compare-exchange.

use crate::fault::{Fault, vector};
use crate::machine::Machine;
use crate::paging::AccessKind;
use crate::segmentation::is_canonical;
use crate::state::Mode;
use crate::{Exception, Guest};
use abi::{Segment, SegmentRegister, ValidGroups};

/// Selector bits.
const SELECTOR_RPL: u16 = 0b011;
const SELECTOR_TI: u16 = 0b100;

/// Descriptor type bits (the low nibble of the access byte).
const TYPE_ACCESSED: u32 = 0b0001;
/// Writable (data) or readable (code).
const TYPE_WRITABLE_OR_READABLE: u32 = 0b0010;
/// Conforming (code); expand-down for data.
const TYPE_CONFORMING: u32 = 0b0100;
const TYPE_CODE: u32 = 0b1000;

/// Offset of the access byte (type, S, DPL, P) within a descriptor.
const ACCESS_BYTE_OFFSET: u64 = 5;

/// An exception whose error code is a selector (EXT and IDT clear).
fn selector_fault(vector: u8, selector: u16) -> Fault {
    Fault::Exception(Exception {
        vector,
        error_code: Some(u32::from(selector & !SELECTOR_RPL)),
        cr2: None,
    })
}

/// An 8-byte code or data segment descriptor and where it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Descriptor {
    raw: u64,
    /// The guest-linear address of the descriptor.
    linear: u64,
}

impl Descriptor {
    /// The access byte: type 3:0, S 4, DPL 6:5, P 7.
    fn access_byte(&self) -> u8 {
        (self.raw >> 40) as u8
    }

    fn base(&self) -> u64 {
        ((self.raw >> 16) & 0xff_ffff) | ((self.raw >> 56) << 24)
    }

    /// The byte-granular limit (expanded when G is set).
    fn limit(&self) -> u32 {
        let raw = ((self.raw & 0xffff) | ((self.raw >> 32) & 0xf_0000)) as u32;
        if self.access_rights() & SegmentRegister::AR_G != 0 {
            (raw << 12) | 0xfff
        } else {
            raw
        }
    }

    /// The access rights in VMX form: the access byte in 7:0, AVL, L, D/B
    /// and G in 15:12.
    fn access_rights(&self) -> u32 {
        u32::from(self.access_byte()) | (((self.raw >> 52) & 0xf) << 12) as u32
    }
}

impl<G: Guest> Machine<'_, G> {
    /// The segment register `register` (ES, SS, DS, FS or GS, in x86
    /// encoding order) as loading `selector` into it leaves it, after every
    /// check the mode requires. The descriptor's accessed bit is set here
    /// (the only write): call it after every other check of the instruction.
    pub(crate) fn load_segment(
        &mut self,
        register: usize,
        selector: u16,
    ) -> Result<SegmentRegister, Fault> {
        let current = self
            .exit
            .state
            .segments
            .get(register)
            .copied()
            .ok_or(Fault::Unsupported("segment register index out of range"))?;
        let real_base = u64::from(selector) << 4;
        match self.mode {
            // Real mode keeps the limit and attributes (unreal mode survives).
            Mode::Real => Ok(SegmentRegister {
                selector,
                base: real_base,
                access_rights: current.access_rights & !SegmentRegister::AR_UNUSABLE,
                ..current
            }),
            Mode::Virtual8086 => Ok(SegmentRegister {
                selector,
                base: real_base,
                limit: 0xffff,
                access_rights: 0xf3,
                ..SegmentRegister::default()
            }),
            Mode::Protected | Mode::Compatibility | Mode::Long => {
                self.load_protected(register, selector)
            }
        }
    }

    /// A load in protected, compatibility or 64-bit mode.
    fn load_protected(&mut self, register: usize, selector: u16) -> Result<SegmentRegister, Fault> {
        let is_stack = register == Segment::Ss as usize;
        if selector & !SELECTOR_RPL == 0 {
            return self.null_segment(is_stack, selector);
        }
        let descriptor = self.read_descriptor(selector)?;
        check_descriptor(is_stack, selector, self.cpl, &descriptor)?;
        self.set_accessed(&descriptor)?;
        Ok(SegmentRegister {
            selector,
            access_rights: descriptor.access_rights() | TYPE_ACCESSED,
            limit: descriptor.limit(),
            base: descriptor.base(),
            ..SegmentRegister::default()
        })
    }

    /// A null selector: DS/ES/FS/GS become unusable; SS only in 64-bit
    /// mode at CPL < 3 with RPL = CPL (its DPL stays the CPL), #GP(0)
    /// otherwise.
    fn null_segment(&self, is_stack: bool, selector: u16) -> Result<SegmentRegister, Fault> {
        let mut access_rights = SegmentRegister::AR_UNUSABLE;
        if is_stack {
            let rpl = (selector & SELECTOR_RPL) as u8;
            if self.mode != Mode::Long || self.cpl == 3 || rpl != self.cpl {
                return Err(Fault::gp0());
            }
            access_rights |= u32::from(self.cpl) << SegmentRegister::AR_DPL_SHIFT;
        }
        Ok(SegmentRegister {
            selector,
            access_rights,
            ..SegmentRegister::default()
        })
    }

    /// Reads the descriptor `selector` names from the GDT or (TI set) the
    /// LDT: #GP(selector) beyond the table's limit or with an unusable LDTR,
    /// and any fault of the implicit supervisor read.
    fn read_descriptor(&mut self, selector: u16) -> Result<Descriptor, Fault> {
        let (base, limit) = if selector & SELECTOR_TI == 0 {
            let gdtr = &self.exit.state.gdtr;
            (gdtr.base, u64::from(gdtr.limit))
        } else {
            if self.exit.valid & ValidGroups::LDTR == 0 {
                return Err(Fault::Unsupported(
                    "LDT selector, but the exit carries no LDTR",
                ));
            }
            let ldtr = &self.exit.ldtr;
            if ldtr.unusable() {
                return Err(selector_fault(vector::GP, selector));
            }
            (ldtr.base, u64::from(ldtr.limit))
        };
        let offset = u64::from(selector & !0b111);
        if offset + 7 > limit {
            return Err(selector_fault(vector::GP, selector));
        }
        let linear = self.descriptor_linear(base, offset)?;
        let span = self.map_linear(linear, 8, AccessKind::implicit_supervisor(false))?;
        self.note_linear_range(linear, 8);
        let mut bytes = [0u8; 8];
        self.read_span(&span, &mut bytes)?;
        Ok(Descriptor {
            raw: u64::from_le_bytes(bytes),
            linear,
        })
    }

    /// The linear address of the descriptor at `offset` in a table at
    /// `base`: 64-bit in IA-32e mode, wrapping at 4 GiB otherwise.
    fn descriptor_linear(&self, base: u64, offset: u64) -> Result<u64, Fault> {
        let linear = base.wrapping_add(offset);
        if matches!(self.mode, Mode::Long | Mode::Compatibility) {
            // LGDT and LLDT refuse non-canonical bases; a table that runs
            // past the canonical range faults like any other access there.
            if !is_canonical(self.exit, linear) || !is_canonical(self.exit, linear.wrapping_add(7))
            {
                return Err(Fault::gp0());
            }
            Ok(linear)
        } else {
            Ok(linear & 0xffff_ffff)
        }
    }

    /// Sets the descriptor's accessed bit, if clear, with a compare-exchange
    /// of its access byte (a supervisor write, which may page-fault). A lost
    /// race re-executes the instruction.
    fn set_accessed(&mut self, descriptor: &Descriptor) -> Result<(), Fault> {
        let access = descriptor.access_byte();
        if u32::from(access) & TYPE_ACCESSED != 0 {
            return Ok(());
        }
        let mut linear = descriptor.linear.wrapping_add(ACCESS_BYTE_OFFSET);
        if !matches!(self.mode, Mode::Long | Mode::Compatibility) {
            linear &= 0xffff_ffff;
        }
        let span = self.map_linear(linear, 1, AccessKind::implicit_supervisor(true))?;
        self.compare_exchange_value(&span, u64::from(access), u64::from(access) | 1)
    }
}

/// The type and privilege checks of a segment-register load, then the
/// present check: SS needs a writable data segment with RPL = DPL = CPL
/// (#SS(selector) when not present); DS/ES/FS/GS a data or readable code
/// segment, with RPL and CPL at most DPL unless it is conforming code
/// (#NP(selector) when not present). Anything else is #GP(selector).
fn check_descriptor(
    is_stack: bool,
    selector: u16,
    cpl: u8,
    descriptor: &Descriptor,
) -> Result<(), Fault> {
    let rights = descriptor.access_rights();
    let kind = rights & SegmentRegister::AR_TYPE_MASK;
    let system = rights & SegmentRegister::AR_S == 0;
    let code = kind & TYPE_CODE != 0;
    let dpl = ((rights >> SegmentRegister::AR_DPL_SHIFT) & 3) as u8;
    let rpl = (selector & SELECTOR_RPL) as u8;
    let present = rights & SegmentRegister::AR_P != 0;
    if is_stack {
        let writable_data = !system && !code && kind & TYPE_WRITABLE_OR_READABLE != 0;
        if !writable_data || rpl != cpl || dpl != cpl {
            return Err(selector_fault(vector::GP, selector));
        }
        if !present {
            return Err(selector_fault(vector::SS, selector));
        }
        return Ok(());
    }
    let readable = !system && (!code || kind & TYPE_WRITABLE_OR_READABLE != 0);
    let conforming_code = code && kind & TYPE_CONFORMING != 0;
    if !readable || (!conforming_code && (rpl > dpl || cpl > dpl)) {
        return Err(selector_fault(vector::GP, selector));
    }
    if !present {
        return Err(selector_fault(vector::NP, selector));
    }
    Ok(())
}
