//! Data movement: MOV (all forms, moffs, stores of segment registers; loads
//! of them are in `segment`), MOVZX, MOVSX, MOVSXD, MOVBE, MOVNTI, MOVDIRI
//! and MOVDIR64B.

use crate::Guest;
use crate::alu::{mask, sign_extend};
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::operand::operand_size;
use abi::Segment;
use iced_x86::{Instruction, Mnemonic, OpKind};

/// MOV, MOVNTI, MOVDIRI: operand 0 = operand 1.
// Always inline (into `execute`'s MOV case, in `run`): called, it saved
// six registers that its store case does not need (6 instructions a
// store, 26 a load, 15 a register MOV).
#[inline(always)]
pub(super) fn mov<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    if i.op_kind(0) == OpKind::Register && i.op0_register().is_segment_register() {
        return super::segment::mov(m, i);
    }
    let size = operand_size(i, 0);
    let value = m.read_operand(i, 1, size)?;
    m.write_operand(i, 0, size, value)
}

/// MOVZX, MOVSX, MOVSXD: widen operand 1 into register operand 0.
pub(super) fn extend<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let source_size = operand_size(i, 1);
    let value = m.read_operand(i, 1, source_size)?;
    let value = if i.mnemonic() == Mnemonic::Movzx {
        value
    } else {
        sign_extend(value, source_size) & mask(size)
    };
    m.write_operand(i, 0, size, value)
}

/// MOVBE: a move that reverses the byte order.
pub(super) fn movbe<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let value = m.read_operand(i, 1, size)?;
    let swapped = match size {
        2 => u64::from((value as u16).swap_bytes()),
        4 => u64::from((value as u32).swap_bytes()),
        _ => value.swap_bytes(),
    };
    m.write_operand(i, 0, size, swapped)
}

/// MOVDIR64B: 64 bytes from the memory operand to ES:[register operand],
/// which must be 64-byte aligned.
pub(super) fn movdir64b<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let address_reg = i.op0_register();
    let offset = m.register_value(address_reg)?;
    let mut data = [0u8; 64];
    // The source is read (and may page-fault) before the destination's
    // alignment is checked, as the CPU orders it.
    let source = m.map_memory_operand(i, 64, DataAccess::Read, Alignment::Checked(1))?;
    let destination = m.map_data(
        Segment::Es as usize,
        offset,
        64,
        DataAccess::Write,
        Alignment::Required(64),
    )?;
    m.read_span(&source, &mut data)?;
    m.write_span(&destination, &data)
}
