//! Segment-register loads: MOV Sreg, r/m16; POP ES/SS/DS/FS/GS; LDS, LES,
//! LFS, LGS and LSS; and the #UD of MOV to CS or to a reserved Sreg
//! encoding. The operand is read (with its own segmentation, alignment and
//! paging checks) before the descriptor is checked and loaded.

use crate::Guest;
use crate::alu::mask;
use crate::fault::{Fault, vector};
use crate::fetch::MAX_INSTRUCTION_LEN;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use crate::operand::segment_index;
use crate::segmentation::{SegmentAccess, linearize};
use abi::{Segment, SegmentLoad};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

/// The register a load targets, in x86 encoding order; CS is #UD.
fn target(reg: iced_x86::Register) -> Result<usize, Fault> {
    let register = segment_index(reg)?;
    if register == Segment::Cs as usize {
        return Err(Fault::without_code(vector::UD));
    }
    Ok(register)
}

/// Loads `selector` into `register` and records it for the reply. MOV SS
/// and POP SS (`blocks_interrupts`) block interrupts for one instruction.
fn load<G: Guest>(
    m: &mut Machine<'_, G>,
    register: usize,
    selector: u16,
    blocks_interrupts: bool,
) -> Result<(), Fault> {
    let value = m.load_segment(register, selector)?;
    m.regs.segment_load = Some(SegmentLoad {
        value,
        register: register as u8,
        flags: if blocks_interrupts {
            SegmentLoad::BLOCKS_INTERRUPTS
        } else {
            0
        },
        reserved: [0; 6],
    });
    Ok(())
}

/// MOV Sreg, r/m16 (a register source gives its low 16 bits; a memory
/// source is always 16 bits).
pub(super) fn mov<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let register = target(i.op0_register())?;
    let selector = match i.op_kind(1) {
        OpKind::Register => m.register_value(i.op1_register())? as u16,
        OpKind::Memory => {
            let span = m.map_memory_operand(i, 2, DataAccess::Read, Alignment::Checked(2))?;
            m.read_value(&span)? as u16
        }
        _ => return Err(Fault::Unsupported("segment load source")),
    };
    load(m, register, selector, register == Segment::Ss as usize)
}

/// POP Sreg: reads the selector (16 bits, whatever the operand size: the
/// CPU neither checks nor touches the bytes above it) at SS:rSP, then
/// raises the stack pointer by the operand size.
pub(super) fn pop<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
    size: usize,
) -> Result<(), Fault> {
    let register = target(i.op0_register())?;
    let (sp_reg, stack_size) = super::stack::stack_pointer(m);
    let sp = m.register_value(sp_reg)?;
    let span = m.map_data(
        Segment::Ss as usize,
        sp,
        2,
        DataAccess::Read,
        Alignment::Checked(2),
    )?;
    let selector = m.read_value(&span)? as u16;
    m.set_register(sp_reg, sp.wrapping_add(size as u64) & mask(stack_size))?;
    load(m, register, selector, register == Segment::Ss as usize)
}

/// LDS, LES, LFS, LGS, LSS: a far pointer (offset of the destination's
/// size, then the selector) into the register pair. The CPU reads it as
/// two accesses, the offset first, each with its own limit, alignment and
/// paging checks.
pub(super) fn load_far_pointer<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
) -> Result<(), Fault> {
    let register = match i.mnemonic() {
        Mnemonic::Lds => Segment::Ds,
        Mnemonic::Les => Segment::Es,
        Mnemonic::Lfs => Segment::Fs,
        Mnemonic::Lgs => Segment::Gs,
        Mnemonic::Lss => Segment::Ss,
        _ => return Err(Fault::Unsupported("far-pointer load")),
    } as usize;
    let destination = i.op0_register();
    let offset_size = destination.size();
    if !matches!(offset_size, 2 | 4 | 8) || i.op_kind(1) != OpKind::Memory {
        return Err(Fault::Unsupported("far-pointer load operands"));
    }
    let operand = m.memory_operand(i)?;
    let offset_span = m.map_data(
        operand.segment,
        operand.offset,
        offset_size,
        DataAccess::Read,
        Alignment::Checked(offset_size as u64),
    )?;
    // The selector continues the operand (no wrap at the address size, as
    // for any multi-byte operand).
    let selector_span = m.map_data(
        operand.segment,
        operand.offset.wrapping_add(offset_size as u64),
        2,
        DataAccess::Read,
        Alignment::Checked(2),
    )?;
    let offset = m.read_value(&offset_span)?;
    let selector = m.read_value(&selector_span)? as u16;
    m.set_register(destination, offset)?;
    load(m, register, selector, false)
}

/// Whether undecodable bytes are MOV Sreg, r/m16 naming CS or a reserved
/// register (ModRM.reg 1, 6 or 7), which the CPU rejects with #UD: the
/// fault to raise (#UD, or a retry when the exit's guest-linear address
/// is not the instruction's), `None` for anything else.
pub(crate) fn reserved_segment_move<G: Guest>(
    m: &mut Machine<'_, G>,
    bytes: &[u8; MAX_INSTRUCTION_LEN],
    fetched: usize,
) -> Option<Fault> {
    let bitness = m.mode.bitness(m.exit);
    let data = bytes.get(..fetched)?;
    let opcode_at = data.iter().position(|&byte| !is_prefix(byte, bitness))?;
    let (&opcode, after) = data.get(opcode_at..)?.split_first()?;
    let modrm = *after.first()?;
    if opcode != 0x8e || !matches!((modrm >> 3) & 7, 1 | 6 | 7) {
        return None;
    }
    // The same bytes naming DS must be a valid MOV DS of at most 15 bytes.
    let mut as_ds = *bytes;
    *as_ds.get_mut(opcode_at + 1)? = (modrm & !0x38) | (3 << 3);
    let decoded = Decoder::new(bitness, as_ds.get(..fetched)?, DecoderOptions::NONE).decode();
    if !matches!(
        decoded.code(),
        Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_r64m16
    ) {
        return None;
    }
    let ip = if bitness == 64 {
        m.regs.rip
    } else {
        m.regs.rip & 0xffff_ffff
    };
    let cs = Segment::Cs as usize;
    let length = decoded.len() as u64;
    match linearize(m.exit, m.mode, cs, ip, 1, SegmentAccess::Execute) {
        Ok(linear) => m.note_linear_range(linear, length),
        Err(fault) => return Some(fault),
    }
    Some(
        m.require_linear_confirmed()
            .err()
            .unwrap_or(Fault::without_code(vector::UD)),
    )
}

/// Legacy prefixes, and REX in 64-bit code.
fn is_prefix(byte: u8, bitness: u32) -> bool {
    matches!(
        byte,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    ) || (bitness == 64 && byte & 0xf0 == 0x40)
}
