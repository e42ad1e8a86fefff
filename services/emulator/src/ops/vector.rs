//! SSE and AVX moves between vector registers, general registers and
//! memory: MOVD, MOVQ, MOVSS, MOVSD, MOVLPS/MOVHPS/MOVLPD/MOVHPD, MOVDQA, MOVDQU, MOVAPS, MOVUPS, MOVAPD,
//! MOVUPD, MOVNTDQ, MOVNTPS, MOVNTPD and their VEX forms (128 and 256 bit).
//! Vector registers come from the exit message and leave through
//! `Retired::vector`.

use crate::Guest;
use crate::fault::{Fault, vector};
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::state::{Mode, control};
use abi::ValidGroups;
use iced_x86::{EncodingKind, Instruction, Mnemonic, OpKind, Register};

/// Whether `mnemonic` is a vector move emulated here.
pub(super) fn is_vector_move(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Movd
            | M::Movq
            | M::Movss
            | M::Movsd
            | M::Movdqa
            | M::Movdqu
            | M::Movaps
            | M::Movups
            | M::Movapd
            | M::Movupd
            | M::Movntdq
            | M::Movntps
            | M::Movntpd
            | M::Vmovd
            | M::Vmovq
            | M::Vmovdqa
            | M::Vmovdqu
            | M::Vmovaps
            | M::Vmovups
            | M::Vmovapd
            | M::Vmovupd
            | M::Vmovntdq
            | M::Vmovntps
            | M::Vmovntpd
            | M::Vmovss
            | M::Vmovsd
            | M::Movlps
            | M::Movlpd
            | M::Movhps
            | M::Movhpd
            | M::Vmovlps
            | M::Vmovlpd
            | M::Vmovhps
            | M::Vmovhpd
    )
}

/// MOVLPS/MOVHPS-style moves of one 64-bit half: the byte offset of the
/// half in the XMM register.
fn half_offset(mnemonic: Mnemonic) -> Option<usize> {
    use Mnemonic as M;
    match mnemonic {
        M::Movlps | M::Movlpd | M::Vmovlps | M::Vmovlpd => Some(0),
        M::Movhps | M::Movhpd | M::Vmovhps | M::Vmovhpd => Some(8),
        _ => None,
    }
}

/// Moves whose memory operand must be aligned to its size (#GP(0) if not).
fn requires_alignment(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Movdqa
            | M::Movaps
            | M::Movapd
            | M::Movntdq
            | M::Movntps
            | M::Movntpd
            | M::Vmovdqa
            | M::Vmovaps
            | M::Vmovapd
            | M::Vmovntdq
            | M::Vmovntps
            | M::Vmovntpd
    )
}

/// #UD/#NM checks for SSE (CR0.EM, CR4.OSFXSR, CR0.TS) and AVX (CR4.OSXSAVE,
/// XCR0, CR0.TS, not in real or virtual-8086 mode).
fn check_enabled<G: Guest>(m: &Machine<'_, G>, vex: bool) -> Result<(), Fault> {
    let state = &m.exit.state;
    let groups = if vex {
        ValidGroups::SSE | ValidGroups::AVX
    } else {
        ValidGroups::SSE
    };
    if vex {
        let avx_state = state.xcr0 & 0b110 == 0b110;
        let real = matches!(m.mode, Mode::Real | Mode::Virtual8086);
        if state.cr4 & control::CR4_OSXSAVE == 0 || !avx_state || real {
            return Err(Fault::without_code(vector::UD));
        }
    } else if state.cr0 & control::CR0_EM != 0 || state.cr4 & control::CR4_OSFXSR == 0 {
        return Err(Fault::without_code(vector::UD));
    }
    if state.cr0 & control::CR0_TS != 0 {
        return Err(Fault::without_code(vector::NM));
    }
    if m.exit.valid & groups != groups {
        return Err(Fault::Unsupported(
            "vector registers not in the exit message",
        ));
    }
    Ok(())
}

