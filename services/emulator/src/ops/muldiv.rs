//! Multiplication and division: MUL, IMUL (one, two and three operands),
//! DIV and IDIV with #DE on a zero divisor or a quotient that does not fit.

use crate::Guest;
use crate::alu::{self, mask, sign_extend};
use crate::fault::{Fault, vector};
use crate::machine::Machine;
use crate::operand::operand_size;
use crate::state::rflags;
use iced_x86::{Instruction, Mnemonic, Register};

/// The (low, high) halves of the implicit rDX:rAX (AX for bytes) operand.
fn implicit_registers(size: usize) -> (Register, Register) {
    match size {
        1 => (Register::AL, Register::AH),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// CF = OF = `overflow`; SF, ZF, PF from the low result (undefined by the
/// SDM), AF clear.
fn multiply_flags(low: u64, overflow: bool, size: usize) -> u64 {
    let mut flags = alu::sign_zero_parity(low, size);
    if overflow {
        flags |= rflags::CF | rflags::OF;
    }
    flags
}

/// MUL and IMUL.
pub(super) fn multiply<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let signed = i.mnemonic() == Mnemonic::Imul;
    let op_count = i.op_count();
    if op_count >= 2 {
        // IMUL reg, r/m (, imm): truncated signed product.
        let size = operand_size(i, 0);
        let (a, b) = if op_count == 3 {
            (m.read_operand(i, 1, size)?, m.read_operand(i, 2, size)?)
        } else {
            (m.read_operand(i, 0, size)?, m.read_operand(i, 1, size)?)
        };
        let product =
            i128::from(sign_extend(a, size) as i64) * i128::from(sign_extend(b, size) as i64);
        let low = (product as u64) & mask(size);
        let overflow = i128::from(sign_extend(low, size) as i64) != product;
        m.write_operand(i, 0, size, low)?;
        m.regs
            .set_flags(rflags::STATUS, multiply_flags(low, overflow, size));
        return Ok(());
    }
    let size = operand_size(i, 0);
    let source = m.read_operand(i, 0, size)?;
    let (low_reg, high_reg) = implicit_registers(size);
    let acc = m.register_value(low_reg)?;
    let bits = size * 8;
    let (low, high, overflow) = if signed {
        let product = i128::from(sign_extend(acc, size) as i64)
            * i128::from(sign_extend(source, size) as i64);
        let low = (product as u64) & mask(size);
        let high = ((product >> bits) as u64) & mask(size);
        (
            low,
            high,
            i128::from(sign_extend(low, size) as i64) != product,
        )
    } else {
        let product = u128::from(acc) * u128::from(source);
        let low = (product as u64) & mask(size);
        let high = ((product >> bits) as u64) & mask(size);
        (low, high, high != 0)
    };
    m.set_register(low_reg, low)?;
    m.set_register(high_reg, high)?;
    m.regs
        .set_flags(rflags::STATUS, multiply_flags(low, overflow, size));
    Ok(())
}

/// DIV and IDIV of rDX:rAX (AX for bytes) by the operand.
pub(super) fn divide<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let divisor = m.read_operand(i, 0, size)?;
    let (low_reg, high_reg) = implicit_registers(size);
    let bits = size * 8;
    let dividend: u128 = if size == 1 {
        u128::from(m.register_value(Register::AX)?)
    } else {
        (u128::from(m.register_value(high_reg)?) << bits) | u128::from(m.register_value(low_reg)?)
    };
    let divide_error = Fault::without_code(vector::DE);
    let (quotient, remainder) = if i.mnemonic() == Mnemonic::Idiv {
        let divisor = i128::from(sign_extend(divisor, size) as i64);
        // Sign-extend the 2*bits-wide dividend.
        let shift = 128 - 2 * bits as u32;
        let dividend = ((dividend << shift) as i128) >> shift;
        if divisor == 0 {
            return Err(divide_error);
        }
        let quotient = dividend.checked_div(divisor).ok_or(divide_error)?;
        let remainder = dividend.checked_rem(divisor).ok_or(divide_error)?;
        let limit = 1i128 << (bits - 1);
        if quotient < -limit || quotient >= limit {
            return Err(divide_error);
        }
        (quotient as u64 & mask(size), remainder as u64 & mask(size))
    } else {
        if divisor == 0 {
            return Err(divide_error);
        }
        let quotient = dividend / u128::from(divisor);
        if quotient > u128::from(mask(size)) {
            return Err(divide_error);
        }
        (quotient as u64, (dividend % u128::from(divisor)) as u64)
    };
    if size == 1 {
        m.set_register(Register::AL, quotient)?;
        m.set_register(Register::AH, remainder)?;
    } else {
        m.set_register(low_reg, quotient)?;
        m.set_register(high_reg, remainder)?;
    }
    Ok(())
}
