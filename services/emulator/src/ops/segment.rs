//! Segment-register loads: MOV Sreg, r/m16; POP ES/SS/DS/FS/GS; LDS, LES,
//! LFS, LGS and LSS (the #UD of MOV to CS or to a reserved Sreg encoding is
//! in `undefined`). The operand is read (with its own segmentation, alignment and
//! paging checks) before the descriptor is checked and loaded.

use crate::Guest;
use crate::alu::mask;
use crate::fault::{Fault, vector};
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::operand::segment_index;
use abi::{Segment, SegmentLoad};
use iced_x86::{Instruction, Mnemonic, OpKind};

/// The register a load targets, in x86 encoding order; CS is #UD.
fn target(reg: iced_x86::Register) -> Result<usize, Fault> {
    let register = segment_index(reg)?;
    if register == Segment::Cs as usize {
        return Err(Fault::without_code(vector::UD));
    }
    Ok(register)
}

/// Loads `selector` into `register` and records it for the reply. MOV SS
/// and POP SS (`blocks_interrupts`) block interrupts for one instruction.
fn load<G: Guest>(
    m: &mut Machine<'_, G>,
    register: usize,
    selector: u16,
    blocks_interrupts: bool,
) -> Result<(), Fault> {
    let value = m.load_segment(register, selector)?;
    m.regs.segment_load = Some(SegmentLoad {
        value,
        register: register as u8,
        flags: if blocks_interrupts {
            SegmentLoad::BLOCKS_INTERRUPTS
        } else {
            0
        },
        reserved: [0; 6],
    });
    Ok(())
}

/// MOV Sreg, r/m16 (a register source gives its low 16 bits; a memory
/// source is always 16 bits).
pub(super) fn mov<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let register = target(i.op0_register())?;
    let selector = match i.op_kind(1) {
        OpKind::Register => m.register_value(i.op1_register())? as u16,
        OpKind::Memory => {
            let span = m.map_memory_operand(i, 2, DataAccess::Read, Alignment::Checked(2))?;
            m.read_value(&span)? as u16
        }
        _ => return Err(Fault::Unsupported("segment load source")),
    };
    load(m, register, selector, register == Segment::Ss as usize)
}

/// POP Sreg: reads the selector (16 bits, whatever the operand size: the
/// CPU neither checks nor touches the bytes above it) at SS:rSP, then
/// raises the stack pointer by the operand size.
pub(super) fn pop<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
    size: usize,
) -> Result<(), Fault> {
    let register = target(i.op0_register())?;
    let (sp_reg, stack_size) = super::stack::stack_pointer(m);
    let sp = m.register_value(sp_reg)?;
    let span = m.map_data(
        Segment::Ss as usize,
        sp,
        2,
        DataAccess::Read,
        Alignment::Checked(2),
    )?;
    let selector = m.read_value(&span)? as u16;
    m.set_register(sp_reg, sp.wrapping_add(size as u64) & mask(stack_size))?;
    load(m, register, selector, register == Segment::Ss as usize)
}

/// LDS, LES, LFS, LGS, LSS: a far pointer (offset of the destination's
/// size, then the selector) into the register pair. The CPU reads it as
/// two accesses, the offset first, each with its own limit, alignment and
/// paging checks.
pub(super) fn load_far_pointer<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
) -> Result<(), Fault> {
    let register = match i.mnemonic() {
        Mnemonic::Lds => Segment::Ds,
        Mnemonic::Les => Segment::Es,
        Mnemonic::Lfs => Segment::Fs,
        Mnemonic::Lgs => Segment::Gs,
        Mnemonic::Lss => Segment::Ss,
        _ => return Err(Fault::Unsupported("far-pointer load")),
    } as usize;
    let destination = i.op0_register();
    let offset_size = destination.size();
    if !matches!(offset_size, 2 | 4 | 8) || i.op_kind(1) != OpKind::Memory {
        return Err(Fault::Unsupported("far-pointer load operands"));
    }
    let operand = m.memory_operand(i)?;
    let offset_span = m.map_data(
        operand.segment,
        operand.offset,
        offset_size,
        DataAccess::Read,
        Alignment::Checked(offset_size as u64),
    )?;
    // The selector continues the operand (no wrap at the address size, as
    // for any multi-byte operand).
    let selector_span = m.map_data(
        operand.segment,
        operand.offset.wrapping_add(offset_size as u64),
        2,
        DataAccess::Read,
        Alignment::Checked(2),
    )?;
    let offset = m.read_value(&offset_span)?;
    let selector = m.read_value(&selector_span)? as u16;
    m.set_register(destination, offset)?;
    load(m, register, selector, false)
}
