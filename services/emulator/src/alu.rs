//! Integer arithmetic with the status flags the CPU produces (CF, PF, AF, ZF,
//! SF, OF) for every operand width. Widths are in bytes (1, 2, 4, 8); values
//! are zero-extended to 64 bits. Flags the SDM leaves undefined are given the
//! values current Intel and AMD processors produce for the common cases.

use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

/// All ones in a value of `size` bytes.
pub(crate) fn mask(size: usize) -> u64 {
    crate::operand::size_mask(size)
}

/// The sign bit of a value of `size` bytes.
pub(crate) fn sign_bit(size: usize) -> u64 {
    1u64 << (size.clamp(1, 8) * 8 - 1)
}

/// Sign-extends a value of `size` bytes to 64 bits.
pub(crate) fn sign_extend(value: u64, size: usize) -> u64 {
    let shift = 64 - size.clamp(1, 8) as u32 * 8;
    (((value << shift) as i64) >> shift) as u64
}

fn flag(condition: bool, bit: u64) -> u64 {
    if condition { bit } else { 0 }
}

/// SF, ZF and PF of a result.
pub(crate) fn sign_zero_parity(result: u64, size: usize) -> u64 {
    let result = result & mask(size);
    flag(result & sign_bit(size) != 0, SF)
        | flag(result == 0, ZF)
        | flag((result as u8).count_ones().is_multiple_of(2), PF)
}

/// `a + b + carry`.
pub(crate) fn add(a: u64, b: u64, carry: bool, size: usize) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let wide = u128::from(a) + u128::from(b) + u128::from(carry);
    let result = (wide as u64) & m;
    let flags = sign_zero_parity(result, size)
        | flag(wide > u128::from(m), CF)
        | flag((a ^ result) & (b ^ result) & sign_bit(size) != 0, OF)
        | flag((a ^ b ^ result) & 0x10 != 0, AF);
    (result, flags)
}

/// `a - b - borrow`.
pub(crate) fn sub(a: u64, b: u64, borrow: bool, size: usize) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let result = a.wrapping_sub(b).wrapping_sub(u64::from(borrow)) & m;
    let flags = sign_zero_parity(result, size)
        | flag(u128::from(b) + u128::from(borrow) > u128::from(a), CF)
        | flag((a ^ b) & (a ^ result) & sign_bit(size) != 0, OF)
        | flag((a ^ b ^ result) & 0x10 != 0, AF);
    (result, flags)
}

/// Flags of AND/OR/XOR/TEST: CF = OF = 0, AF = 0.
pub(crate) fn logic(result: u64, size: usize) -> u64 {
    sign_zero_parity(result, size)
}

/// The eight two-operand ALU operations of opcodes 00-3F and 80-83.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
}

/// `op(a, b)` with carry-in `carry`: result and all six status flags.
pub(crate) fn binary(op: BinaryOp, a: u64, b: u64, carry: bool, size: usize) -> (u64, u64) {
    let m = mask(size);
    match op {
        BinaryOp::Add => add(a, b, false, size),
        BinaryOp::Adc => add(a, b, carry, size),
        BinaryOp::Sub => sub(a, b, false, size),
        BinaryOp::Sbb => sub(a, b, carry, size),
        BinaryOp::And => ((a & b) & m, logic(a & b, size)),
        BinaryOp::Or => ((a | b) & m, logic(a | b, size)),
        BinaryOp::Xor => ((a ^ b) & m, logic(a ^ b, size)),
    }
}

/// Shift and rotate operations (group 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShiftOp {
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    Sar,
}

/// The result of a shift/rotate: value, flags, and which flags it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shifted {
    pub value: u64,
    pub flags: u64,
    pub written: u64,
}

