//! Generates one differential case for a form: the encoded instruction (with a
//! memory operand that lands where the case wants: inside the data region, on
//! a page boundary, on the read-only or the guard page, or at a
//! non-canonical address), registers with edge-case values, flags, vector
//! registers and the data region's contents.

use crate::forms::{Form, Shape};
use emulator_testkit::Rng;
use emulator_testkit::native::{
    CODE16_IP, DATA_BASE, GUARD_PAGE, INSTRUCTION_ADDRESS, NativeMode, NativeState, READ_ONLY_PAGE,
    WRITABLE_PAGES, host_segment_bases,
};
use emulator_testkit::state::rflags;
use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, MemoryOperand, Mnemonic,
    OpCodeOperandKind as K, OpKind, Register, RepPrefixKind,
};

/// Everything one case needs on both sides.
#[derive(Clone, Debug)]
pub struct Case {
    pub form: Form,
    /// The mode it runs in (64-bit or compatibility mode).
    pub mode: NativeMode,
    pub instruction: Instruction,
    pub bytes: Vec<u8>,
    pub input: NativeState,
    /// The writable data pages' contents before the instruction.
    pub data: Vec<u8>,
}

const GPR64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];
const RCX: usize = 1;
const RDX: usize = 2;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;
const WRITABLE_BYTES: u64 = WRITABLE_PAGES * 0x1000;

/// An operand as the instruction constructors take it.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Register(Register),
    Memory(MemoryOperand),
    Signed(i32),
    Unsigned(u32),
}

/// The GPR index (0-15) a register of any size lives in.
pub fn gpr_index(register: Register) -> Option<usize> {
    let full = register.full_register();
    GPR64.iter().position(|candidate| *candidate == full)
}

/// The code size in bits of a mode.
pub fn bits(mode: NativeMode) -> u32 {
    match mode {
        NativeMode::Long => 64,
        NativeMode::Segmented { code16: true, .. } => 16,
        NativeMode::Compatibility | NativeMode::Segmented { .. } => 32,
    }
}

/// Where the instruction starts: its offset in the code segment.
pub fn instruction_pointer(mode: NativeMode) -> u64 {
    match mode {
        NativeMode::Segmented { code16: true, .. } => CODE16_IP,
        _ => INSTRUCTION_ADDRESS,
    }
}

/// The base of DS, ES and SS in `mode` (cases keep the stack segment's base
/// equal to the data segment's), which register values must leave out.
fn default_base(mode: NativeMode) -> u64 {
    match mode {
        NativeMode::Segmented { data, .. } => u64::from(data.base),
        NativeMode::Long | NativeMode::Compatibility => 0,
    }
}

/// The offset that reaches linear `target` through a segment at `base`.
fn offset_of(target: u64, base: u64, bits: u32) -> u64 {
    if bits != 64 {
        target.wrapping_sub(base) & 0xffff_ffff
    } else {
        target
    }
}

/// A random general register of `size` bytes that `bits`-bit code can name.
fn random_register(rng: &mut Rng, size: u32, bits: u32) -> Register {
    let count = if bits == 64 { 16 } else { 8 };
    let index = rng.below(count) as usize;
    let base = GPR64[index];
    match size {
        8 => base,
        4 => Register::EAX + index as u32,
        2 => Register::AX + index as u32,
        _ if bits != 64 => {
            // AL, CL, DL, BL, AH, CH, DH, BH.
            Register::AL + index as u32 % 4 + if index >= 4 { 4 } else { 0 }
        }
        _ => {
            // AH..BH (only without REX) or the low byte.
            if index < 4 && rng.chance(1, 4) {
                Register::AH + index as u32
            } else if index < 4 {
                Register::AL + index as u32
            } else {
                Register::SPL + (index as u32 - 4)
            }
        }
    }
}

/// A random vector register (`first` is XMM0 or YMM0) `bits`-bit code can name.
fn random_vector(rng: &mut Rng, first: Register, bits: u32) -> Register {
    first + rng.below(if bits == 64 { 16 } else { 8 }) as u32
}

