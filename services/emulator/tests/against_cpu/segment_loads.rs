//! Segment-register loads against the real CPU: MOV DS/ES/SS, POP DS/ES/SS,
//! LDS/LES/LSS in compatibility mode and 16-bit code (flat and with LDT
//! segments), and MOV DS/ES/SS and LSS in 64-bit mode, with selectors that
//! name the sandbox's own LDT entries (installed with known contents and
//! mirrored into the emulated guest's LDT), Linux's GDT entries (mirrored),
//! null selectors and selectors beyond either table's limit. Compared:
//! what `expect::evaluate` compares (registers, flags, memory, exception,
//! error code), the selectors left in ES, SS and DS, and for each loaded
//! non-null selector the emulator's access rights and limit against the
//! CPU's LAR and LSL for it. FS and GS are never loaded natively (FS holds
//! the test thread's TLS); the sandbox restores DS, ES and SS.

use crate::cases::{Case, bits, instruction_pointer};
use crate::emulated::EmulatedSide;
use crate::expect::{self, Verdict};
use crate::forms::{Form, Shape};
use crate::{Report, long_run, random_segments, seed};
use abi::{Segment, SegmentRegister};
use emulator_testkit::Rng;
use emulator_testkit::drive::Driven;
use emulator_testkit::native::{
    DATA_BASE, DataSegment, NativeMode, NativeOutcome, NativeState, WRITABLE_PAGES,
    install_ldt_descriptor, install_ldt_entry, with_sandbox,
};
use iced_x86::{Decoder, DecoderOptions};

/// `struct user_desc` flag bits (see `install_ldt_descriptor`).
const SEG_32BIT: u32 = 1 << 0;
const CONTENTS_EXPAND_DOWN: u32 = 1 << 1;
const CONTENTS_CODE: u32 = 2 << 1;
const READ_EXEC_ONLY: u32 = 1 << 3;
const SEG_NOT_PRESENT: u32 = 1 << 5;
const USEABLE: u32 = 1 << 6;

/// LDT entries 2-5 this test installs (2 is the sandbox's 16-bit code
/// segment, installed the same way): (entry, base, limit, flags).
const FIXED_LDT_ENTRIES: [(u32, u32, u32, u32); 4] = [
    (
        2,
        emulator_testkit::native::CODE_BASE as u32,
        0xffff,
        CONTENTS_CODE,
    ),
    // Not-present read/write data.
    (3, 0x1000, 0xffff, SEG_32BIT | SEG_NOT_PRESENT),
    // Execute-only code.
    (4, 0, 0xf_ffff, SEG_32BIT | CONTENTS_CODE | READ_EXEC_ONLY),
    // Expand-down read-only 16-bit data with AVL set.
    (
        5,
        DATA_BASE as u32,
        0x0fff,
        CONTENTS_EXPAND_DOWN | READ_EXEC_ONLY | USEABLE,
    ),
];
const LDT_ENTRIES: usize = 6;

/// The descriptor Linux's `fill_ldt` builds from a `user_desc`: DPL 3,
/// accessed, S = 1.
fn linux_ldt_descriptor(base: u32, limit: u32, flags: u32) -> u64 {
    let bit = |n: u32| u64::from(flags >> n & 1);
    let contents = u64::from(flags >> 1 & 3);
    let kind = (bit(3) ^ 1) << 1 | contents << 2 | 1;
    let access = kind | 1 << 4 | 3 << 5 | (bit(5) ^ 1) << 7;
    u64::from(limit & 0xffff)
        | u64::from(base & 0xff_ffff) << 16
        | access << 40
        | u64::from(limit >> 16 & 0xf) << 48
        | bit(6) << 52
        | bit(0) << 54
        | bit(4) << 55
        | u64::from(base >> 24) << 56
}

/// The `user_desc` flags of a sandbox data segment.
fn data_segment_flags(segment: &DataSegment) -> u32 {
    u32::from(segment.big)
        | u32::from(segment.expand_down) << 1
        | u32::from(!segment.writable) << 3
        | u32::from(segment.page_granular) << 4
}

