//! PUSH and POP with register, immediate or memory operands, including a stack
//! that itself lies in trapped memory (POP of a segment register is in
//! `segment`).

use crate::Guest;
use crate::alu::mask;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::state::Mode;
use abi::{Segment, SegmentRegister};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The stack pointer register of the current stack address size.
pub(super) fn stack_pointer<G: Guest>(m: &Machine<'_, G>) -> (Register, usize) {
    let ss = &m.exit.state.segments[Segment::Ss as usize];
    if m.mode == Mode::Long {
        (Register::RSP, 8)
    } else if ss.access_rights & SegmentRegister::AR_DB != 0 {
        (Register::ESP, 4)
    } else {
        (Register::SP, 2)
    }
}

/// PUSH stores below the stack pointer then lowers it; POP loads, raises the
/// stack pointer, then stores (a memory destination's address is computed
/// with the raised stack pointer, as the SDM specifies).
pub(super) fn push_pop<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = i.stack_pointer_increment().unsigned_abs() as usize;
    if !matches!(size, 2 | 4 | 8) {
        return Err(Fault::Unsupported("stack operation of this size"));
    }
    let (sp_reg, stack_size) = stack_pointer(m);
    let sp = m.register_value(sp_reg)?;
    let ss = Segment::Ss as usize;
    if i.mnemonic() == Mnemonic::Push {
        let value = m.read_operand(i, 0, size)?;
        let new_sp = sp.wrapping_sub(size as u64) & mask(stack_size);
        let span = m.map_data(
            ss,
            new_sp,
            size,
            DataAccess::Write,
            Alignment::Checked(size as u64),
        )?;
        m.write_value(&span, value)?;
        return m.set_register(sp_reg, new_sp);
    }
    if i.op_kind(0) == OpKind::Register && i.op0_register().is_segment_register() {
        return super::segment::pop(m, i, size);
    }
    let span = m.map_data(
        ss,
        sp,
        size,
        DataAccess::Read,
        Alignment::Checked(size as u64),
    )?;
    let value = m.read_value(&span)?;
    m.set_register(sp_reg, sp.wrapping_add(size as u64) & mask(stack_size))?;
    m.write_operand(i, 0, size, value)
}