/// Picks the data region offset (or, for non-canonical cases, the full
/// address) a `size`-byte access should hit.
fn pick_target(rng: &mut Rng, size: u64, allow_noncanonical: bool) -> u64 {
    let size = size.max(1);
    let span = |rng: &mut Rng, start: u64, end: u64| start + rng.below((end - start).max(1));
    let offset = match rng.below(100) {
        0..=59 => {
            let offset = span(rng, 0, WRITABLE_BYTES - size + 1);
            if rng.chance(1, 2) {
                offset & !(size.min(64) - 1)
            } else {
                offset
            }
        }
        60..=69 if size > 1 => 0x1000 - 1 - rng.below(size - 1),
        70..=77 => span(
            rng,
            READ_ONLY_PAGE * 0x1000,
            READ_ONLY_PAGE * 0x1000 + 0x1000 - size + 1,
        ),
        78..=82 if size > 1 => READ_ONLY_PAGE * 0x1000 - 1 - rng.below(size - 1),
        83..=87 => GUARD_PAGE * 0x1000 - rng.below(size) + rng.below(0x40),
        88..=92 if allow_noncanonical => {
            return 0x0000_8000_0000_0000
                + rng.below(0x1_0000)
                + (rng.next_u64() & 0x7fff) * (1 << 48);
        }
        _ => rng.pick(&[0, 0x1000, WRITABLE_BYTES - size, 0x1000 - size]),
    };
    DATA_BASE + offset
}

/// A 16-bit-address memory operand ([BX+SI], [BP+DI], [SI], [BP], [disp16],
/// ...) reaching offset `target` (below 64 KiB).
fn memory_operand16(
    rng: &mut Rng,
    target: u64,
    gprs: &mut [u64; 16],
) -> (MemoryOperand, Vec<usize>) {
    const RBX: usize = 3;
    const RBP: usize = 5;
    const FORMS: [&[usize]; 9] = [
        &[RBX, RSI],
        &[RBX, RDI],
        &[RBP, RSI],
        &[RBP, RDI],
        &[RSI],
        &[RDI],
        &[RBP],
        &[RBX],
        &[],
    ];
    let registers = rng.pick(&FORMS);
    if registers.is_empty() {
        let operand = MemoryOperand::new(
            Register::None,
            Register::None,
            1,
            target as i64,
            2,
            false,
            Register::None,
        );
        return (operand, vec![]);
    }
    let displacement: i64 = match rng.below(3) {
        0 => 0,
        1 => (rng.next_u64() as i8) as i64,
        _ => (rng.next_u64() as i16) as i64,
    };
    let second = if registers.len() == 2 {
        rng.below(0x1_0000)
    } else {
        0
    };
    let first = target
        .wrapping_sub(displacement as u64)
        .wrapping_sub(second)
        & 0xffff;
    let upper = |rng: &mut Rng| rng.next_u64() & 0xffff_ffff_ffff_0000;
    gprs[registers[0]] = upper(rng) | first;
    if let Some(index) = registers.get(1) {
        gprs[*index] = upper(rng) | second;
    }
    let register16 = |gpr: usize| Register::AX + gpr as u32;
    let displ_size = if displacement == 0 {
        0
    } else if (-128..128).contains(&displacement) {
        1
    } else {
        2
    };
    let operand = MemoryOperand::new(
        register16(registers[0]),
        registers
            .get(1)
            .map_or(Register::None, |index| register16(*index)),
        1,
        displacement,
        displ_size,
        false,
        Register::None,
    );
    (operand, registers.to_vec())
}

/// What shapes a form's memory operand may take.
struct OperandRules {
    /// The form is PUSH/POP: RSP is the stack pointer, not an address register.
    avoid_rsp: bool,
    /// A moffs operand: an absolute address only.
    moffs: bool,
    /// The form takes 32-bit addresses only.
    force_address32: bool,
    /// 64 or 32 (the code size).
    bits: u32,
    /// The base of DS, ES and SS.
    default_base: u64,
}