/// Linux's 64-bit GDT entries 1-6 (the kernel's and the user code and data
/// segments, accessed), the TSS (8) and LDT (10) system descriptors as
/// their types; the TLS entries (12-14) are empty in a 64-bit process.
/// Entry 15 (per-CPU data, whose limit is the CPU number) is not mirrored
/// and never loaded.
fn linux_gdt() -> [u64; 16] {
    let flat = |access: u64, flags: u64| 0xffff | access << 40 | 0xf << 48 | flags << 52;
    let mut gdt = [0; 16];
    gdt[1] = flat(0x9b, 0xc); // kernel 32-bit code
    gdt[2] = flat(0x9b, 0xa); // kernel 64-bit code
    gdt[3] = flat(0x93, 0xc); // kernel data
    gdt[4] = flat(0xfb, 0xc); // user 32-bit code (0x23)
    gdt[5] = flat(0xf3, 0xc); // user data (0x2b)
    gdt[6] = flat(0xfb, 0xa); // user 64-bit code (0x33)
    gdt[8] = 0x67 | 0x89 << 40; // TSS
    gdt[10] = 0x8b << 40 | 0xfff; // LDT (its type is what matters)
    gdt
}

/// Selectors a case loads: null, LDT and GDT entries, RPL variants, and
/// both tables' limits.
const SELECTORS: &[u16] = &[
    0x00, 0x01, 0x02, 0x03, // null
    0x07, 0x04, 0x0f, 0x0d, 0x17, 0x1f, 0x27, 0x2f, // LDT 0-5
    0x37, 0xfffc, // beyond the LDT
    0x2b, 0x28, 0x23, 0x33, 0x08, 0x10, 0x18, 0x40, 0x50, 0x63, // GDT
    0x80, 0xfff8, // beyond the GDT
];

/// The instructions of one code size: MOV from memory and register, POP,
/// and far-pointer loads of every operand size. The memory operand is
/// [rbx]/[ebx]/[bx].
fn instructions(bits: u32) -> &'static [&'static [u8]] {
    match bits {
        64 => &[
            &[0x8e, 0x1b],             // mov ds, [rbx]
            &[0x8e, 0x03],             // mov es, [rbx]
            &[0x8e, 0x13],             // mov ss, [rbx]
            &[0x48, 0x8e, 0x1b],       // mov ds, [rbx] (REX.W)
            &[0x8e, 0xd8],             // mov ds, eax
            &[0x8e, 0xd0],             // mov ss, eax
            &[0x0f, 0xb2, 0x03],       // lss eax, [rbx]
            &[0x66, 0x0f, 0xb2, 0x03], // lss ax, [rbx]
            &[0x48, 0x0f, 0xb2, 0x03], // lss rax, [rbx]
        ],
        32 => &[
            &[0x8e, 0x1b],             // mov ds, [ebx]
            &[0x8e, 0x03],             // mov es, [ebx]
            &[0x8e, 0x13],             // mov ss, [ebx]
            &[0x8e, 0xd8],             // mov ds, eax
            &[0x1f],                   // pop ds
            &[0x07],                   // pop es
            &[0x17],                   // pop ss
            &[0x66, 0x1f],             // pop ds (16-bit)
            &[0x66, 0x17],             // pop ss (16-bit)
            &[0xc5, 0x03],             // lds eax, [ebx]
            &[0xc4, 0x03],             // les eax, [ebx]
            &[0x66, 0xc5, 0x03],       // lds ax, [ebx]
            &[0x0f, 0xb2, 0x03],       // lss eax, [ebx]
            &[0x66, 0x0f, 0xb2, 0x03], // lss ax, [ebx]
        ],
        _ => &[
            &[0x8e, 0x1f],             // mov ds, [bx]
            &[0x8e, 0x07],             // mov es, [bx]
            &[0x8e, 0x17],             // mov ss, [bx]
            &[0x1f],                   // pop ds
            &[0x17],                   // pop ss
            &[0x66, 0x07],             // pop es (32-bit)
            &[0xc5, 0x07],             // lds ax, [bx]
            &[0xc4, 0x07],             // les ax, [bx]
            &[0x66, 0xc5, 0x07],       // lds eax, [bx]
            &[0x0f, 0xb2, 0x07],       // lss ax, [bx]
            &[0x66, 0x0f, 0xb2, 0x07], // lss eax, [bx]
        ],
    }
}

