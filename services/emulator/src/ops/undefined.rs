//! Bytes iced-x86 refuses that the CPU answers with #UD rather than
//! something the emulator could not handle: MOV to CS or to a reserved
//! segment register, and a LOCK prefix on an instruction that cannot take
//! it. Neither can cause an exit (the CPU faults before touching memory),
//! so the emulator meets them only when the guest rewrote its code under
//! us; the answer is then the CPU's #UD, or a retry when the exit's
//! guest-linear address is not the instruction's.

use crate::Guest;
use crate::fault::{Fault, vector};
use crate::fetch::MAX_INSTRUCTION_LEN;
use crate::machine::Machine;
use crate::segmentation::{SegmentAccess, linearize};
use abi::Segment;
use iced_x86::{Code, Decoder, DecoderOptions};

/// The fault for undecodable `bytes` (`fetched` of them read), if the CPU
/// raises #UD for them; `None` for anything else.
pub(crate) fn undefined_opcode<G: Guest>(
    m: &mut Machine<'_, G>,
    bytes: &[u8; MAX_INSTRUCTION_LEN],
    fetched: usize,
) -> Option<Fault> {
    let bitness = m.mode.bitness(m.exit);
    let data = bytes.get(..fetched)?;
    let length = reserved_segment_move(bitness, data)
        .or_else(|| lock_without_lockable_operand(bitness, data))?;
    let ip = if bitness == 64 {
        m.regs.rip
    } else {
        m.regs.rip & 0xffff_ffff
    };
    match linearize(
        m.exit,
        m.mode,
        Segment::Cs as usize,
        ip,
        1,
        SegmentAccess::Execute,
    ) {
        Ok(linear) => m.note_linear_range(linear, length),
        Err(fault) => return Some(fault),
    }
    Some(
        m.require_linear_confirmed()
            .err()
            .unwrap_or(Fault::without_code(vector::UD)),
    )
}

/// MOV Sreg, r/m16 naming CS or a reserved register (ModRM.reg 1, 6 or 7):
/// its length.
fn reserved_segment_move(bitness: u32, data: &[u8]) -> Option<u64> {
    let opcode_at = data.iter().position(|&byte| !is_prefix(byte, bitness))?;
    let (&opcode, after) = data.get(opcode_at..)?.split_first()?;
    let modrm = *after.first()?;
    if opcode != 0x8e || !matches!((modrm >> 3) & 7, 1 | 6 | 7) {
        return None;
    }
    // The same bytes naming DS must be a valid MOV DS of at most 15 bytes.
    let mut as_ds = [0u8; MAX_INSTRUCTION_LEN];
    let as_ds = as_ds.get_mut(..data.len())?;
    as_ds.copy_from_slice(data);
    *as_ds.get_mut(opcode_at + 1)? = (modrm & !0x38) | (3 << 3);
    let decoded = Decoder::new(bitness, as_ds, DecoderOptions::NONE).decode();
    matches!(
        decoded.code(),
        Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_r64m16
    )
    .then_some(decoded.len() as u64)
}

/// An instruction that is valid without its LOCK prefix but does not
/// allow one (a plain MOV, CMP, BT, a register destination, ...): its
/// length.
fn lock_without_lockable_operand(bitness: u32, data: &[u8]) -> Option<u64> {
    let unchecked = Decoder::new(bitness, data, DecoderOptions::NO_INVALID_CHECK).decode();
    if unchecked.is_invalid() || !unchecked.has_lock_prefix() {
        return None;
    }
    // Only the LOCK prefix may be what made the bytes invalid: the same
    // bytes with that prefix replaced by a redundant DS override decode.
    let length = unchecked.len();
    let mut unlocked = [0u8; MAX_INSTRUCTION_LEN];
    let unlocked = unlocked.get_mut(..length)?;
    unlocked.copy_from_slice(data.get(..length)?);
    let lock_at = unlocked.iter().position(|&byte| byte == 0xf0)?;
    *unlocked.get_mut(lock_at)? = 0x3e;
    let checked = Decoder::new(bitness, unlocked, DecoderOptions::NONE).decode();
    (!checked.is_invalid() && checked.code() == unchecked.code()).then_some(length as u64)
}

/// Legacy prefixes, and REX in 64-bit code.
fn is_prefix(byte: u8, bitness: u32) -> bool {
    matches!(
        byte,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    ) || (bitness == 64 && byte & 0xf0 == 0x40)
}