/// A memory operand addressing `target`, setting the address registers it
/// uses in `gprs`; returns the operand and the registers it reserved.
fn memory_operand(
    rng: &mut Rng,
    target: u64,
    gprs: &mut [u64; 16],
    rules: OperandRules,
) -> (MemoryOperand, Vec<usize>) {
    let OperandRules {
        avoid_rsp,
        moffs,
        force_address32,
        bits,
        default_base,
    } = rules;
    let target = offset_of(target, default_base, bits);
    let canonical = target < 0x0000_8000_0000_0000;
    let reachable16 = bits == 16 && target < 0x1_0000;
    if moffs {
        let displ_size = match bits {
            64 => 8,
            16 if reachable16 => 2,
            _ => 4,
        };
        return (
            MemoryOperand::new(
                Register::None,
                Register::None,
                1,
                target as i64,
                displ_size,
                false,
                Register::None,
            ),
            vec![],
        );
    }
    if reachable16 && !force_address32 && rng.chance(7, 10) {
        return memory_operand16(rng, target, gprs);
    }
    let force_address32 = force_address32 || bits != 64;
    let choice = if bits != 64 {
        10 + rng.below(90)
    } else if force_address32 {
        100
    } else {
        rng.below(100)
    };
    if target < 0x1_0000_0000 && choice < 3 {
        // 67h with RIP-relative: EIP-relative, truncated to 32 bits.
        return (
            MemoryOperand::new(
                Register::EIP,
                Register::None,
                1,
                target as i64,
                4,
                false,
                Register::None,
            ),
            vec![],
        );
    }
    if canonical && choice < 10 {
        return (
            MemoryOperand::new(
                Register::RIP,
                Register::None,
                1,
                target as i64,
                8,
                false,
                Register::None,
            ),
            vec![],
        );
    }
    if canonical && choice < 15 {
        return (
            MemoryOperand::new(
                Register::None,
                Register::None,
                1,
                target as i64,
                4,
                false,
                Register::None,
            ),
            vec![],
        );
    }
    let address32 = canonical && (force_address32 || rng.chance(15, 100));
    // Sometimes through FS or GS, whose bases (FS: this thread's TLS block)
    // are added natively as in the emulator.
    let segment_choice = if bits == 64 { rng.below(20) } else { 2 };
    let (segment_prefix, segment_base) = match segment_choice {
        0 => (Register::FS, host_segment_bases().0),
        1 => (Register::GS, host_segment_bases().1),
        _ => (Register::None, 0),
    };
    let target = target.wrapping_sub(segment_base);
    let address32 = address32 && target < 0x1_0000_0000;
    let pick_register = |rng: &mut Rng, exclude: &[usize]| loop {
        let index = rng.below(if bits == 64 { 16 } else { 8 }) as usize;
        if !exclude.contains(&index) {
            return index;
        }
    };
    let mut excluded = vec![];
    if avoid_rsp {
        excluded.push(RSP);
    }
    let base = pick_register(rng, &excluded);
    excluded.push(base);
    excluded.push(RSP);
    let index = rng.chance(2, 5).then(|| pick_register(rng, &excluded));
    let scale = rng.pick(&[1u32, 2, 4, 8]);
    let displacement: i64 = match rng.below(3) {
        0 => 0,
        1 => (rng.next_u64() as i8) as i64,
        _ => (rng.next_u64() as i32 >> rng.below(20)) as i64,
    };
    let index_value = if index.is_some() { rng.below(0x100) } else { 0 };
    let mut base_value = target
        .wrapping_sub(displacement as u64)
        .wrapping_sub(index_value.wrapping_mul(u64::from(scale)));
    let size_register = |gpr: usize| {
        if address32 {
            Register::EAX + gpr as u32
        } else {
            GPR64[gpr]
        }
    };
    let mut upper = 0;
    if address32 {
        base_value &= 0xffff_ffff;
        upper = rng.next_u64() & 0xffff_ffff_0000_0000;
    }
    gprs[base] = base_value | upper;
    let mut used = vec![base];
    let index_register = match index {
        Some(index) => {
            gprs[index] = index_value | if address32 { rng.next_u64() << 32 } else { 0 };
            used.push(index);
            size_register(index)
        }
        None => Register::None,
    };
    let displ_size = if displacement == 0 {
        0
    } else if (-128..128).contains(&displacement) {
        1
    } else {
        4
    };
    (
        MemoryOperand::new(
            size_register(base),
            index_register,
            if index.is_some() { scale } else { 1 },
            displacement,
            displ_size,
            false,
            segment_prefix,
        ),
        used,
    )
}

