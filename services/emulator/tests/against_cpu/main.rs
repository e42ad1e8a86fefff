//! The emulator against the real CPU: every required 64-bit-mode instruction
//! form (iced-x86 `Code`) runs natively in the sandbox and through the
//! emulator from the same registers, flags, vector registers and memory, and
//! the results must agree (see `against_cpu/expect.rs` for what is compared).
//!
//! `CORDON_LONG_TESTS=1` runs many more cases per form; `CORDON_SEED=n`
//! replays another seed. Forms the emulator reports as unsupported are
//! counted, listed and fail the test: the required list is the issue's.
//! Segment-register loads have their own cases (`segment_loads.rs`).

mod cases;
mod emulated;
mod expect;
mod forms;
mod segment_loads;

use emulator_testkit::Rng;
use emulator_testkit::native::{NativeMode, with_sandbox};
use expect::Verdict;
use forms::Form;
use iced_x86::Code;
use std::collections::BTreeMap;

/// Cases per form in the default run (keeps `cargo test` well under two
/// minutes) and with `CORDON_LONG_TESTS=1`.
const DEFAULT_CASES_PER_FORM: usize = 80;
const LONG_CASES_PER_FORM: usize = 3000;
/// Examples printed in full for each kind of mismatch.
const EXAMPLES_PER_KIND: usize = 3;

fn long_run() -> bool {
    std::env::var("CORDON_LONG_TESTS").is_ok_and(|value| value == "1")
}

fn seed() -> u64 {
    std::env::var("CORDON_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x00c0_4d0e)
}

#[derive(Default)]
struct FormTally {
    compared: usize,
    mismatched: usize,
    unsupported: usize,
    host_lacks: usize,
    undefined: usize,
    outside_mirror: usize,
    unsupported_reason: Option<String>,
}

#[derive(Default)]
struct Report {
    tallies: BTreeMap<u32, (Code, FormTally)>,
    ungenerated: Vec<Code>,
    /// Cases whose memory operand went through FS or GS.
    through_fs_gs: usize,
    /// How the native runs ended: completed, or the exception vector.
    native_endings: BTreeMap<&'static str, usize>,
    /// Mismatches grouped by what differed (numbers blanked out): count
    /// and the first few in full.
    mismatch_kinds: BTreeMap<String, (usize, Vec<String>)>,
}

/// What differed in a mismatch report, with numbers and byte lists blanked
/// out, so that mismatches with one cause group together.
fn mismatch_kind(text: &str) -> String {
    let differences = text.lines().skip(2).collect::<Vec<_>>().join(" |");
    let mut kind = String::new();
    let mut chars = differences.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            while chars.next().is_some_and(|c| c != ']') {}
            kind.push_str("[..]");
        } else if c.is_ascii_digit() {
            let mut number = String::from(c);
            while let Some(next) = chars.next_if(|c| c.is_ascii_alphanumeric()) {
                number.push(next);
            }
            // Keep small numbers (vectors, error codes); blank the rest.
            if number.len() <= 2 {
                kind.push_str(&number);
            } else {
                kind.push('#');
            }
        } else {
            kind.push(c);
        }
    }
    kind
}

impl Report {
    fn record(&mut self, form: Form, verdict: Verdict) {
        let (_, tally) = self
            .tallies
            .entry(form.code as u32)
            .or_insert_with(|| (form.code, FormTally::default()));
        match verdict {
            Verdict::Match => tally.compared += 1,
            Verdict::Mismatch(text) => {
                tally.compared += 1;
                tally.mismatched += 1;
                let (count, examples) =
                    self.mismatch_kinds.entry(mismatch_kind(&text)).or_default();
                *count += 1;
                if examples.len() < EXAMPLES_PER_KIND {
                    examples.push(text);
                }
            }
            Verdict::Unsupported(reason) => {
                tally.unsupported += 1;
                tally.unsupported_reason.get_or_insert(reason);
            }
            Verdict::HostLacksInstruction => tally.host_lacks += 1,
            Verdict::UndefinedResult => tally.undefined += 1,
            Verdict::OutsideMirror => tally.outside_mirror += 1,
        }
    }

