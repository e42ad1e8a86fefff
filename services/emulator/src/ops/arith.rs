//! Integer ALU instructions: ADD, OR, ADC, SBB, AND, SUB, XOR (LOCK-able
//! read-modify-writes), CMP, TEST, INC, DEC, NEG, NOT.

use crate::Guest;
use crate::alu::{self, BinaryOp};
use crate::fault::Fault;
use crate::machine::Machine;
use crate::operand::operand_size;
use crate::state::rflags;
use iced_x86::{Instruction, Mnemonic};

/// ADD, OR, ADC, SBB, AND, SUB, XOR: operand 0 op= operand 1.
pub(super) fn binary<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let op = match i.mnemonic() {
        Mnemonic::Add => BinaryOp::Add,
        Mnemonic::Or => BinaryOp::Or,
        Mnemonic::Adc => BinaryOp::Adc,
        Mnemonic::Sbb => BinaryOp::Sbb,
        Mnemonic::And => BinaryOp::And,
        Mnemonic::Sub => BinaryOp::Sub,
        _ => BinaryOp::Xor,
    };
    let size = operand_size(i, 0);
    let source = m.read_operand(i, 1, size)?;
    let carry = m.regs.flag(rflags::CF);
    let (_, flags) = m.modify_operand(i, 0, size, i.has_lock_prefix(), |old| {
        Ok(alu::binary(op, old, source, carry, size))
    })?;
    m.regs.set_flags(rflags::STATUS, flags);
    Ok(())
}

/// CMP: flags of operand 0 - operand 1.
pub(super) fn compare<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let left = m.read_operand(i, 0, size)?;
    let right = m.read_operand(i, 1, size)?;
    let (_, flags) = alu::sub(left, right, false, size);
    m.regs.set_flags(rflags::STATUS, flags);
    Ok(())
}

/// TEST: flags of operand 0 & operand 1.
pub(super) fn test<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let left = m.read_operand(i, 0, size)?;
    let right = m.read_operand(i, 1, size)?;
    m.regs
        .set_flags(rflags::STATUS, alu::logic(left & right, size));
    Ok(())
}

/// INC, DEC (CF kept), NEG, NOT (no flags).
pub(super) fn unary<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let mnemonic = i.mnemonic();
    let (_, (flags, written)) = m.modify_operand(i, 0, size, i.has_lock_prefix(), |old| {
        Ok(match mnemonic {
            Mnemonic::Inc => {
                let (value, flags) = alu::add(old, 1, false, size);
                (value, (flags, rflags::STATUS & !rflags::CF))
            }
            Mnemonic::Dec => {
                let (value, flags) = alu::sub(old, 1, false, size);
                (value, (flags, rflags::STATUS & !rflags::CF))
            }
            Mnemonic::Neg => {
                let (value, flags) = alu::sub(0, old, false, size);
                (value, (flags, rflags::STATUS))
            }
            _ => (!old & alu::mask(size), (0, 0)),
        })
    })?;
    m.regs.set_flags(written, flags);
    Ok(())
}