fn shift_count(rng: &mut Rng) -> u64 {
    rng.pick(&[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0xff])
        | (rng.next_u64() & !0xff)
}

fn build(code: Code, operands: &[Operand]) -> Option<Instruction> {
    use Operand::*;
    let result = match operands {
        [Memory(m)] => Instruction::with1(code, *m),
        [Register(r)] => Instruction::with1(code, *r),
        [Signed(i)] => Instruction::with1(code, *i),
        [Unsigned(u)] => Instruction::with1(code, *u),
        [Memory(m), Register(r)] => Instruction::with2(code, *m, *r),
        [Register(r), Memory(m)] => Instruction::with2(code, *r, *m),
        [Memory(m), Signed(i)] => Instruction::with2(code, *m, *i),
        [Memory(m), Unsigned(u)] => Instruction::with2(code, *m, *u),
        [Register(a), Register(b)] => Instruction::with2(code, *a, *b),
        [Memory(m), Register(r), Unsigned(u)] => Instruction::with3(code, *m, *r, *u),
        [Memory(m), Register(r), Register(c)] => Instruction::with3(code, *m, *r, *c),
        [Register(r), Memory(m), Signed(i)] => Instruction::with3(code, *r, *m, *i),
        [Register(r), Memory(m), Unsigned(u)] => Instruction::with3(code, *r, *m, *u),
        [Register(r), Memory(m), Register(s)] => Instruction::with3(code, *r, *m, *s),
        [Register(r), Register(s), Memory(m)] => Instruction::with3(code, *r, *s, *m),
        [Memory(m), Register(r), Signed(i)] => Instruction::with3(code, *m, *r, *i),
        [Register(r), Register(s), Memory(m), Unsigned(u)] => {
            Instruction::with4(code, *r, *s, *m, *u)
        }
        [Register(r), Register(s), Memory(m), Register(t)] => {
            Instruction::with4(code, *r, *s, *m, *t)
        }
        [Register(r), Register(s), Register(t), Memory(m)] => {
            Instruction::with4(code, *r, *s, *t, *m)
        }
        _ => return None,
    };
    result.ok()
}

/// Sometimes puts up to three extra segment prefixes (ES, CS, SS, DS: all
/// without effect in 64-bit mode; the last one counts in 32- and 16-bit
/// code) in front of an encoding, as long as it stays within 15 bytes.
fn with_redundant_prefixes(rng: &mut Rng, bytes: Vec<u8>, bits: u32) -> Vec<u8> {
    if !rng.chance(15, 100) {
        return bytes;
    }
    let count = 1 + rng.below(3) as usize;
    if bytes.len() + count > 15 {
        return bytes;
    }
    // In 16-bit code CS is based at the sandbox's code page, so a CS
    // override would reach the context page, which the guest does not mirror.
    let prefixes: &[u8] = if bits == 16 {
        &[0x26, 0x36, 0x3e]
    } else {
        &[0x26, 0x2e, 0x36, 0x3e]
    };
    let mut prefixed: Vec<u8> = (0..count).map(|_| rng.pick(prefixes)).collect();
    prefixed.extend(bytes);
    prefixed
}

fn encode(instruction: &Instruction, bits: u32) -> Option<Vec<u8>> {
    let mut encoder = Encoder::new(bits);
    let ip = if bits == 16 {
        CODE16_IP
    } else {
        INSTRUCTION_ADDRESS
    };
    encoder.encode(instruction, ip).ok()?;
    let bytes = encoder.take_buffer();
    (bytes.len() <= 15).then_some(bytes)
}

/// The memory operand size of a form in bytes.
fn memory_size(code: Code) -> u64 {
    code.op_code().memory_size().size() as u64
}

