//! Compares the host CPU's result with the emulator's: GPRs, RIP, RFLAGS
//! (without the flags the SDM leaves undefined for the instruction and its
//! count), vector registers, memory, and exceptions (vector, error code, CR2,
//! and the state at the fault).

use crate::cases::{Case, gpr_index};
use crate::emulated::Emulated;
use emulator_testkit::drive::Driven;
use emulator_testkit::native::{CODE_BASE, DATA_BASE, DATA_PAGES, NativeMode, NativeOutcome};
use emulator_testkit::state::rflags;
use iced_x86::{Mnemonic, OpKind, Register};
use std::fmt::Write;

/// RFLAGS bits compared: the status flags, DF, IF, AC and bit 1.
const COMPARED_FLAGS: u64 =
    rflags::STATUS | rflags::DF | rflags::IF | rflags::AC | rflags::FIXED | rflags::TF;

/// How one case came out.
#[derive(Clone, Debug)]
pub enum Verdict {
    Match,
    Mismatch(String),
    /// The emulator said it does not handle the instruction.
    Unsupported(String),
    /// The host CPU raised #UD: it lacks the instruction, nothing to compare.
    HostLacksInstruction,
    /// The SDM leaves the result itself undefined for these operands.
    UndefinedResult,
    /// Both page-faulted, identically except for the P bit, at an address
    /// outside the region the emulated guest mirrors (where the host may
    /// have a page of its own).
    OutsideMirror,
}

/// Whether the emulated guest maps `address` as the host does: the code
/// page and the data region (whose guard page is unmapped on both sides).
fn mirrored(address: u64) -> bool {
    (CODE_BASE..CODE_BASE + 0x1000).contains(&address)
        || (DATA_BASE..DATA_BASE + DATA_PAGES * 0x1000).contains(&address)
}

/// What the SDM leaves undefined for one case.
struct Undefined {
    flags: u64,
    /// GPRs whose value is undefined (bit n: GPR n).
    gprs: u16,
    /// The whole result is undefined (SHLD/SHRD with a count above the size).
    result: bool,
}

/// The shift or rotate count a case uses.
fn count(case: &Case) -> Option<u64> {
    let instruction = &case.instruction;
    let last = instruction.op_count().checked_sub(1)?;
    match instruction.op_kind(last) {
        OpKind::Immediate8 => Some(u64::from(instruction.immediate8())),
        OpKind::Register if instruction.op_register(last) == Register::CL => {
            Some(case.input.gprs[1] & 0xff)
        }
        _ => None,
    }
}

fn undefined(case: &Case, native_zf: bool) -> Undefined {
    use rflags::*;
    let mnemonic = case.instruction.mnemonic();
    let width = case.instruction.memory_size().size() as u64 * 8;
    let mut result = Undefined {
        flags: 0,
        gprs: 0,
        result: false,
    };
    let masked_count = || count(case).map(|count| count & if width == 64 { 0x3f } else { 0x1f });
    match mnemonic {
        Mnemonic::Mul | Mnemonic::Imul => result.flags = SF | ZF | AF | PF,
        Mnemonic::Div | Mnemonic::Idiv => result.flags = STATUS,
        Mnemonic::And | Mnemonic::Or | Mnemonic::Xor | Mnemonic::Test => result.flags = AF,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
            result.flags = OF | SF | AF | PF
        }
        Mnemonic::Tzcnt | Mnemonic::Lzcnt => result.flags = OF | SF | PF | AF,
        Mnemonic::Bsf | Mnemonic::Bsr => {
            result.flags = CF | OF | SF | AF | PF;
            if native_zf {
                // Source zero: the destination is undefined.
                if let Some(index) = gpr_index(case.instruction.op0_register()) {
                    result.gprs |= 1 << index;
                }
            }
        }
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
            if let Some(count) = masked_count().filter(|count| *count != 0) {
                result.flags |= AF;
                if count != 1 {
                    result.flags |= OF;
                }
                if mnemonic != Mnemonic::Sar && count >= width {
                    result.flags |= CF;
                }
            }
        }
        Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr
            if masked_count().is_some_and(|count| count > 1) =>
        {
            result.flags |= OF;
        }
        Mnemonic::Shld | Mnemonic::Shrd => {
            if let Some(count) = masked_count().filter(|count| *count != 0) {
                result.flags |= AF;
                if count != 1 {
                    result.flags |= OF;
                }
                if count > width {
                    result.result = true;
                }
            }
        }
        _ => {}
    }
    result
}

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