/// LAR and LSL of `selector` on the host: (access rights as in VMX form,
/// limit), or `None` when LAR refuses it.
fn host_lar_lsl(selector: u16) -> Option<(u32, u32)> {
    let (rights, limit, lar_ok, lsl_ok): (u32, u32, u8, u8);
    // SAFETY: LAR and LSL only read the descriptor tables and set ZF; they
    // fault on nothing at CPL 3 (a bad selector clears ZF).
    unsafe {
        core::arch::asm!(
            "lar {rights:e}, {selector:e}",
            "setz {lar_ok}",
            "lsl {limit:e}, {selector:e}",
            "setz {lsl_ok}",
            selector = in(reg) u32::from(selector),
            rights = out(reg) rights,
            limit = out(reg) limit,
            lar_ok = out(reg_byte) lar_ok,
            lsl_ok = out(reg_byte) lsl_ok,
            options(nomem, nostack),
        )
    };
    (lar_ok == 1 && lsl_ok == 1).then_some(((rights >> 8) & 0xf0ff, limit))
}

/// The emulated side's LDT: entries 0 and 1 as installed for this case,
/// then the fixed ones.
fn ldt_mirror(data: &DataSegment, stack: &DataSegment) -> [u64; LDT_ENTRIES] {
    let mut ldt = [0; LDT_ENTRIES];
    for (entry, segment) in [data, stack].into_iter().enumerate() {
        ldt[entry] = linux_ldt_descriptor(segment.base, segment.limit, data_segment_flags(segment));
    }
    for (entry, base, limit, flags) in FIXED_LDT_ENTRIES {
        ldt[entry as usize] = linux_ldt_descriptor(base, limit, flags);
    }
    ldt
}

/// Checks the mirrors against the host: LAR/LSL of every LDT entry and of
/// Linux's user GDT entries must match the mirrored descriptors.
fn check_mirrors(ldt: &[u64], gdt: &[u64; 16]) -> Result<(), String> {
    let expected = |descriptor: u64| {
        let rights = (descriptor >> 40) as u32 & 0xf0ff;
        let raw_limit = (descriptor & 0xffff) as u32 | ((descriptor >> 32) as u32 & 0xf_0000);
        let limit = if rights & 0x8000 != 0 {
            raw_limit << 12 | 0xfff
        } else {
            raw_limit
        };
        (rights, limit)
    };
    let ldt_selectors = (0..ldt.len()).map(|entry| (entry as u16) << 3 | 7);
    let gdt_selectors = [0x23u16, 0x2b, 0x33].into_iter();
    for selector in ldt_selectors.chain(gdt_selectors) {
        let descriptor = if selector & 4 != 0 {
            ldt[usize::from(selector >> 3)]
        } else {
            gdt[usize::from(selector >> 3)]
        };
        let host = host_lar_lsl(selector);
        if host != Some(expected(descriptor)) {
            return Err(format!(
                "mirror of selector {selector:#x}: host LAR/LSL {host:x?}, mirror {:x?}",
                expected(descriptor)
            ));
        }
    }
    Ok(())
}