fn random_state(rng: &mut Rng) -> NativeState {
    let mut gprs = [0u64; 16];
    for value in gprs.iter_mut() {
        *value = rng.operand();
    }
    let mut status = rng.next_u64() & rflags::STATUS;
    if rng.chance(1, 5) {
        status |= rflags::DF;
    }
    if rng.chance(1, 10) {
        status |= rflags::AC;
    }
    let mut ymm = [[0u8; 32]; 16];
    for register in ymm.iter_mut() {
        rng.fill(register);
    }
    NativeState {
        gprs,
        rflags: rflags::FIXED | rflags::IF | status,
        ymm,
    }
}

fn random_data(rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; WRITABLE_BYTES as usize];
    if rng.chance(3, 10) {
        let alphabet = [0u8, 1, 0xff, rng.next_u64() as u8];
        for byte in data.iter_mut() {
            *byte = rng.pick(&alphabet);
        }
    } else {
        rng.fill(&mut data);
    }
    data
}

/// Writes `value` (little-endian, `size` bytes) at `address` if it lies in
/// the writable data pages.
fn poke(data: &mut [u8], address: u64, size: u64, value: u64) {
    let bytes = value.to_le_bytes();
    for index in 0..size.min(8) {
        let offset = address.wrapping_sub(DATA_BASE).wrapping_add(index);
        if offset < WRITABLE_BYTES {
            data[offset as usize] = bytes[index as usize];
        }
    }
}

fn peek(data: &[u8], read_only: &[u8], address: u64, size: u64) -> u64 {
    let mut value = 0u64;
    for index in (0..size.min(8)).rev() {
        let offset = address.wrapping_sub(DATA_BASE).wrapping_add(index);
        let byte = if offset < WRITABLE_BYTES {
            data[offset as usize]
        } else if (READ_ONLY_PAGE * 0x1000..GUARD_PAGE * 0x1000).contains(&offset) {
            read_only[(offset - READ_ONLY_PAGE * 0x1000) as usize]
        } else {
            0
        };
        value = value << 8 | u64::from(byte);
    }
    value
}

/// A stack pointer for PUSH/POP: mostly aligned inside the writable pages,
/// sometimes at a page boundary, on the read-only or guard page, misaligned,
/// or non-canonical.
fn pick_stack(rng: &mut Rng, bits: u32) -> u64 {
    match rng.below(20) {
        4 if bits == 32 => DATA_BASE + 0x1000,
        0 => DATA_BASE + 0x1000 + rng.below(3) * 8 - 8,
        1 => DATA_BASE + READ_ONLY_PAGE * 0x1000 + 0x100,
        2 => DATA_BASE + GUARD_PAGE * 0x1000 + rng.below(3) * 8,
        3 => DATA_BASE + 0x800 + rng.below(8),
        4 => 0x0000_8000_0000_0010,
        5 => DATA_BASE + 2 + rng.below(4),
        _ => DATA_BASE + 0x10 + (rng.below(WRITABLE_BYTES - 0x20) & !7),
    }
}

/// Generates a case for `form`, or `None` if no encodable instruction came
/// out of a few tries (reported by the caller).
pub fn generate(form: Form, mode: NativeMode, rng: &mut Rng, read_only: &[u8]) -> Option<Case> {
    for _ in 0..16 {
        let case = match form.shape {
            Shape::String => string_case(form, mode, rng),
            Shape::Memory | Shape::Stack => operand_case(form, mode, rng, read_only),
        };
        if case.is_some() {
            return case;
        }
    }
    None
}