fn describe_input(case: &Case) -> String {
    let mut text = format!(
        "{:?} ({:?} mode) `{}` bytes {:02x?}\n    in: rflags={:#x}",
        case.form.code, case.mode, case.instruction, case.bytes, case.input.rflags
    );
    for (name, value) in GPR_NAMES.iter().zip(case.input.gprs) {
        let _ = write!(text, " {name}={value:#x}");
    }
    text
}

/// Compares GPRs; outside 64-bit mode only the low 32 bits (the SDM leaves
/// the upper halves undefined there).
fn compare_gprs(
    out: &mut String,
    native: &[u64; 16],
    emulated: &[u64; 16],
    ignored: u16,
    mode: NativeMode,
) {
    let mask = match mode {
        NativeMode::Long => u64::MAX,
        NativeMode::Compatibility | NativeMode::Segmented { .. } => 0xffff_ffff,
    };
    for index in 0..16 {
        if ignored & (1 << index) == 0 && (native[index] ^ emulated[index]) & mask != 0 {
            let _ = write!(
                out,
                "\n    {}: cpu {:#x} emulator {:#x}",
                GPR_NAMES[index], native[index], emulated[index]
            );
        }
    }
}

fn compare_flags(out: &mut String, native: u64, emulated: u64, ignored: u64) {
    let differing = (native ^ emulated) & COMPARED_FLAGS & !ignored;
    if differing != 0 {
        let _ = write!(
            out,
            "\n    rflags: cpu {native:#x} emulator {emulated:#x} (differ {differing:#x}, undefined {ignored:#x})"
        );
    }
}

fn compare_memory(out: &mut String, native: &[u8], emulated: &Emulated) {
    let differing: Vec<usize> = (0..native.len())
        .filter(|offset| native[*offset] != emulated.data[*offset])
        .collect();
    if let (Some(first), Some(last)) = (differing.first(), differing.last()) {
        let _ = write!(
            out,
            "\n    memory: {} bytes differ in data+{first:#x}..={last:#x}; cpu {:02x?} emulator {:02x?}",
            differing.len(),
            &native[*first..(*first + 16).min(native.len())],
            &emulated.data[*first..(*first + 16).min(native.len())],
        );
    }
    if !emulated.read_only_intact {
        out.push_str("\n    emulator wrote to the read-only page");
    }
}

