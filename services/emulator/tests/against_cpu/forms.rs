//! The instruction forms the emulator must support in 64-bit mode (the list in
//! the emulator's issue), as iced-x86 `Code` values, and how each form's
//! operands are shaped.

use iced_x86::{Code, CpuidFeature, EncodingKind, FlowControl, Mnemonic, OpCodeOperandKind as K};

/// The mnemonics of the instruction list, excluding the string
/// instructions (listed by form in [`STRING_CODES`], because MOVSD and CMPSD
/// also name SSE instructions).
const REQUIRED_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Mov,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Movsxd,
    Mnemonic::Movbe,
    Mnemonic::Movnti,
    Mnemonic::Movdiri,
    Mnemonic::Movdir64b,
    Mnemonic::Xchg,
    Mnemonic::Cmovo,
    Mnemonic::Cmovno,
    Mnemonic::Cmovb,
    Mnemonic::Cmovae,
    Mnemonic::Cmove,
    Mnemonic::Cmovne,
    Mnemonic::Cmovbe,
    Mnemonic::Cmova,
    Mnemonic::Cmovs,
    Mnemonic::Cmovns,
    Mnemonic::Cmovp,
    Mnemonic::Cmovnp,
    Mnemonic::Cmovl,
    Mnemonic::Cmovge,
    Mnemonic::Cmovle,
    Mnemonic::Cmovg,
    Mnemonic::Seto,
    Mnemonic::Setno,
    Mnemonic::Setb,
    Mnemonic::Setae,
    Mnemonic::Sete,
    Mnemonic::Setne,
    Mnemonic::Setbe,
    Mnemonic::Seta,
    Mnemonic::Sets,
    Mnemonic::Setns,
    Mnemonic::Setp,
    Mnemonic::Setnp,
    Mnemonic::Setl,
    Mnemonic::Setge,
    Mnemonic::Setle,
    Mnemonic::Setg,
    Mnemonic::Push,
    Mnemonic::Pop,
    Mnemonic::Add,
    Mnemonic::Adc,
    Mnemonic::Sub,
    Mnemonic::Sbb,
    Mnemonic::Cmp,
    Mnemonic::And,
    Mnemonic::Or,
    Mnemonic::Xor,
    Mnemonic::Test,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Neg,
    Mnemonic::Not,
    Mnemonic::Xadd,
    Mnemonic::Cmpxchg,
    Mnemonic::Cmpxchg8b,
    Mnemonic::Cmpxchg16b,
    Mnemonic::Mul,
    Mnemonic::Imul,
    Mnemonic::Div,
    Mnemonic::Idiv,
    Mnemonic::Bt,
    Mnemonic::Bts,
    Mnemonic::Btr,
    Mnemonic::Btc,
    Mnemonic::Bsf,
    Mnemonic::Bsr,
    Mnemonic::Tzcnt,
    Mnemonic::Lzcnt,
    Mnemonic::Popcnt,
    Mnemonic::Shl,
    Mnemonic::Sal,
    Mnemonic::Shr,
    Mnemonic::Sar,
    Mnemonic::Rol,
    Mnemonic::Ror,
    Mnemonic::Rcl,
    Mnemonic::Rcr,
    Mnemonic::Shld,
    Mnemonic::Shrd,
    Mnemonic::Movd,
    Mnemonic::Movq,
    Mnemonic::Movdqa,
    Mnemonic::Movdqu,
    Mnemonic::Movaps,
    Mnemonic::Movups,
    Mnemonic::Movapd,
    Mnemonic::Movupd,
    Mnemonic::Movntdq,
    Mnemonic::Movntps,
    Mnemonic::Movntpd,
    Mnemonic::Vmovdqa,
    Mnemonic::Vmovdqu,
    Mnemonic::Vmovaps,
    Mnemonic::Vmovups,
    Mnemonic::Clflush,
    Mnemonic::Clflushopt,
    Mnemonic::Prefetchnta,
    Mnemonic::Prefetcht0,
    Mnemonic::Prefetcht1,
    Mnemonic::Prefetcht2,
    Mnemonic::Prefetchw,
];