fn string_case(form: Form, mode: NativeMode, rng: &mut Rng) -> Option<Case> {
    let bits = bits(mode);
    let code = form.code;
    let mnemonic = code.mnemonic();
    let address_size = match bits {
        16 if rng.chance(7, 10) => 16,
        16 | 32 => 32,
        _ if rng.chance(15, 100) => 32,
        _ => 64,
    };
    let rep = match rng.below(3) {
        0 => RepPrefixKind::None,
        1 => RepPrefixKind::Repe,
        _ if matches!(
            mnemonic,
            Mnemonic::Cmpsb
                | Mnemonic::Cmpsw
                | Mnemonic::Cmpsd
                | Mnemonic::Cmpsq
                | Mnemonic::Scasb
                | Mnemonic::Scasw
                | Mnemonic::Scasd
                | Mnemonic::Scasq
        ) =>
        {
            RepPrefixKind::Repne
        }
        _ => RepPrefixKind::Repe,
    };
    let none = Register::None;
    let instruction = match code {
        Code::Movsb_m8_m8 => Instruction::with_movsb(address_size, none, rep),
        Code::Movsw_m16_m16 => Instruction::with_movsw(address_size, none, rep),
        Code::Movsd_m32_m32 => Instruction::with_movsd(address_size, none, rep),
        Code::Movsq_m64_m64 => Instruction::with_movsq(address_size, none, rep),
        Code::Stosb_m8_AL => Instruction::with_stosb(address_size, rep),
        Code::Stosw_m16_AX => Instruction::with_stosw(address_size, rep),
        Code::Stosd_m32_EAX => Instruction::with_stosd(address_size, rep),
        Code::Stosq_m64_RAX => Instruction::with_stosq(address_size, rep),
        Code::Lodsb_AL_m8 => Instruction::with_lodsb(address_size, none, rep),
        Code::Lodsw_AX_m16 => Instruction::with_lodsw(address_size, none, rep),
        Code::Lodsd_EAX_m32 => Instruction::with_lodsd(address_size, none, rep),
        Code::Lodsq_RAX_m64 => Instruction::with_lodsq(address_size, none, rep),
        Code::Cmpsb_m8_m8 => Instruction::with_cmpsb(address_size, none, rep),
        Code::Cmpsw_m16_m16 => Instruction::with_cmpsw(address_size, none, rep),
        Code::Cmpsd_m32_m32 => Instruction::with_cmpsd(address_size, none, rep),
        Code::Cmpsq_m64_m64 => Instruction::with_cmpsq(address_size, none, rep),
        Code::Scasb_AL_m8 => Instruction::with_scasb(address_size, rep),
        Code::Scasw_AX_m16 => Instruction::with_scasw(address_size, rep),
        Code::Scasd_EAX_m32 => Instruction::with_scasd(address_size, rep),
        Code::Scasq_RAX_m64 => Instruction::with_scasq(address_size, rep),
        _ => return None,
    }
    .ok()?;
    let bytes = with_redundant_prefixes(rng, encode(&instruction, bits)?, bits);
    let size = memory_size(code);
    let mut input = random_state(rng);
    let data = random_data(rng);
    let count = match rng.below(8) {
        0 => 0,
        1 => 1,
        2..=4 => rng.below(17),
        5 | 6 => rng.below(700),
        _ => rng.below(2 * WRITABLE_BYTES / size + 8),
    };
    let place = |rng: &mut Rng| {
        if rng.chance(3, 4) {
            DATA_BASE + rng.below(WRITABLE_BYTES)
        } else {
            pick_target(rng, size, address_size == 64)
        }
    };
    let (source, destination) = (place(rng), place(rng));
    input.gprs[RSI] = offset_of(source, default_base(mode), bits);
    input.gprs[RDI] = offset_of(destination, default_base(mode), bits);
    input.gprs[RCX] = count;
    if address_size != 64 {
        let mask = if address_size == 16 {
            0xffff
        } else {
            0xffff_ffff
        };
        for register in [RSI, RDI, RCX] {
            input.gprs[register] = (input.gprs[register] & mask) | (rng.next_u64() & !mask);
        }
    }

    Some(Case {
        form,
        mode,
        instruction,
        bytes,
        input,
        data,
    })
}