    /// Prints the summary; returns the reasons the run fails. For
    /// `required` forms, "unsupported" and "no case generated" fail too.
    fn finish(&self, forms: usize, seed: u64, required: bool) -> Vec<String> {
        let cases: usize = self.tallies.values().map(|(_, t)| t.compared).sum();
        let mismatched: usize = self.tallies.values().map(|(_, t)| t.mismatched).sum();
        let unsupported: Vec<_> = self
            .tallies
            .values()
            .filter(|(_, t)| t.unsupported > 0)
            .collect();
        let host_lacks: Vec<_> = self
            .tallies
            .values()
            .filter(|(_, t)| t.host_lacks > 0 && t.compared == 0)
            .map(|(code, _)| format!("{code:?}"))
            .collect();
        let covered = self
            .tallies
            .values()
            .filter(|(_, t)| t.compared > 0 && t.mismatched == 0 && t.unsupported == 0)
            .count();
        let undefined: usize = self.tallies.values().map(|(_, t)| t.undefined).sum();
        let outside: usize = self.tallies.values().map(|(_, t)| t.outside_mirror).sum();
        let unsupported_cases: usize = unsupported.iter().map(|(_, t)| t.unsupported).sum();
        println!(
            "against the CPU (seed {seed}): {forms} {} forms; {covered} covered without \
             mismatch; {cases} cases compared, {mismatched} mismatches; {unsupported_cases} cases \
             in {} forms unsupported by the emulator; {undefined} cases with an SDM-undefined \
             result skipped; {outside} page faults outside the mirrored region skipped; {} cases \
             through FS or GS; {} forms without a generated case; {} forms the host CPU lacks",
            if required { "required" } else { "optional" },
            unsupported.len(),
            self.through_fs_gs,
            self.ungenerated.len(),
            host_lacks.len()
        );
        let endings: Vec<String> = self
            .native_endings
            .iter()
            .map(|(ending, count)| format!("{ending} {count}"))
            .collect();
        println!("native runs: {}", endings.join(", "));
        let mut outside_forms: Vec<_> = self
            .tallies
            .values()
            .filter(|(_, t)| t.outside_mirror > 0)
            .map(|(code, t)| (t.outside_mirror, *code))
            .collect();
        outside_forms.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
        if !outside_forms.is_empty() {
            let top: Vec<String> = outside_forms
                .iter()
                .take(6)
                .map(|(count, code)| format!("{code:?} ({count})"))
                .collect();
            println!(
                "page faults outside the mirrored region, most in: {}",
                top.join(", ")
            );
        }
        let mut kinds: Vec<_> = self.mismatch_kinds.iter().collect();
        kinds.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
        for (kind, (count, examples)) in kinds {
            println!("MISMATCH KIND ({count} cases):{kind}");
            for text in examples {
                println!("  e.g. {text}");
            }
        }
        let mismatching_forms: Vec<String> = self
            .tallies
            .values()
            .filter(|(_, t)| t.mismatched > 0)
            .map(|(code, t)| format!("{code:?} ({}/{})", t.mismatched, t.compared))
            .collect();
        let mut failures = Vec::new();
        if !mismatching_forms.is_empty() {
            failures.push(format!(
                "{mismatched} mismatches in {} forms: {}",
                mismatching_forms.len(),
                mismatching_forms.join(", ")
            ));
        }
        if !required {
            return failures;
        }
        if !unsupported.is_empty() {
            let list: Vec<String> = unsupported
                .iter()
                .map(|(code, t)| {
                    format!(
                        "{code:?} ({})",
                        t.unsupported_reason.as_deref().unwrap_or("")
                    )
                })
                .collect();
            failures.push(format!(
                "{} required forms unsupported: {}",
                list.len(),
                list.join(", ")
            ));
        }
        if !host_lacks.is_empty() {
            failures.push(format!(
                "the host CPU lacks {} required forms, so they were not compared: {}",
                host_lacks.len(),
                host_lacks.join(", ")
            ));
        }
        if !self.ungenerated.is_empty() {
            failures.push(format!(
                "the harness generated no case for {:?}",
                self.ungenerated
            ));
        }
        failures
    }
}

