//! String instructions MOVS, STOS, LODS, CMPS, SCAS with REP, REPE and REPNE
//! in both directions: a bounded number of iterations per call (one when
//! RFLAGS.TF is set, so that each iteration's single-step trap can follow it),
//! with rCX, rSI and rDI left exactly as the CPU leaves them after a partial run.

use crate::Guest;
use crate::alu;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::ops::Progress;
use crate::state::{Mode, rflags};
use abi::Segment;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StringOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

fn string_op(i: &Instruction) -> Option<(StringOp, usize)> {
    use Mnemonic as M;
    // MOVSD and CMPSD share their mnemonic with SSE instructions; the string
    // forms are the ones with string operands.
    let string_operands = [i.op0_kind(), i.op1_kind()].iter().any(|kind| {
        matches!(
            kind,
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    });
    if !string_operands {
        return None;
    }
    Some(match i.mnemonic() {
        M::Movsb => (StringOp::Movs, 1),
        M::Movsw => (StringOp::Movs, 2),
        M::Movsd => (StringOp::Movs, 4),
        M::Movsq => (StringOp::Movs, 8),
        M::Stosb => (StringOp::Stos, 1),
        M::Stosw => (StringOp::Stos, 2),
        M::Stosd => (StringOp::Stos, 4),
        M::Stosq => (StringOp::Stos, 8),
        M::Lodsb => (StringOp::Lods, 1),
        M::Lodsw => (StringOp::Lods, 2),
        M::Lodsd => (StringOp::Lods, 4),
        M::Lodsq => (StringOp::Lods, 8),
        M::Cmpsb => (StringOp::Cmps, 1),
        M::Cmpsw => (StringOp::Cmps, 2),
        M::Cmpsd => (StringOp::Cmps, 4),
        M::Cmpsq => (StringOp::Cmps, 8),
        M::Scasb => (StringOp::Scas, 1),
        M::Scasw => (StringOp::Scas, 2),
        M::Scasd => (StringOp::Scas, 4),
        M::Scasq => (StringOp::Scas, 8),
        _ => return None,
    })
}

/// Whether this is one of the string instructions emulated here.
pub(super) fn is_string_instruction(i: &Instruction) -> bool {
    string_op(i).is_some()
}

/// The address size of a string instruction, from its operand kinds.
fn string_address_size(i: &Instruction) -> usize {
    let kinds = [i.op0_kind(), i.op1_kind()];
    if kinds
        .iter()
        .any(|k| matches!(k, OpKind::MemorySegRSI | OpKind::MemoryESRDI))
    {
        8
    } else if kinds
        .iter()
        .any(|k| matches!(k, OpKind::MemorySegESI | OpKind::MemoryESEDI))
    {
        4
    } else {
        2
    }
}

/// (counter, source index, destination index) registers of an address size.
fn index_registers(address_size: usize) -> (Register, Register, Register) {
    match address_size {
        2 => (Register::CX, Register::SI, Register::DI),
        4 => (Register::ECX, Register::ESI, Register::EDI),
        _ => (Register::RCX, Register::RSI, Register::RDI),
    }
}

fn accumulator(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

pub(super) fn execute<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
) -> Result<Progress, Fault> {
    let Some((op, size)) = string_op(i) else {
        return Err(Fault::Unsupported("string instruction"));
    };
    let address_size = string_address_size(i);
    let address_mask = alu::mask(address_size);
    let (counter_reg, source_reg, dest_reg) = index_registers(address_size);
    let repeated = i.has_rep_prefix() || i.has_repne_prefix();
    let compares = matches!(op, StringOp::Cmps | StringOp::Scas);
    let source_segment = m.effective_segment(i)?;
    // With TF set the CPU takes a single-step trap after every iteration (RIP
    // kept until the last): one iteration per call lets the core deliver each.
    let bound = if m.regs.flag(rflags::TF) {
        1
    } else {
        m.config.max_rep_iterations.max(1)
    };
    // A REP instruction with 32-bit addressing in 64-bit mode writes ECX
    // (clearing its upper half) even when it does no iteration or faults in
    // the first one; REP MOVS and REP STOS write ESI/EDI the same way (as
    // the host CPU of the differential test does; REP CMPS, LODS, SCAS not).
    let mut widened = false;
    if repeated && address_size == 4 && m.mode == Mode::Long {
        let mut early = [Some(counter_reg), None, None];
        if op == StringOp::Movs {
            early[1] = Some(source_reg);
        }
        if matches!(op, StringOp::Movs | StringOp::Stos) {
            early[2] = Some(dest_reg);
        }
        for reg in early.into_iter().flatten() {
            let full = m.regs.gprs.get(reg.number()).copied().unwrap_or(0);
            widened |= full >> 32 != 0;
            m.set_register(reg, full)?;
        }
    }
    let mut done: u32 = 0;
    loop {
        if repeated && m.register_value(counter_reg)? == 0 {
            return Ok(Progress::Complete);
        }
        if let Err(fault) = iteration(m, op, size, source_segment, source_reg, dest_reg) {
            return if done > 0 || widened {
                Ok(Progress::Partial)
            } else {
                Err(fault)
            };
        }
        done += 1;
        let step = if m.regs.flag(rflags::DF) {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        if matches!(op, StringOp::Movs | StringOp::Lods | StringOp::Cmps) {
            let value = m.register_value(source_reg)?.wrapping_add(step) & address_mask;
            m.set_register(source_reg, value)?;
        }
        if op != StringOp::Lods {
            let value = m.register_value(dest_reg)?.wrapping_add(step) & address_mask;
            m.set_register(dest_reg, value)?;
        }
        if !repeated {
            return Ok(Progress::Complete);
        }
        let count = m.register_value(counter_reg)?.wrapping_sub(1) & address_mask;
        m.set_register(counter_reg, count)?;
        if compares {
            let zero = m.regs.flag(rflags::ZF);
            if (i.has_repe_prefix() && !zero) || (i.has_repne_prefix() && zero) {
                return Ok(Progress::Complete);
            }
        }
        if count == 0 {
            return Ok(Progress::Complete);
        }
        if done >= bound {
            return Ok(Progress::Partial);
        }
    }
}

/// One element: all accesses are mapped before anything is written.
fn iteration<G: Guest>(
    m: &mut Machine<'_, G>,
    op: StringOp,
    size: usize,
    source_segment: usize,
    source_reg: Register,
    dest_reg: Register,
) -> Result<(), Fault> {
    let es = Segment::Es as usize;
    let checked = Alignment::Checked(size as u64);
    let source_offset = m.register_value(source_reg)?;
    let dest_offset = m.register_value(dest_reg)?;
    match op {
        StringOp::Movs => {
            let source = m.map_data(
                source_segment,
                source_offset,
                size,
                DataAccess::Read,
                checked,
            )?;
            let dest = m.map_data(es, dest_offset, size, DataAccess::Write, checked)?;
            let value = m.read_value(&source)?;
            m.write_value(&dest, value)
        }
        StringOp::Stos => {
            let dest = m.map_data(es, dest_offset, size, DataAccess::Write, checked)?;
            let value = m.register_value(accumulator(size))?;
            m.write_value(&dest, value)
        }
        StringOp::Lods => {
            let source = m.map_data(
                source_segment,
                source_offset,
                size,
                DataAccess::Read,
                checked,
            )?;
            let value = m.read_value(&source)?;
            m.set_register(accumulator(size), value)
        }
        StringOp::Cmps => {
            // The CPU reads ES:[rDI] first (its faults win).
            let dest = m.map_data(es, dest_offset, size, DataAccess::Read, checked)?;
            let source = m.map_data(
                source_segment,
                source_offset,
                size,
                DataAccess::Read,
                checked,
            )?;
            let left = m.read_value(&source)?;
            let right = m.read_value(&dest)?;
            let (_, flags) = alu::sub(left, right, false, size);
            m.regs.set_flags(rflags::STATUS, flags);
            Ok(())
        }
        StringOp::Scas => {
            let dest = m.map_data(es, dest_offset, size, DataAccess::Read, checked)?;
            let right = m.read_value(&dest)?;
            let left = m.register_value(accumulator(size))?;
            let (_, flags) = alu::sub(left, right, false, size);
            m.regs.set_flags(rflags::STATUS, flags);
            Ok(())
        }
    }
}