/// A mode with code of `bits` bits (64: 64-bit mode; 32: flat
/// compatibility mode or LDT segments; 16: LDT segments), and the LDT
/// entries 0 and 1 (data and stack) the case installs.
fn pick_mode(rng: &mut Rng, bits: u32) -> (NativeMode, DataSegment, DataSegment) {
    let segmented = random_segments(rng, bits == 16);
    let NativeMode::Segmented { data, stack, .. } = segmented else {
        unreachable!("random_segments gives LDT segments");
    };
    let mode = match bits {
        64 => NativeMode::Long,
        32 if rng.chance(1, 3) => NativeMode::Compatibility,
        _ => segmented,
    };
    (mode, data, stack)
}

/// Builds one case: the instruction, GPRs with RBX and RSP at the operand
/// (an offset in DS and SS), the selector (and offset) in memory there,
/// and a random selector in RAX for the register forms.
fn generate(rng: &mut Rng, mode: NativeMode, bytes: &[u8]) -> Case {
    let bits = bits(mode);
    let mut decoder =
        Decoder::with_ip(bits, bytes, instruction_pointer(mode), DecoderOptions::NONE);
    let instruction = decoder.decode();
    assert!(!instruction.is_invalid(), "{bytes:02x?}");
    let mut data = vec![0u8; (WRITABLE_PAGES * 0x1000) as usize];
    rng.fill(&mut data);
    // The operand: anywhere in the writable pages, at their end (running
    // into the read-only page), or at the guard page's edge.
    let base = match mode {
        NativeMode::Segmented { data, .. } => u64::from(data.base),
        _ => 0,
    };
    // At a segment's limit (DS's, or SS's for POP; they share the base).
    let at_limit = match mode {
        NativeMode::Segmented { data, stack, .. } => {
            let segment = if instruction.mnemonic() == iced_x86::Mnemonic::Pop {
                stack
            } else {
                data
            };
            let last = (base + u64::from(segment.byte_limit())).wrapping_sub(rng.below(12));
            last.checked_sub(DATA_BASE)
                .filter(|offset| *offset < 0x1ff0)
        }
        _ => None,
    };
    let operand = match (rng.below(8), at_limit) {
        (0, _) => 0x2000 - rng.below(12),
        (1, _) => 0x3000 - rng.below(12),
        (2 | 3, Some(offset)) => offset,
        _ => rng.below(0x1ff0) & !rng.pick(&[0u64, 1, 3, 7]),
    };
    let selector = rng.pick(SELECTORS);
    let pointer_offset: u64 = rng.next_u64();
    // The selector follows an offset of the operand size for LxS; POP and
    // MOV read it first.
    let offset_size = match instruction.mnemonic() {
        iced_x86::Mnemonic::Mov | iced_x86::Mnemonic::Pop => 0,
        _ => instruction.op0_register().size() as u64,
    };
    let mut put = |at: u64, value: &[u8]| {
        for (index, byte) in value.iter().enumerate() {
            if let Some(slot) = data.get_mut((at + index as u64) as usize) {
                *slot = *byte;
            }
        }
    };
    put(
        operand,
        &pointer_offset.to_le_bytes()[..offset_size as usize],
    );
    put(operand + offset_size, &selector.to_le_bytes());
    let mut gprs = [0u64; 16];
    for gpr in &mut gprs {
        *gpr = rng.next_u64();
    }
    let address = (DATA_BASE + operand).wrapping_sub(base);
    gprs[3] = address;
    gprs[4] = address;
    gprs[0] = (gprs[0] & !0xffff) | u64::from(rng.pick(SELECTORS));
    if bits != 64 {
        for gpr in &mut gprs {
            *gpr &= 0xffff_ffff;
        }
    }
    // Sometimes with RFLAGS.AC (Linux sets CR0.AM): alignment checks.
    let flags = rng.pick(&[0x202u64, 0x2d7, 0x246, 0x4_0202, 0x4_0ad7]);
    Case {
        mode,
        form: Form {
            code: instruction.code(),
            shape: Shape::Memory,
        },
        instruction,
        bytes: bytes.to_vec(),
        input: NativeState {
            gprs,
            rflags: flags,
            ymm: [[0; 32]; 16],
        },
        data,
    }
}