#[test]
fn the_required_form_list_has_every_kind_of_form() {
    let forms = forms::required_forms();
    let codes: Vec<Code> = forms.iter().map(|form| form.code).collect();
    for code in [
        Code::Mov_rm32_r32,
        Code::Mov_moffs64_RAX,
        Code::Mov_r64m16_Sreg,
        Code::Movsxd_r64_rm32,
        Code::Movbe_m64_r64,
        Code::Movdir64b_r64_m512,
        Code::Xchg_rm64_r64,
        Code::Cmove_r32_rm32,
        Code::Setg_rm8,
        Code::Push_rm64,
        Code::Pop_rm64,
        Code::Push_r64,
        Code::Pushq_imm32,
        Code::Xadd_rm16_r16,
        Code::Cmpxchg16b_m128,
        Code::Imul_r64_rm64_imm8,
        Code::Idiv_rm8,
        Code::Btc_rm64_r64,
        Code::Bts_rm32_imm8,
        Code::Lzcnt_r16_rm16,
        Code::Rcr_rm8_CL,
        Code::Shrd_rm64_r64_imm8,
        Code::Movsq_m64_m64,
        Code::Scasb_AL_m8,
        Code::Movq_rm64_xmm,
        Code::Movntdq_m128_xmm,
        Code::VEX_Vmovdqu_ymmm256_ymm,
        Code::VEX_Vmovaps_xmm_xmmm128,
        Code::Clflushopt_m8,
        Code::Prefetchnta_m8,
    ] {
        assert!(
            codes.contains(&code),
            "{code:?} missing from the required forms"
        );
    }
    assert!(
        forms.len() > 500,
        "only {} required forms: the filter lost some",
        forms.len()
    );
}

