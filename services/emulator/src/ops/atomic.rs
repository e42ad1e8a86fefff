//! The exchange family: XCHG (always locked with memory), XADD, CMPXCHG,
//! CMPXCHG8B and CMPXCHG16B. Locked forms store with one compare-exchange
//! against the value read; a lost race re-executes the instruction.

use crate::Guest;
use crate::alu;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::operand::operand_size;
use crate::state::rflags;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// XCHG: swaps its operands; with a memory operand it is locked.
pub(super) fn xchg<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let (memory_index, register) = if i.op_kind(0) == OpKind::Memory {
        (0, i.op1_register())
    } else {
        (1, i.op0_register())
    };
    if i.op_kind(memory_index) != OpKind::Memory {
        // Register with register.
        let a = m.register_value(i.op0_register())?;
        let b = m.register_value(i.op1_register())?;
        m.set_register(i.op0_register(), b)?;
        return m.set_register(i.op1_register(), a);
    }
    let value = m.register_value(register)?;
    let (old, ()) = m.modify_operand(i, memory_index, size, true, |_| Ok((value, ())))?;
    m.set_register(register, old)
}

/// XADD: operand 1 = operand 0, operand 0 = sum.
pub(super) fn xadd<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let source_reg = i.op1_register();
    let source = m.register_value(source_reg)?;
    if i.op_kind(0) == OpKind::Register {
        let dest_reg = i.op0_register();
        let dest = m.register_value(dest_reg)?;
        let (sum, flags) = alu::add(dest, source, false, size);
        m.set_register(source_reg, dest)?;
        m.set_register(dest_reg, sum)?;
        m.regs.set_flags(rflags::STATUS, flags);
        return Ok(());
    }
    let (old, flags) = m.modify_operand(i, 0, size, i.has_lock_prefix(), |old| {
        Ok(alu::add(old, source, false, size))
    })?;
    m.set_register(source_reg, old)?;
    m.regs.set_flags(rflags::STATUS, flags);
    Ok(())
}

/// The accumulator of an operand size.
fn accumulator(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// CMPXCHG: if accumulator == operand 0 then operand 0 = operand 1, else
/// accumulator = operand 0 (a memory operand is written either way).
pub(super) fn cmpxchg<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let acc_reg = accumulator(size);
    let acc = m.register_value(acc_reg)?;
    let source = m.register_value(i.op1_register())?;
    let (old, flags) = m.modify_operand(i, 0, size, i.has_lock_prefix(), |old| {
        let (_, flags) = alu::sub(acc, old, false, size);
        let new = if old == acc & alu::mask(size) {
            source
        } else {
            old
        };
        Ok((new, flags))
    })?;
    m.regs.set_flags(rflags::STATUS, flags);
    if flags & rflags::ZF == 0 {
        m.set_register(acc_reg, old)?;
    }
    Ok(())
}

/// CMPXCHG8B / CMPXCHG16B: compare rDX:rAX with the memory operand; equal:
/// store rCX:rBX and set ZF; else load it into rDX:rAX and clear ZF.
pub(super) fn cmpxchg_double<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
) -> Result<(), Fault> {
    let wide = i.mnemonic() == Mnemonic::Cmpxchg16b;
    let half = if wide { 8 } else { 4 };
    let len = half * 2;
    let (lo_reg, hi_reg, new_lo_reg, new_hi_reg) = if wide {
        (Register::RAX, Register::RDX, Register::RBX, Register::RCX)
    } else {
        (Register::EAX, Register::EDX, Register::EBX, Register::ECX)
    };
    let alignment = if wide {
        Alignment::Required(16)
    } else {
        Alignment::Checked(8)
    };
    let span = m.map_memory_operand(i, len, DataAccess::Write, alignment)?;
    let mut expected = [0u8; 16];
    expected[..half].copy_from_slice(&m.register_value(lo_reg)?.to_le_bytes()[..half]);
    expected[half..len].copy_from_slice(&m.register_value(hi_reg)?.to_le_bytes()[..half]);
    let mut replacement = [0u8; 16];
    replacement[..half].copy_from_slice(&m.register_value(new_lo_reg)?.to_le_bytes()[..half]);
    replacement[half..len].copy_from_slice(&m.register_value(new_hi_reg)?.to_le_bytes()[..half]);
    let mut old = [0u8; 16];
    m.read_span(&span, &mut old)?;
    let equal = old[..len] == expected[..len];
    let new = if equal { replacement } else { old };
    if i.has_lock_prefix() {
        m.compare_exchange_span(&span, &old[..len], &new[..len])?;
    } else {
        m.write_span(&span, &new[..len])?;
    }
    if equal {
        m.regs.rflags |= rflags::ZF;
    } else {
        m.regs.rflags &= !rflags::ZF;
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo[..half].copy_from_slice(&old[..half]);
        hi[..half].copy_from_slice(&old[half..len]);
        m.set_register(lo_reg, u64::from_le_bytes(lo))?;
        m.set_register(hi_reg, u64::from_le_bytes(hi))?;
    }
    Ok(())
}