/// The selectors and hidden state after a completed load: ES, SS and DS
/// as the CPU left them against the emulator's, and the emulator's access
/// rights and limit of each loaded non-null selector against LAR/LSL.
fn compare_segments(native: [u16; 3], emulated: &abi::ExitMessage) -> String {
    let mut differences = String::new();
    let registers = [Segment::Es, Segment::Ss, Segment::Ds];
    for (register, cpu) in registers.into_iter().zip(native) {
        let loaded = &emulated.state.segments[register as usize];
        // An interrupt between the instruction and the sandbox's exit
        // returns through IRET, which replaces a data segment register
        // whose DPL is below the CPL by selector 0, and a null selector
        // loaded with RPL 3 has DPL 0 on Intel: seen once in 27,000 null
        // loads. Null with another RPL is the same register.
        let renulled = cpu == 0 && loaded.selector & !3 == 0;
        if loaded.selector != cpu && !renulled {
            differences.push_str(&format!(
                "\n    {register:?}: cpu selector {cpu:#x} emulator {:#x}",
                loaded.selector
            ));
            continue;
        }
        if loaded.unusable() {
            if cpu & !3 != 0 {
                differences.push_str(&format!(
                    "\n    {register:?}: emulator unusable for selector {cpu:#x}"
                ));
            }
            continue;
        }
        if let Some((rights, limit)) = host_lar_lsl(cpu)
            && (loaded.access_rights & 0xf0ff != rights || loaded.limit != limit)
        {
            differences.push_str(&format!(
                "\n    {register:?} {cpu:#x}: cpu LAR {rights:#x} LSL {limit:#x}, emulator rights {:#x} limit {:#x}",
                loaded.access_rights, loaded.limit
            ));
        }
    }
    differences
}

/// Whether the emulator left a null selector (made unusable) in ES, SS
/// or DS (for the report).
fn loaded_null(exit: &abi::ExitMessage) -> bool {
    [Segment::Es, Segment::Ss, Segment::Ds]
        .iter()
        .any(|register| {
            let segment = &exit.state.segments[*register as usize];
            segment.selector & !3 == 0 && segment.access_rights & SegmentRegister::AR_UNUSABLE != 0
        })
}

