//! Bit instructions: BT, BTS, BTR, BTC (register offsets may reach outside the
//! addressed operand), BSF, BSR, TZCNT, LZCNT, POPCNT.

use crate::Guest;
use crate::alu::{mask, sign_extend};
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::operand::operand_size;
use crate::state::rflags;
use iced_x86::{Instruction, Mnemonic, OpKind};

/// BT, BTS, BTR, BTC: CF = the selected bit, then set/clear/complement it.
pub(super) fn bit_test<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let bits = (size * 8) as u64;
    let mnemonic = i.mnemonic();
    let offset = m.read_operand(i, 1, size)?;
    let update = move |old: u64, bit: u64| -> u64 {
        match mnemonic {
            Mnemonic::Bts => old | (1 << bit),
            Mnemonic::Btr => old & !(1 << bit),
            Mnemonic::Btc => old ^ (1 << bit),
            _ => old,
        }
    };
    let carry = if i.op_kind(0) == OpKind::Memory && i.op_kind(1) == OpKind::Register {
        // The bit offset is signed and selects an operand-sized unit
        // anywhere relative to the effective address.
        let signed = sign_extend(offset, size) as i64;
        let unit = signed.div_euclid(bits as i64);
        let bit = signed.rem_euclid(bits as i64) as u64;
        let operand = m.memory_operand(i)?;
        let displacement = (unit as u64).wrapping_mul(size as u64);
        let address = operand.offset.wrapping_add(displacement) & operand.address_mask;
        let access = if mnemonic == Mnemonic::Bt {
            DataAccess::Read
        } else {
            DataAccess::Write
        };
        let span = m.map_data(
            operand.segment,
            address,
            size,
            access,
            Alignment::Checked(size as u64),
        )?;
        let old = m.read_value(&span)?;
        if mnemonic != Mnemonic::Bt {
            let new = update(old, bit);
            if i.has_lock_prefix() {
                m.compare_exchange_value(&span, old, new)?;
            } else {
                m.write_value(&span, new)?;
            }
        }
        (old >> bit) & 1 != 0
    } else {
        let bit = offset & (bits - 1);
        if mnemonic == Mnemonic::Bt {
            let value = m.read_operand(i, 0, size)?;
            (value >> bit) & 1 != 0
        } else {
            let (old, ()) = m.modify_operand(i, 0, size, i.has_lock_prefix(), |old| {
                Ok((update(old, bit) & mask(size), ()))
            })?;
            (old >> bit) & 1 != 0
        }
    };
    m.regs
        .set_flags(rflags::CF, if carry { rflags::CF } else { 0 });
    Ok(())
}

/// BSF, BSR (destination kept and ZF set for a zero source), TZCNT, LZCNT,
/// POPCNT.
pub(super) fn count<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let bits = (size * 8) as u32;
    let source = m.read_operand(i, 1, size)? & mask(size);
    let zero = source == 0;
    let zf = if zero { rflags::ZF } else { 0 };
    match i.mnemonic() {
        Mnemonic::Bsf | Mnemonic::Bsr => {
            if !zero {
                let index = if i.mnemonic() == Mnemonic::Bsf {
                    source.trailing_zeros()
                } else {
                    63 - source.leading_zeros()
                };
                m.write_operand(i, 0, size, u64::from(index))?;
            }
            m.regs.set_flags(rflags::ZF, zf);
        }
        Mnemonic::Tzcnt | Mnemonic::Lzcnt => {
            let result = if zero {
                bits
            } else if i.mnemonic() == Mnemonic::Tzcnt {
                source.trailing_zeros()
            } else {
                source.leading_zeros() - (64 - bits)
            };
            m.write_operand(i, 0, size, u64::from(result))?;
            let mut flags = if zero { rflags::CF } else { 0 };
            if result == 0 {
                flags |= rflags::ZF;
            }
            m.regs.set_flags(rflags::CF | rflags::ZF, flags);
        }
        _ => {
            m.write_operand(i, 0, size, u64::from(source.count_ones()))?;
            m.regs.set_flags(rflags::STATUS, zf);
        }
    }
    Ok(())
}