/// MOVS, STOS, LODS, CMPS and SCAS in every operand size.
pub const STRING_CODES: &[Code] = &[
    Code::Movsb_m8_m8,
    Code::Movsw_m16_m16,
    Code::Movsd_m32_m32,
    Code::Movsq_m64_m64,
    Code::Stosb_m8_AL,
    Code::Stosw_m16_AX,
    Code::Stosd_m32_EAX,
    Code::Stosq_m64_RAX,
    Code::Lodsb_AL_m8,
    Code::Lodsw_AX_m16,
    Code::Lodsd_EAX_m32,
    Code::Lodsq_RAX_m64,
    Code::Cmpsb_m8_m8,
    Code::Cmpsw_m16_m16,
    Code::Cmpsd_m32_m32,
    Code::Cmpsq_m64_m64,
    Code::Scasb_AL_m8,
    Code::Scasw_AX_m16,
    Code::Scasd_EAX_m32,
    Code::Scasq_RAX_m64,
];

/// How a form touches memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An explicit memory operand (ModRM or moffs).
    Memory,
    /// PUSH/POP without a memory operand: only the stack is in memory.
    Stack,
    /// A string instruction: [RSI] and/or [RDI].
    String,
}

/// One required instruction form.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub code: Code,
    pub shape: Shape,
}

/// Operand kinds the harness cannot give the host CPU or the emulator
/// (MMX, MPX, mask, tile, ZMM, control/debug registers, x87, VSIB).
fn unusable_kind(kind: K) -> bool {
    matches!(
        kind,
        K::mm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::mem_mpx
            | K::mem_mib
            | K::r32_or_mem_mpx
            | K::r64_or_mem_mpx
            | K::bnd_or_mem_mpx
            | K::bnd_reg
            | K::k_or_mem
            | K::k_reg
            | K::kp1_reg
            | K::k_rm
            | K::k_vvvv
            | K::zmm_or_mem
            | K::zmm_reg
            | K::zmm_rm
            | K::zmm_vvvv
            | K::zmmp3_vvvv
            | K::cr_reg
            | K::dr_reg
            | K::tr_reg
            | K::st0
            | K::sti_opcode
            | K::mem_vsib32x
            | K::mem_vsib64x
            | K::mem_vsib32y
            | K::mem_vsib64y
            | K::mem_vsib32z
            | K::mem_vsib64z
            | K::sibmem
            | K::tmm_reg
            | K::tmm_rm
            | K::tmm_vvvv
            | K::farbr2_2
            | K::farbr4_2
    )
}

fn memory_kind(kind: K) -> bool {
    matches!(
        kind,
        K::mem
            | K::mem_offs
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
    )
}

fn segment_register_kind(kind: K) -> bool {
    matches!(kind, K::es | K::cs | K::ss | K::ds | K::fs | K::gs)
}

/// Every required 64-bit-mode form, in `Code` order.
pub fn required_forms() -> Vec<Form> {
    let mut forms = Vec::new();
    for code in Code::values() {
        let op_code = code.op_code();
        if !op_code.is_instruction() || !op_code.mode64() || op_code.decoder_option() != 0 {
            continue;
        }
        let kinds = op_code.op_kinds();
        if kinds.iter().any(|kind| unusable_kind(*kind)) {
            continue;
        }
        if STRING_CODES.contains(&code) {
            forms.push(Form {
                code,
                shape: Shape::String,
            });
            continue;
        }
        let mnemonic = code.mnemonic();
        if !REQUIRED_MNEMONICS.contains(&mnemonic) {
            continue;
        }
        match op_code.encoding() {
            EncodingKind::Legacy => {}
            EncodingKind::VEX => {}
            _ => continue,
        }
        // Loading a segment register (MOV Sreg, POP Sreg) is compared by
        // `segment_loads.rs` with selectors whose descriptors the sandbox
        // controls (random ones could load FS natively, where the test
        // thread's TLS lives); PUSH FS/GS stores a selector, as MOV m16,
        // Sreg does.
        let loads_segment = kinds.first().is_some_and(|kind| *kind == K::seg_reg)
            || (mnemonic == Mnemonic::Pop && kinds.iter().any(|kind| segment_register_kind(*kind)));
        if loads_segment {
            continue;
        }
        if kinds.iter().any(|kind| memory_kind(*kind)) {
            forms.push(Form {
                code,
                shape: Shape::Memory,
            });
        } else if matches!(mnemonic, Mnemonic::Push | Mnemonic::Pop)
            && !kinds.iter().any(|kind| segment_register_kind(*kind))
        {
            forms.push(Form {
                code,
                shape: Shape::Stack,
            });
        }
    }
    forms
}

