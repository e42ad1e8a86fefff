//! Operands: effective addresses (16/32/64-bit forms, RIP-relative, address
//! wrap at the address size, segment overrides) and reading, writing and
//! read-modify-writing register, immediate and memory operands.

use crate::Guest;
use crate::fault::Fault;
use crate::machine::{Machine, address_mask};
use crate::memory::{Alignment, DataAccess, Span};
use crate::state::{GprSlot, Mode};
use abi::Segment;
use iced_x86::{CodeSize, Instruction, OpKind, Register};

/// A memory operand: segment (x86 encoding order) and offset within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemoryOperand {
    pub segment: usize,
    pub offset: u64,
    /// All ones in the low address-size bytes (`offset` is already wrapped
    /// with it).
    pub address_mask: u64,
}

/// The address-size mask of an operand with neither base nor index: the
/// displacement's size, else the code size.
fn displacement_address_mask(instruction: &Instruction) -> u64 {
    let displacement = instruction.memory_displ_size();
    if displacement >= 2 {
        return address_mask(displacement);
    }
    address_mask(match instruction.code_size() {
        CodeSize::Code16 => 2,
        CodeSize::Code32 => 4,
        _ => 8,
    })
}

/// Index in x86 encoding order of an iced segment register.
pub(crate) fn segment_index(reg: Register) -> Result<usize, Fault> {
    if reg.is_segment_register() {
        // ES..GS in encoding order (`number` would be a table lookup).
        Ok(reg as usize - Register::ES as usize)
    } else {
        Err(Fault::Unsupported("memory operand without a segment"))
    }
}