/// `op value, count` on a `size`-byte operand; `carry` is CF before.
pub(crate) fn shift(op: ShiftOp, value: u64, count: u64, carry: bool, size: usize) -> Shifted {
    let bits = (size.clamp(1, 8) * 8) as u32;
    let m = mask(size);
    let value = value & m;
    let count = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
    let unchanged = Shifted {
        value,
        flags: 0,
        written: 0,
    };
    if count == 0 {
        return unchanged;
    }
    let msb = |v: u64| v & sign_bit(size) != 0;
    match op {
        ShiftOp::Shl => {
            let result = if count >= bits {
                0
            } else {
                (value << count) & m
            };
            let cf = count <= bits && (value >> (bits - count)) & 1 != 0;
            let of = msb(result) != cf;
            Shifted {
                value: result,
                flags: sign_zero_parity(result, size) | flag(cf, CF) | flag(of, OF),
                written: CF | PF | AF | ZF | SF | OF,
            }
        }
        ShiftOp::Shr => {
            let result = if count >= bits { 0 } else { value >> count };
            let cf = count <= bits && (value >> (count - 1)) & 1 != 0;
            Shifted {
                value: result,
                flags: sign_zero_parity(result, size) | flag(cf, CF) | flag(msb(value), OF),
                written: CF | PF | AF | ZF | SF | OF,
            }
        }
        ShiftOp::Sar => {
            let signed = sign_extend(value, size) as i64;
            let result = (signed >> count.min(63)) as u64 & m;
            let cf = (signed >> (count - 1).min(63)) & 1 != 0;
            Shifted {
                value: result,
                flags: sign_zero_parity(result, size) | flag(cf, CF),
                written: CF | PF | AF | ZF | SF | OF,
            }
        }
        ShiftOp::Rol => {
            let rotate = count % bits;
            let result = if rotate == 0 {
                value
            } else {
                ((value << rotate) | (value >> (bits - rotate))) & m
            };
            let cf = result & 1 != 0;
            Shifted {
                value: result,
                flags: flag(cf, CF) | flag(msb(result) != cf, OF),
                written: CF | OF,
            }
        }
        ShiftOp::Ror => {
            let rotate = count % bits;
            let result = if rotate == 0 {
                value
            } else {
                ((value >> rotate) | (value << (bits - rotate))) & m
            };
            let top = msb(result);
            let next = result & (sign_bit(size) >> 1) != 0;
            Shifted {
                value: result,
                flags: flag(top, CF) | flag(top != next, OF),
                written: CF | OF,
            }
        }
        ShiftOp::Rcl | ShiftOp::Rcr => {
            let rotate = count % (bits + 1);
            // Rotate through a (bits + 1)-bit value with CF on top.
            let wide = (u128::from(carry) << bits) | u128::from(value);
            let width = bits + 1;
            let wide_mask = (1u128 << width) - 1;
            let rotated = if rotate == 0 {
                wide
            } else if op == ShiftOp::Rcl {
                ((wide << rotate) | (wide >> (width - rotate))) & wide_mask
            } else {
                ((wide >> rotate) | (wide << (width - rotate))) & wide_mask
            };
            let result = (rotated as u64) & m;
            let cf = (rotated >> bits) & 1 != 0;
            let of = if op == ShiftOp::Rcl {
                msb(result) != cf
            } else {
                let top = msb(result);
                top != (result & (sign_bit(size) >> 1) != 0)
            };
            Shifted {
                value: result,
                flags: flag(cf, CF) | flag(of, OF),
                written: CF | OF,
            }
        }
    }
}

/// SHLD (`left`) or SHRD of `dest` with bits from `source`.
pub(crate) fn double_shift(left: bool, dest: u64, source: u64, count: u64, size: usize) -> Shifted {
    let bits = (size.clamp(1, 8) * 8) as u32;
    let m = mask(size);
    let (dest, source) = (dest & m, source & m);
    let count = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if count == 0 {
        return Shifted {
            value: dest,
            flags: 0,
            written: 0,
        };
    }
    // SHLD shifts dest:source:dest left, SHRD shifts dest:source:dest right
    // (the third part only matters for 16-bit counts above 16, where the
    // result is architecturally undefined).
    let (d, s, b) = (u128::from(dest), u128::from(source), bits);
    let (result, cf) = if left {
        let wide = if b == 64 {
            (d << b) | s
        } else {
            (d << (2 * b)) | (s << b) | d
        };
        let top = if b == 64 { 2 * b } else { 3 * b };
        let shifted = wide << count;
        let result = ((shifted >> (top - b)) as u64) & m;
        let cf = (wide >> (top - count)) & 1 != 0;
        (result, cf)
    } else {
        let wide = if b == 64 {
            (s << b) | d
        } else {
            (d << (2 * b)) | (s << b) | d
        };
        let result = ((wide >> count) as u64) & m;
        let cf = (wide >> (count - 1)) & 1 != 0;
        (result, cf)
    };
    let of = (result ^ dest) & sign_bit(size) != 0;
    Shifted {
        value: result,
        flags: sign_zero_parity(result, size) | flag(cf, CF) | flag(of, OF),
        written: CF | PF | AF | ZF | SF | OF,
    }
}