/// Runs `per_form` cases of every form natively and emulated; returns the
/// reasons the run fails.
fn compare_forms(
    forms: &[Form],
    mode: impl Fn(&mut Rng) -> NativeMode,
    per_form: usize,
    seed: u64,
    required: bool,
) -> Vec<String> {
    with_sandbox(|sandbox| {
        let read_only = sandbox.read_only_contents().to_vec();
        let mut emulated = emulated::EmulatedSide::new(&read_only);
        let mut report = Report::default();
        for form in forms {
            let mut rng = Rng::new(seed ^ (form.code as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for _ in 0..per_form {
                let mode = mode(&mut rng);
                let Some(case) = cases::generate(*form, mode, &mut rng, &read_only) else {
                    report.ungenerated.push(form.code);
                    break;
                };
                if matches!(
                    case.instruction.segment_prefix(),
                    iced_x86::Register::FS | iced_x86::Register::GS
                ) {
                    report.through_fs_gs += 1;
                }
                sandbox.set_writable_data(&case.data);
                let native = sandbox.run_in(mode, &case.bytes, &case.input);
                let native_data = sandbox.writable_data();
                let ending = match &native {
                    emulator_testkit::native::NativeOutcome::Completed(_) => "completed",
                    emulator_testkit::native::NativeOutcome::Faulted(fault) => match fault.vector {
                        0 => "#DE",
                        6 => "#UD",
                        12 => "#SS",
                        13 => "#GP",
                        14 => "#PF",
                        17 => "#AC",
                        _ => "other",
                    },
                };
                *report.native_endings.entry(ending).or_default() += 1;
                let result = emulated.run(&case);
                report.record(
                    *form,
                    expect::evaluate(&case, &native, &native_data, &result),
                );
            }
        }
        report.finish(forms.len(), seed, required)
    })
}

#[test]
fn every_required_form_matches_the_host_cpu() {
    let per_form = if long_run() {
        LONG_CASES_PER_FORM
    } else {
        DEFAULT_CASES_PER_FORM
    };
    let failures = compare_forms(
        &forms::required_forms(),
        |_| NativeMode::Long,
        per_form,
        seed(),
        true,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn other_forms_are_unsupported_or_match_the_host_cpu() {
    let per_form = if long_run() {
        LONG_CASES_PER_FORM / 10
    } else {
        DEFAULT_CASES_PER_FORM / 8
    };
    let failures = compare_forms(
        &forms::optional_forms(),
        |_| NativeMode::Long,
        per_form,
        seed(),
        false,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_required_form_valid_outside_64_bit_mode_matches_the_host_cpu_in_compatibility_mode() {
    let per_form = if long_run() {
        LONG_CASES_PER_FORM / 2
    } else {
        DEFAULT_CASES_PER_FORM / 2
    };
    let failures = compare_forms(
        &forms::compatibility_mode_forms(),
        |_| NativeMode::Compatibility,
        per_form,
        seed(),
        true,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// LDT data segments for one segmented case: a base at, below or above
/// the data region, byte- or page-granular limits that cut through it,
/// expand-down segments, read-only data segments (never for SS, which must
/// be writable); SS shares DS's base but not its limit or direction.
fn random_segments(rng: &mut Rng, code16: bool) -> NativeMode {
    // 16-bit code needs offsets below 64 KiB for 16-bit addresses.
    let below = if code16 {
        rng.pick(&[0u32, 0x1000, 0x10, 0x8000])
    } else {
        rng.pick(&[0u32, 0x1000, 0x10, 0x2_0000])
    };
    let base = emulator_testkit::native::DATA_BASE as u32 - below;
    let segment = |rng: &mut Rng, writable: bool| {
        let expand_down = rng.chance(1, 4);
        let (limit, page_granular) = match rng.below(4) {
            0 => (0xf_ffff, true),
            1 => ((rng.below(0x40) as u32) | 0x20, true),
            _ => (rng.below(0x3_2000) as u32, false),
        };
        emulator_testkit::native::DataSegment {
            base,
            limit,
            page_granular,
            expand_down,
            writable,
            big: !rng.chance(1, 4),
        }
    };
    let writable = !rng.chance(1, 6);
    let data = segment(rng, writable);
    let stack = segment(rng, true);
    NativeMode::Segmented {
        data,
        stack,
        code16,
    }
}

#[test]
fn segment_checks_match_the_host_cpu_with_ldt_data_segments() {
    let per_form = if long_run() {
        LONG_CASES_PER_FORM / 2
    } else {
        DEFAULT_CASES_PER_FORM / 2
    };
    let failures = compare_forms(
        &forms::compatibility_mode_forms(),
        |rng| random_segments(rng, false),
        per_form,
        seed(),
        true,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sixteen_bit_code_matches_the_host_cpu_with_ldt_segments() {
    let per_form = if long_run() {
        LONG_CASES_PER_FORM / 2
    } else {
        DEFAULT_CASES_PER_FORM / 2
    };
    let failures = compare_forms(
        &forms::sixteen_bit_forms(),
        |rng| random_segments(rng, true),
        per_form,
        seed(),
        true,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lock_on_an_instruction_that_cannot_take_it_is_ud_natively_and_emulated() {
    let instructions: [&[u8]; 8] = [
        &[0xf0, 0x89, 0x03],       // lock mov [rbx], eax
        &[0xf0, 0x8b, 0x03],       // lock mov eax, [rbx]
        &[0xf0, 0x3b, 0x03],       // lock cmp eax, [rbx]
        &[0xf0, 0x85, 0x03],       // lock test [rbx], eax
        &[0xf0, 0x0f, 0xb6, 0x03], // lock movzx eax, byte [rbx]
        &[0xf0, 0x0f, 0xa3, 0x03], // lock bt [rbx], eax (only BTS/BTR/BTC lock)
        &[0xf0, 0xa4],             // lock movsb
        &[0xf0, 0x01, 0xd8],       // lock add eax, ebx (register destination)
    ];
    with_sandbox(|sandbox| {
        let read_only = sandbox.read_only_contents().to_vec();
        let mut emulated = emulated::EmulatedSide::new(&read_only);
        let data = vec![0u8; (emulator_testkit::native::WRITABLE_PAGES * 4096) as usize];
        for bytes in instructions {
            let mut gprs = [0u64; 16];
            for register in [3, 4, 6, 7] {
                gprs[register] = emulator_testkit::native::DATA_BASE + 0x100;
            }
            let input = emulator_testkit::native::NativeState {
                gprs,
                rflags: 0x202,
                ymm: [[0; 32]; 16],
            };
            let mut decoder = iced_x86::Decoder::with_ip(
                64,
                bytes,
                emulator_testkit::native::INSTRUCTION_ADDRESS,
                iced_x86::DecoderOptions::NONE,
            );
            let instruction = decoder.decode();
            let case = cases::Case {
                mode: NativeMode::Long,
                form: Form {
                    code: instruction.code(),
                    shape: forms::Shape::Memory,
                },
                instruction,
                bytes: bytes.to_vec(),
                input,
                data: data.clone(),
            };
            sandbox.set_writable_data(&data);
            let native = sandbox.run(bytes, &input);
            let emulator_testkit::native::NativeOutcome::Faulted(fault) = native else {
                panic!("{bytes:02x?}: the CPU did not fault");
            };
            assert_eq!(
                fault.vector, 6,
                "{bytes:02x?}: the CPU raised {}",
                fault.vector
            );
            // The CPU raises #UD before touching memory, so such an
            // instruction never causes an exit; the emulator only meets it
            // when the guest rewrote its code under us, and must then do
            // what the CPU does.
            let result = emulated.run(&case);
            let undefined_opcode =
                emulator_testkit::drive::Driven::Exception(emulator::Exception {
                    vector: 6,
                    error_code: None,
                    cr2: None,
                });
            assert_eq!(
                result.driven, undefined_opcode,
                "{bytes:02x?} `{instruction}`"
            );
            assert_eq!(result.data, data, "{bytes:02x?}: memory changed");
            assert_eq!(
                result.exit.state.gprs, gprs,
                "{bytes:02x?}: registers changed"
            );
        }
    });
}