/// Mnemonics of instructions the sandbox must not run natively, or whose
/// result depends on host state the guest does not share: segment and
/// descriptor-table loads and stores, state restores that would change the
/// host thread's FPU/SSE control state, and PKRU/MXCSR writes.
const HOST_UNSAFE_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Lfs,
    Mnemonic::Lgs,
    Mnemonic::Lss,
    Mnemonic::Lds,
    Mnemonic::Les,
    Mnemonic::Ldmxcsr,
    Mnemonic::Vldmxcsr,
    Mnemonic::Stmxcsr,
    Mnemonic::Vstmxcsr,
    Mnemonic::Sgdt,
    Mnemonic::Sidt,
    Mnemonic::Sldt,
    Mnemonic::Str,
    Mnemonic::Smsw,
    Mnemonic::Lar,
    Mnemonic::Lsl,
    Mnemonic::Verr,
    Mnemonic::Verw,
    Mnemonic::Lgdt,
    Mnemonic::Lidt,
    Mnemonic::Lldt,
    Mnemonic::Ltr,
    Mnemonic::Lmsw,
    Mnemonic::Rstorssp,
    Mnemonic::Wrssd,
    Mnemonic::Wrssq,
    Mnemonic::Wrussd,
    Mnemonic::Wrussq,
    Mnemonic::Umonitor,
];

/// Every other 64-bit-mode form with a memory operand that the host can run
/// safely in the sandbox: the emulator may call them unsupported, but if it
/// emulates one, it must agree with the CPU.
pub fn optional_forms() -> Vec<Form> {
    let required: Vec<Code> = required_forms().iter().map(|form| form.code).collect();
    let mut forms = Vec::new();
    for code in Code::values() {
        let op_code = code.op_code();
        if !op_code.is_instruction()
            || !op_code.mode64()
            || op_code.decoder_option() != 0
            || required.contains(&code)
            || !matches!(op_code.encoding(), EncodingKind::Legacy | EncodingKind::VEX)
            || code.flow_control() != FlowControl::Next
            || !op_code.cpl3()
            || op_code.is_privileged()
            || op_code.is_save_restore()
            || op_code.is_input_output()
            || HOST_UNSAFE_MNEMONICS.contains(&code.mnemonic())
            || code.cpuid_features().iter().any(|feature| {
                matches!(
                    feature,
                    CpuidFeature::FPU
                        | CpuidFeature::FPU287
                        | CpuidFeature::FPU387
                        | CpuidFeature::MMX
                        | CpuidFeature::CET_SS
                )
            })
        {
            continue;
        }
        let kinds = op_code.op_kinds();
        if kinds
            .iter()
            .any(|kind| unusable_kind(*kind) || segment_register_kind(*kind) || *kind == K::seg_reg)
            || !kinds.iter().any(|kind| memory_kind(*kind))
        {
            continue;
        }
        forms.push(Form {
            code,
            shape: Shape::Memory,
        });
    }
    forms
}

/// The required forms that exist outside 64-bit mode, for compatibility
/// mode (32-bit code segment). MOVDIR64B with a 16-bit address register is
/// left out: 16-bit addresses cannot reach the sandbox's data region.
pub fn compatibility_mode_forms() -> Vec<Form> {
    required_forms()
        .into_iter()
        .filter(|form| form.code.op_code().mode32() && form.code != Code::Movdir64b_r16_m512)
        .collect()
}

/// The required forms that exist in 16-bit code (a 16-bit code segment).
pub fn sixteen_bit_forms() -> Vec<Form> {
    required_forms()
        .into_iter()
        .filter(|form| form.code.op_code().mode16())
        .collect()
}