impl<G: Guest> Machine<'_, G> {
    /// The segment and offset of the explicit memory operand.
    // The address size is that of the base and index registers (their
    // masks, all ones up to the register's width, or-ed) and each register
    // is located once: sizing them with iced's `Register::size` table as
    // well cost about 30 instructions a MOV. Always inline (into
    // `map_memory_operand`): returned in memory, the operand cost 20
    // instructions a store MOV, 15 a load (inlined in its nine callers,
    // 10 KB of code).
    #[inline(always)]
    pub(crate) fn memory_operand(&self, instruction: &Instruction) -> Result<MemoryOperand, Fault> {
        let mut offset = instruction.memory_displacement64();
        // RIP-relative: iced's displacement is already the target.
        let mut mask = match instruction.memory_base() {
            Register::None => 0,
            Register::RIP => u64::MAX,
            Register::EIP => 0xffff_ffff,
            base => {
                let (value, mask) = self
                    .address_register(base)
                    .ok_or(Fault::Unsupported("memory base register"))?;
                offset = offset.wrapping_add(value);
                mask
            }
        };
        let index = instruction.memory_index();
        if index != Register::None {
            let (value, index_mask) = self
                .address_register(index)
                .ok_or(Fault::Unsupported("vector-indexed memory operand"))?;
            offset = offset
                .wrapping_add(value.wrapping_mul(u64::from(instruction.memory_index_scale())));
            mask |= index_mask;
        }
        if mask == 0 {
            mask = displacement_address_mask(instruction);
        }
        Ok(MemoryOperand {
            segment: self.effective_segment(instruction)?,
            offset: offset & mask,
            address_mask: mask,
        })
    }

    /// The value of a GPR in an address and the mask of its width.
    // A 64-bit register first, whole: through `GprSlot` it was shifted and
    // masked by the slot's values, which the paths merged into.
    #[inline]
    fn address_register(&self, reg: Register) -> Option<(u64, u64)> {
        if reg.is_gpr64() {
            let value = *self.regs.gprs.get(reg as usize - Register::RAX as usize)?;
            return Some((value, u64::MAX));
        }
        let slot = GprSlot::of(reg)?;
        let value = (*self.regs.gprs.get(slot.index)? >> slot.shift) & slot.mask;
        Some((value, slot.mask))
    }

    /// The segment of the memory operand. In 64-bit mode CS/DS/ES/SS
    /// prefixes are ignored: the operand is SS-relative (a non-canonical
    /// address is #SS) exactly when its base is rSP or rBP, as on the CPU.
    pub(crate) fn effective_segment(&self, instruction: &Instruction) -> Result<usize, Fault> {
        if self.mode != Mode::Long {
            return segment_index(instruction.memory_segment());
        }
        // The prefix alone (`memory_segment` would also look at the base).
        let prefix = instruction.segment_prefix();
        if matches!(prefix, Register::FS | Register::GS) {
            return segment_index(prefix);
        }
        let stack_based = matches!(
            instruction.memory_base(),
            Register::RSP | Register::RBP | Register::ESP | Register::EBP
        );
        Ok(if stack_based {
            Segment::Ss as usize
        } else {
            Segment::Ds as usize
        })
    }

    /// Maps the explicit memory operand (`len` bytes). Inlined, with
    /// [`Machine::map_data_inlined`], so that the span is not copied out of
    /// memory.
    #[inline(always)]
    pub(crate) fn map_memory_operand(
        &mut self,
        instruction: &Instruction,
        len: usize,
        access: DataAccess,
        alignment: Alignment,
    ) -> Result<Span, Fault> {
        let operand = self.memory_operand(instruction)?;
        self.map_data_inlined(operand.segment, operand.offset, len, access, alignment)
    }

    /// The value of a register as an operand: GPRs and segment selectors.
    // Inline, GPRs first and segment registers out of line: a call
    // returning the value in memory cost 4 instructions a MOV (REP MOVSD
    // pays 1 an iteration for it, in register pressure).
    #[inline]
    pub(crate) fn register_value(&self, reg: Register) -> Result<u64, Fault> {
        match self.regs.gpr(reg) {
            Some(value) => Ok(value),
            None => self.selector_value(reg),
        }
    }

    /// The selector of a segment register as an operand.
    #[inline(never)]
    fn selector_value(&self, reg: Register) -> Result<u64, Fault> {
        let index = segment_index(reg).map_err(|_| Fault::Unsupported("operand register"))?;
        let segment = self
            .exit
            .state
            .segments
            .get(index)
            .ok_or(Fault::Unsupported("segment register"))?;
        Ok(u64::from(segment.selector))
    }

    /// Writes a GPR operand.
    pub(crate) fn set_register(&mut self, reg: Register, value: u64) -> Result<(), Fault> {
        if self.regs.set_gpr(reg, value) {
            Ok(())
        } else {
            Err(Fault::Unsupported("destination register"))
        }
    }

    /// Reads operand `index` (`size` bytes, at most 8), zero-extended.
    // Inline, with the memory access out of line (also in `write_operand`):
    // as one function, the register case paid the memory case's prologue
    // and epilogue and returned the value in memory (17 instructions a
    // store MOV, 43 a load). Always inline: left to LLVM, it was called
    // from MOV (19 instructions more a store, 11 KB less code).
    #[inline(always)]
    pub(crate) fn read_operand(
        &mut self,
        instruction: &Instruction,
        index: u32,
        size: usize,
    ) -> Result<u64, Fault> {
        match instruction.op_kind(index) {
            OpKind::Register => self.register_value(instruction.op_register(index)),
            OpKind::Memory => self.read_memory_operand(instruction, size),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate8_2nd => Ok(instruction.immediate(index) & size_mask(size)),
            _ => Err(Fault::Unsupported("operand kind")),
        }
    }

    /// Reads the explicit memory operand (`size` bytes, at most 8).
    #[inline(never)]
    fn read_memory_operand(
        &mut self,
        instruction: &Instruction,
        size: usize,
    ) -> Result<u64, Fault> {
        let span = self.map_memory_operand(
            instruction,
            size,
            DataAccess::Read,
            Alignment::Checked(size as u64),
        )?;
        self.read_value(&span)
    }

    /// Writes operand `index` (`size` bytes, at most 8).
    #[inline]
    pub(crate) fn write_operand(
        &mut self,
        instruction: &Instruction,
        index: u32,
        size: usize,
        value: u64,
    ) -> Result<(), Fault> {
        match instruction.op_kind(index) {
            OpKind::Register => self.set_register(instruction.op_register(index), value),
            OpKind::Memory => self.write_memory_operand(instruction, size, value),
            _ => Err(Fault::Unsupported("destination operand kind")),
        }
    }

    /// Writes the explicit memory operand (`size` bytes, at most 8).
    #[inline(never)]
    fn write_memory_operand(
        &mut self,
        instruction: &Instruction,
        size: usize,
        value: u64,
    ) -> Result<(), Fault> {
        let span = self.map_memory_operand(
            instruction,
            size,
            DataAccess::Write,
            Alignment::Checked(size as u64),
        )?;
        self.write_value(&span, value)
    }

    /// Read-modify-write of operand `index`: `compute` gets the old value and
    /// returns the new one plus a result for the caller. A memory operand is
    /// mapped for writing first; with `locked` the store is one
    /// compare-exchange against the value read (a lost race retries).
    pub(crate) fn modify_operand<T>(
        &mut self,
        instruction: &Instruction,
        index: u32,
        size: usize,
        locked: bool,
        compute: impl FnOnce(u64) -> Result<(u64, T), Fault>,
    ) -> Result<(u64, T), Fault> {
        match instruction.op_kind(index) {
            OpKind::Register => {
                let reg = instruction.op_register(index);
                let old = self.register_value(reg)?;
                let (new, result) = compute(old)?;
                self.set_register(reg, new)?;
                Ok((old, result))
            }
            OpKind::Memory => {
                let span = self.map_memory_operand(
                    instruction,
                    size,
                    DataAccess::Write,
                    Alignment::Checked(size as u64),
                )?;
                let old = self.read_value(&span)?;
                let (new, result) = compute(old)?;
                if locked {
                    self.compare_exchange_value(&span, old, new)?;
                } else {
                    self.write_value(&span, new)?;
                }
                Ok((old, result))
            }
            _ => Err(Fault::Unsupported("destination operand kind")),
        }
    }
}

/// The size in bytes of operand `index` (immediates take operand 0's size).
// Inline: a call through the GOT cost 10 instructions a MOV.
#[inline]
pub(crate) fn operand_size(instruction: &Instruction, index: u32) -> usize {
    match instruction.op_kind(index) {
        OpKind::Register => instruction.op_register(index).size(),
        OpKind::Memory => instruction.memory_size().size(),
        _ if index > 0 => operand_size(instruction, 0),
        _ => 0,
    }
}

/// All ones in the low `size` bytes.
pub(crate) fn size_mask(size: usize) -> u64 {
    match size {
        0 => 0,
        1..=7 => (1u64 << (size * 8)) - 1,
        _ => u64::MAX,
    }
}