/// The index of an XMM/YMM register, or `None` for other registers.
fn vector_index(reg: Register) -> Option<usize> {
    (reg.is_xmm() || reg.is_ymm()).then(|| reg.number())
}

pub(super) fn execute<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let mnemonic = i.mnemonic();
    let vex = i.encoding() == EncodingKind::VEX;
    if i.op_kind(0) == OpKind::Register && i.op0_register().is_mm()
        || i.op_kind(1) == OpKind::Register && i.op1_register().is_mm()
    {
        return Err(Fault::Unsupported("MMX register operand"));
    }
    if i.op_count() != 2 {
        return Err(Fault::Unsupported(
            "vector move with more than two operands",
        ));
    }
    check_enabled(m, vex)?;
    // The number of bytes moved.
    let len = match (i.op_kind(0), i.op_kind(1)) {
        (OpKind::Memory, _) | (_, OpKind::Memory) => i.memory_size().size(),
        _ => match mnemonic {
            Mnemonic::Movd | Mnemonic::Vmovd => 4,
            Mnemonic::Movq | Mnemonic::Vmovq => 8,
            Mnemonic::Movss => 4,
            Mnemonic::Movsd => 8,
            _ => i.op0_register().size(),
        },
    };
    if !matches!(len, 4 | 8 | 16 | 32) {
        return Err(Fault::Unsupported("vector move of this size"));
    }
    // Unaligned 16- and 32-byte moves are exempt from #AC; the scalar
    // forms are checked like integer accesses.
    let alignment = if requires_alignment(mnemonic) {
        Alignment::Required(len as u64)
    } else if len <= 8 {
        Alignment::Checked(len as u64)
    } else {
        Alignment::Checked(1)
    };
    // Read the source.
    let mut data = [0u8; 32];
    match i.op_kind(1) {
        OpKind::Memory => {
            let span = m.map_memory_operand(i, len, DataAccess::Read, alignment)?;
            m.read_span(&span, &mut data)?;
        }
        OpKind::Register => {
            let reg = i.op1_register();
            if let Some(index) = vector_index(reg) {
                data = m
                    .regs
                    .vector(m.exit, index)
                    .ok_or(Fault::Unsupported("register"))?;
                if let Some(offset) = half_offset(mnemonic) {
                    data.copy_within(offset..offset + 8, 0);
                }
            } else {
                let value = m.register_value(reg)?;
                data[..8].copy_from_slice(&value.to_le_bytes());
            }
        }
        _ => return Err(Fault::Unsupported("vector move source")),
    }
    // Write the destination.
    match i.op_kind(0) {
        OpKind::Memory => {
            let span = m.map_memory_operand(i, len, DataAccess::Write, alignment)?;
            m.write_span(&span, &data[..len])
        }
        OpKind::Register => {
            let reg = i.op0_register();
            let Some(index) = vector_index(reg) else {
                let mut value = [0u8; 8];
                let n = len.min(8);
                value[..n].copy_from_slice(&data[..n]);
                return m.set_register(reg, u64::from_le_bytes(value));
            };
            let old = m
                .regs
                .vector(m.exit, index)
                .ok_or(Fault::Unsupported("register"))?;
            let mut new = old;
            // Scalar moves between two XMM registers merge into the low
            // element; every other load zeroes the rest of the XMM register.
            // MOVLPS-style loads replace one half and keep the other.
            let merge = matches!(mnemonic, Mnemonic::Movss | Mnemonic::Movsd)
                && i.op_kind(1) == OpKind::Register;
            let offset = half_offset(mnemonic).unwrap_or(0);
            if !merge && half_offset(mnemonic).is_none() {
                new[..16].fill(0);
            }
            new.get_mut(offset..offset + len)
                .ok_or(Fault::Unsupported("vector move of this size"))?
                .copy_from_slice(&data[..len]);
            // VEX.128 writes zero bits 255:128.
            if vex && len < 32 {
                new[16..].fill(0);
            }
            m.regs.set_vector(index, new);
            Ok(())
        }
        _ => Err(Fault::Unsupported("vector move destination")),
    }
}