fn operand_case(form: Form, mode: NativeMode, rng: &mut Rng, read_only: &[u8]) -> Option<Case> {
    let bits = bits(mode);
    let code = form.code;
    let op_code = code.op_code();
    let mnemonic = code.mnemonic();
    let size = memory_size(code);
    let stack = matches!(mnemonic, Mnemonic::Push | Mnemonic::Pop);
    let mut input = random_state(rng);
    let mut data = random_data(rng);
    if stack {
        input.gprs[RSP] = offset_of(pick_stack(rng, bits), default_base(mode), bits);
    } else {
        input.gprs[RSP] = offset_of(
            DATA_BASE + 0x1000 + (rng.below(0x800) & !7),
            default_base(mode),
            bits,
        );
    }
    let bit_offset_form = matches!(
        mnemonic,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && op_code
        .op_kinds()
        .get(1)
        .is_some_and(|kind| matches!(kind, K::r16_reg | K::r32_reg | K::r64_reg));
    let mut target = pick_target(rng, size, bits == 64);
    if bit_offset_form && rng.chance(3, 4) {
        target = DATA_BASE + 0x800 + rng.below(0x800);
    }
    let mut operands = Vec::new();
    let mut reserved: Vec<usize> = Vec::new();
    let mut register_values: Vec<(usize, u64)> = Vec::new();
    let mut memory_target = None;
    for kind in op_code.op_kinds() {
        let operand = match kind {
            K::mem
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
            | K::mem_offs => {
                let rules = OperandRules {
                    avoid_rsp: stack,
                    moffs: *kind == K::mem_offs,
                    force_address32: code == Code::Movdir64b_r32_m512,
                    bits,
                    default_base: default_base(mode),
                };
                let (memory, used) = memory_operand(rng, target, &mut input.gprs, rules);
                reserved.extend(used);
                memory_target = Some(target);
                Operand::Memory(memory)
            }
            K::r8_reg | K::r8_opcode => Operand::Register(random_register(rng, 1, bits)),
            K::r16_reg | K::r16_opcode | K::r16_rm | K::r16_reg_mem => {
                Operand::Register(random_register(rng, 2, bits))
            }
            K::r32_reg | K::r32_opcode | K::r32_rm | K::r32_reg_mem => {
                Operand::Register(random_register(rng, 4, bits))
            }
            K::r32_vvvv => Operand::Register(random_register(rng, 4, bits)),
            K::r64_vvvv => Operand::Register(random_register(rng, 8, bits)),
            K::xmm_vvvv | K::xmm_is4 | K::xmm_is5 => {
                Operand::Register(random_vector(rng, Register::XMM0, bits))
            }
            K::ymm_vvvv | K::ymm_is4 | K::ymm_is5 => {
                Operand::Register(random_vector(rng, Register::YMM0, bits))
            }
            K::r64_reg | K::r64_opcode | K::r64_rm | K::r64_reg_mem => {
                Operand::Register(random_register(rng, 8, bits))
            }
            K::seg_reg => Operand::Register(rng.pick(&[
                Register::ES,
                Register::CS,
                Register::SS,
                Register::DS,
                Register::FS,
                Register::GS,
            ])),
            K::xmm_reg | K::xmm_rm => Operand::Register(random_vector(rng, Register::XMM0, bits)),
            K::ymm_reg | K::ymm_rm => Operand::Register(random_vector(rng, Register::YMM0, bits)),
            K::al => Operand::Register(Register::AL),
            K::ax => Operand::Register(Register::AX),
            K::eax => Operand::Register(Register::EAX),
            K::rax => Operand::Register(Register::RAX),
            K::cl => Operand::Register(Register::CL),
            K::imm8_const_1 => Operand::Unsigned(1),
            K::imm8 if is_shift(mnemonic) => Operand::Unsigned(shift_count(rng) as u32 & 0xff),
            K::imm8 => Operand::Unsigned(rng.operand() as u32 & 0xff),
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => {
                Operand::Signed(rng.operand() as i8 as i32)
            }
            K::imm16 => Operand::Unsigned(rng.operand() as u32 & 0xffff),
            K::imm32 => Operand::Unsigned(rng.operand() as u32),
            K::imm32sex64 => Operand::Signed(rng.operand() as i32),
            _ => return None,
        };
        operands.push(operand);
    }
    // Registers whose value the form gives meaning to.
    if uses_cl_count(&operands) {
        register_values.push((RCX, shift_count(rng)));
    }
    if let Some(target) = memory_target {
        let current = peek(&data, read_only, target, size.min(8));
        match mnemonic {
            Mnemonic::Cmpxchg if rng.chance(1, 2) => register_values.push((0, current)),
            Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b if rng.chance(1, 2) => {
                let high = peek(&data, read_only, target + size / 2, size / 2);
                register_values.push((0, current));
                register_values.push((RDX, high));
            }
            Mnemonic::Div | Mnemonic::Idiv => {
                if rng.chance(1, 10) {
                    poke(&mut data, target, size, 0);
                } else if rng.chance(3, 4) {
                    let high = if mnemonic == Mnemonic::Idiv && input.gprs[0] >> 63 != 0 {
                        u64::MAX
                    } else {
                        0
                    };
                    register_values.push((RDX, high));
                }
            }
            _ => {}
        }
        if rng.chance(1, 3) {
            poke(&mut data, target, size, rng.operand());
        }
    }
    if matches!(
        code,
        Code::Movdir64b_r64_m512 | Code::Movdir64b_r32_m512 | Code::Movdir64b_r16_m512
    ) && let Some(Operand::Register(register)) = operands.first()
    {
        let mut destination = DATA_BASE + (rng.below(WRITABLE_BYTES - 64) & !63);
        if rng.chance(1, 10) {
            destination += rng.below(64);
        }
        let index = gpr_index(*register)?;
        // The destination register must not also address the source: its
        // value would then be an arbitrary address outside the sandbox.
        if reserved.contains(&index) {
            return None;
        }
        register_values.push((index, offset_of(destination, default_base(mode), bits)));
    }
    if bit_offset_form && let Some(Operand::Register(register)) = operands.get(1) {
        let offset = (rng.below(0x4000) as i64 - 0x2000) as u64;
        let index = gpr_index(*register)?;
        // Likewise for the bit offset: as an address register it would send
        // the access far outside the sandbox.
        if reserved.contains(&index) && rng.chance(7, 8) {
            return None;
        }
        register_values.push((index, offset));
    }
    for (register, value) in register_values {
        if !reserved.contains(&register) {
            input.gprs[register] = value;
        }
    }
    let mut instruction = build(code, &operands)?;
    if op_code.can_use_lock_prefix() && mnemonic != Mnemonic::Xchg && rng.chance(1, 2) {
        instruction.set_has_lock_prefix(true);
    }
    let bytes = with_redundant_prefixes(rng, encode(&instruction, bits)?, bits);
    check_address(&bytes, &input.gprs, memory_target, mode)?;
    Some(Case {
        form,
        mode,
        instruction,
        bytes,
        input,
        data,
    })
}

fn is_shift(mnemonic: Mnemonic) -> bool {
    matches!(
        mnemonic,
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shld
            | Mnemonic::Shrd
    )
}

fn uses_cl_count(operands: &[Operand]) -> bool {
    operands
        .iter()
        .any(|operand| matches!(operand, Operand::Register(Register::CL)))
}

/// Decodes the encoded bytes again and checks that the memory operand
/// addresses `target` with these registers: the harness's own check that a
/// case tests what it claims to.
fn check_address(
    bytes: &[u8],
    gprs: &[u64; 16],
    target: Option<u64>,
    mode: NativeMode,
) -> Option<()> {
    let bits = bits(mode);
    let Some(target) = target else {
        return Some(());
    };
    let mut decoder =
        Decoder::with_ip(bits, bytes, instruction_pointer(mode), DecoderOptions::NONE);
    let decoded = decoder.decode();
    let operand =
        (0..decoded.op_count()).find(|operand| decoded.op_kind(*operand) == OpKind::Memory)?;
    let address = decoded.virtual_address(operand, 0, |register, _, _| {
        if register.is_segment_register() {
            let (fs, gs) = host_segment_bases();
            return Some(match register {
                Register::FS => fs,
                Register::GS => gs,
                Register::DS | Register::ES | Register::SS => default_base(mode),
                _ => 0,
            });
        }
        gpr_index(register).map(|index| {
            let value = gprs[index];
            match register.size() {
                4 => value & 0xffff_ffff,
                2 => value & 0xffff,
                _ => value,
            }
        })
    })?;
    // With a 32-bit address size the CPU truncates; so does `virtual_address`.
    (address == target || address == target & 0xffff_ffff).then_some(())
}