/// Judges one case.
pub fn evaluate(
    case: &Case,
    native: &NativeOutcome,
    native_data: &[u8],
    emulated: &Emulated,
) -> Verdict {
    if let NativeOutcome::Faulted(fault) = native
        && fault.vector == 6
    {
        return Verdict::HostLacksInstruction;
    }
    if let Driven::Unsupported(unsupported) = &emulated.driven {
        return Verdict::Unsupported(unsupported.what.to_string());
    }
    if let (NativeOutcome::Faulted(fault), Driven::Exception(exception)) =
        (native, &emulated.driven)
        && fault.vector == 14
        && exception.vector == 14
        && !mirrored(fault.address)
        && exception.cr2 == Some(fault.address)
        && exception.error_code.map(|code| code & !1) == Some(fault.error_code as u32 & !1)
        && exception.error_code != Some(fault.error_code as u32)
    {
        // A page fault outside the mirrored region: whether the host had a
        // page there (P) says nothing about the emulator.
        return Verdict::OutsideMirror;
    }
    let mut differences = String::new();
    let state = &emulated.exit.state;
    match (native, &emulated.driven) {
        (NativeOutcome::Completed(cpu), Driven::Completed) => {
            let masks = undefined(case, cpu.rflags & rflags::ZF != 0);
            if masks.result {
                return Verdict::UndefinedResult;
            }
            compare_gprs(
                &mut differences,
                &cpu.gprs,
                &state.gprs,
                masks.gprs,
                case.mode,
            );
            let rip = crate::cases::instruction_pointer(case.mode) + case.bytes.len() as u64;
            if state.rip != rip {
                let _ = write!(
                    differences,
                    "\n    rip: cpu {rip:#x} emulator {:#x}",
                    state.rip
                );
            }
            compare_flags(&mut differences, cpu.rflags, state.rflags, masks.flags);
            for (index, (cpu_ymm, emulated_ymm)) in cpu
                .ymm
                .iter()
                .zip(emulated.exit.vectors.ymm.iter())
                .enumerate()
            {
                if cpu_ymm != emulated_ymm {
                    let _ = write!(
                        differences,
                        "\n    ymm{index}: cpu {cpu_ymm:02x?} emulator {emulated_ymm:02x?}"
                    );
                }
            }
            compare_memory(&mut differences, native_data, emulated);
            let locked = case.instruction.has_lock_prefix()
                || (case.instruction.mnemonic() == Mnemonic::Xchg
                    && case.instruction.op0_kind() == OpKind::Memory);
            if locked && emulated.plain_writes != 0 {
                let _ = write!(
                    differences,
                    "\n    a locked instruction wrote with {} plain writes instead of compare-exchange",
                    emulated.plain_writes
                );
            }
        }
        (NativeOutcome::Faulted(fault), Driven::Exception(exception)) => {
            if exception.vector != fault.vector {
                let _ = write!(
                    differences,
                    "\n    exception: cpu vector {} (error {:#x}, address {:#x}) emulator {exception:?}",
                    fault.vector, fault.error_code, fault.address
                );
            } else {
                let has_error_code = matches!(fault.vector, 8 | 10..=14 | 17);
                let expected_code = has_error_code.then_some(fault.error_code as u32);
                if exception.error_code != expected_code {
                    let _ = write!(
                        differences,
                        "\n    error code: cpu {expected_code:x?} emulator {:x?}",
                        exception.error_code
                    );
                }
                let expected_cr2 = (fault.vector == 14).then_some(fault.address);
                if exception.cr2 != expected_cr2 {
                    let _ = write!(
                        differences,
                        "\n    cr2: cpu {expected_cr2:x?} emulator {:x?}",
                        exception.cr2
                    );
                }
            }
            // At the fault: registers as they were, except the progress a
            // REP instruction made before it; RF is the CPU's own marker.
            // After a REP CMPS/SCAS made progress, the host CPU reports the
            // status flags it started with, not those of the last completed
            // iteration (the SDM does not say which); the next execution
            // recomputes them, so they are not compared.
            let mut ignored_flags = 1 << 16;
            let repeated_compare = matches!(
                case.instruction.mnemonic(),
                Mnemonic::Cmpsb
                    | Mnemonic::Cmpsw
                    | Mnemonic::Cmpsd
                    | Mnemonic::Cmpsq
                    | Mnemonic::Scasb
                    | Mnemonic::Scasw
                    | Mnemonic::Scasd
                    | Mnemonic::Scasq
            );
            if repeated_compare && fault.gprs[1] != case.input.gprs[1] {
                ignored_flags |= rflags::STATUS;
            }
            compare_gprs(&mut differences, &fault.gprs, &state.gprs, 0, case.mode);
            compare_flags(&mut differences, fault.rflags, state.rflags, ignored_flags);
            compare_memory(&mut differences, native_data, emulated);
        }
        (cpu, emulator) => {
            let cpu = match cpu {
                NativeOutcome::Completed(_) => "completed".to_string(),
                NativeOutcome::Faulted(fault) => format!(
                    "vector {} error {:#x} address {:#x}",
                    fault.vector, fault.error_code, fault.address
                ),
            };
            let _ = write!(differences, "\n    cpu: {cpu}\n    emulator: {emulator:x?}");
        }
    }
    if differences.is_empty() {
        Verdict::Match
    } else {
        Verdict::Mismatch(format!("{}{differences}", describe_input(case)))
    }
}
