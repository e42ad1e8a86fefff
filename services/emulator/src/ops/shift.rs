//! Shifts and rotates: ROL, ROR, RCL, RCR, SHL/SAL, SHR, SAR (by 1, CL or an
//! immediate) and the double shifts SHLD, SHRD.

use crate::Guest;
use crate::alu::{self, ShiftOp};
use crate::fault::Fault;
use crate::machine::Machine;
use crate::operand::operand_size;
use crate::state::rflags;
use iced_x86::{Instruction, Mnemonic};

/// Group 2: operand 0 shifted or rotated by operand 1.
pub(super) fn group2<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let op = match i.mnemonic() {
        Mnemonic::Rol => ShiftOp::Rol,
        Mnemonic::Ror => ShiftOp::Ror,
        Mnemonic::Rcl => ShiftOp::Rcl,
        Mnemonic::Rcr => ShiftOp::Rcr,
        Mnemonic::Shr => ShiftOp::Shr,
        Mnemonic::Sar => ShiftOp::Sar,
        _ => ShiftOp::Shl,
    };
    let size = operand_size(i, 0);
    let count = m.read_operand(i, 1, 1)?;
    let carry = m.regs.flag(rflags::CF);
    let (_, shifted) = m.modify_operand(i, 0, size, false, |old| {
        let shifted = alu::shift(op, old, count, carry, size);
        Ok((shifted.value, shifted))
    })?;
    m.regs.set_flags(shifted.written, shifted.flags);
    Ok(())
}

/// SHLD / SHRD: operand 0 shifted with bits from operand 1 by operand 2.
pub(super) fn double<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let source = m.read_operand(i, 1, size)?;
    let count = m.read_operand(i, 2, 1)?;
    let left = i.mnemonic() == Mnemonic::Shld;
    let (_, shifted) = m.modify_operand(i, 0, size, false, |old| {
        let shifted = alu::double_shift(left, old, source, count, size);
        Ok((shifted.value, shifted))
    })?;
    m.regs.set_flags(shifted.written, shifted.flags);
    Ok(())
}