#[test]
fn segment_register_loads_match_the_host_cpu() {
    let per_instruction = if long_run() { 3000 } else { 150 };
    let gdt = linux_gdt();
    let failures = with_sandbox(|sandbox| {
        for (entry, base, limit, flags) in FIXED_LDT_ENTRIES {
            install_ldt_descriptor(entry, base, limit, flags);
        }
        let read_only = sandbox.read_only_contents().to_vec();
        let mut emulated = EmulatedSide::new(&read_only);
        let mut report = Report::default();
        let mut rng = Rng::new(seed() ^ 0x5e6_10ad);
        let mut null_loads = 0;
        for bits in [64, 32, 16] {
            for bytes in instructions(bits) {
                for _ in 0..per_instruction {
                    let (mode, data, stack) = pick_mode(&mut rng, bits);
                    // The sandbox installs entries 0 and 1 itself for LDT
                    // modes; the others get them here, so that the LDT is
                    // known in every mode.
                    if !matches!(mode, NativeMode::Segmented { .. }) {
                        install_ldt_entry(0, data);
                        install_ldt_entry(1, stack);
                    }
                    let ldt = ldt_mirror(&data, &stack);
                    emulated.set_descriptor_tables(&gdt, &ldt);
                    let case = generate(&mut rng, mode, bytes);
                    sandbox.set_writable_data(&case.data);
                    let native = sandbox.run_in(mode, &case.bytes, &case.input);
                    let native_data = sandbox.writable_data();
                    let selectors = sandbox.data_selectors();
                    // The mirror must hold what the host's LDT holds now
                    // (after the sandbox installed this case's entries).
                    if let Err(error) = check_mirrors(&ldt, &gdt) {
                        return vec![error];
                    }
                    let result = emulated.run(&case);
                    let mut verdict = expect::evaluate(&case, &native, &native_data, &result);
                    if let (Verdict::Match, NativeOutcome::Completed(_), Driven::Completed) =
                        (&verdict, &native, &result.driven)
                    {
                        let differences = compare_segments(selectors, &result.exit);
                        if loaded_null(&result.exit) {
                            null_loads += 1;
                        }
                        if !differences.is_empty() {
                            verdict = Verdict::Mismatch(format!(
                                "{:?} ({:?} mode) `{}`{differences}",
                                case.form.code, case.mode, case.instruction
                            ));
                        }
                    }
                    let ending = match &native {
                        NativeOutcome::Completed(_) => "completed",
                        NativeOutcome::Faulted(fault) => match fault.vector {
                            11 => "#NP",
                            12 => "#SS",
                            13 => "#GP",
                            14 => "#PF",
                            17 => "#AC",
                            _ => "other",
                        },
                    };
                    *report.native_endings.entry(ending).or_default() += 1;
                    report.record(case.form, verdict);
                }
            }
        }
        println!("segment loads: {null_loads} completed cases loaded a null selector");
        let mut failures = report.finish(report.tallies.len(), seed(), true);
        // Every way a load can end must have been seen on the host.
        for ending in ["completed", "#GP", "#NP", "#SS", "#PF", "#AC"] {
            if !report.native_endings.contains_key(ending) {
                failures.push(format!("no case ended natively with {ending}"));
            }
        }
        if null_loads == 0 {
            failures.push("no case loaded a null selector".to_string());
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mov_to_cs_or_a_reserved_segment_register_is_ud_on_both_sides() {
    // 8E with ModRM.reg 1 (CS), 6 or 7, register and memory forms, with
    // and without REX.W and an operand-size prefix.
    let instructions: [&[u8]; 6] = [
        &[0x8e, 0xc8],
        &[0x8e, 0x0b],
        &[0x8e, 0x33],
        &[0x8e, 0xf8],
        &[0x48, 0x8e, 0xc8],
        &[0x66, 0x8e, 0x3b],
    ];
    with_sandbox(|sandbox| {
        let read_only = sandbox.read_only_contents().to_vec();
        let mut emulated = EmulatedSide::new(&read_only);
        let mut rng = Rng::new(seed());
        for bits in [64, 32] {
            for bytes in instructions {
                if bits == 32 && bytes[0] == 0x48 {
                    continue;
                }
                let (mode, data, stack) = pick_mode(&mut rng, bits);
                emulated.set_descriptor_tables(&linux_gdt(), &ldt_mirror(&data, &stack));
                // The decoder rejects these bytes: decode them as MOV DS
                // for the case's bookkeeping only.
                let mut as_ds = bytes.to_vec();
                let modrm = bytes.iter().position(|byte| *byte == 0x8e).expect("8E") + 1;
                as_ds[modrm] = (as_ds[modrm] & !0x38) | 0x18;
                let mut case = generate(&mut rng, mode, &as_ds);
                case.bytes = bytes.to_vec();
                sandbox.set_writable_data(&case.data);
                let native = sandbox.run_in(mode, &case.bytes, &case.input);
                let NativeOutcome::Faulted(fault) = native else {
                    panic!("{bytes:02x?} ({mode:?}): the CPU did not fault");
                };
                assert_eq!(fault.vector, 6, "{bytes:02x?} ({mode:?})");
                let result = emulated.run(&case);
                assert_eq!(
                    result.driven,
                    Driven::Exception(emulator::Exception {
                        vector: 6,
                        error_code: None,
                        cr2: None,
                    }),
                    "{bytes:02x?} ({mode:?})"
                );
                assert_eq!(result.exit.state.gprs, case.input.gprs);
                assert_eq!(result.data, case.data);
            }
        }
    });
}
