//! The `segments` guest: segment limits and rights on accesses to trapped memory.
//!
//! The 32-bit phase (phase32.s) uses a small data segment, a read-only one, an
//! expand-down one and a small ring-3 stack segment, all in VGA text memory. In-limit
//! accesses exit to the emulator, which checks the segment and carries them out. An
//! access that breaks a limit or writes read-only data is faulted by the CPU itself
//! when it is the instruction's first access (the limit check comes before any EPT
//! violation); to exercise the emulator's own checks, the faulting access is the second
//! one of a MOVS or PUSH whose first access (the read) is trapped and in limits. Each
//! case's handler records vector and error code; the path is told by its time
//! (experiments_guest::faults). In 64-bit mode a MOVSQ from VGA memory to a
//! non-canonical address gets the emulator's #GP(0); a load from a non-canonical
//! address is the CPU's own #GP(0).
//!
//! A REP MOVSB that runs into the limit has its first iterations retired by the
//! emulator with EIP kept (the core counts that as a retry, not a retired instruction),
//! and its re-execution faulted by the emulator.
//!
//! Segment-register loads (ABI 1.3; loads32.s and loads64.rs): MOV DS/SS, POP ES/FS/GS,
//! LFS and LSS whose selector, far pointer or stack slot lies in VGA memory exit to the
//! emulator, which reads the descriptor from the GDT or the LDT and hands the loaded
//! register to the core; each case then uses the register (a read through the new base,
//! a push on the new stack) and reads the selector back. A not-present descriptor, a
//! selector past the GDT limit and (in 32-bit mode) a null SS get the emulator's #NP or
//! #GP with the selector as error code.
//!
//! Single-step (single_step32.s): with RFLAGS.TF set, an emulated store is followed by
//! exactly one #DB with DR6.BS and the EIP after it, as on the CPU; an emulated REP
//! STOSB traps after each iteration (EIP at it until the last); with TF clear an
//! emulated store does not trap. Bare Bochs (`--no-hypervisor`) gives the same results.
//!
//! Counting: an instruction the emulator faults is an injected exception, not a
//! retired instruction, so only the accesses that went through are counted.
#![no_std]
#![no_main]

mod loads64;

use core::ptr::{addr_of, read_volatile};

use experiments_guest::faults::{Expected, FaultCase, Judged, Observed, Path, emulator_work};
use experiments_guest::runtime;
use guest_support::idt::{self, vector};
use guest_support::platform::VGA_TEXT_BASE;
use guest_support::serial_println;
use guest_support::trapped::TrappedMemory;

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

const NAME: &str = "segments";
/// The trapped word MOVS and PUSH read first.
const SOURCE: usize = VGA_TEXT_BASE + 0x800;
const SOURCE_VALUE: u32 = 0x5eed_0800;
const SOURCE_HIGH_VALUE: u32 = 0x0bad_cafe;
const SMALL_VALUE: u32 = 0x5a5a_0001;
const RO_VALUE: u32 = 0x0e0e_0003;
const EXPAND_DOWN_VALUE: u32 = 0x0d0d_0006;
const STACK_VALUE: u32 = 0x5555_0009;
/// The lowest non-canonical address above the lower half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
/// Where the canonical MOVSQ writes (VGA, trapped).
const MOVSQ_TARGET: usize = VGA_TEXT_BASE + 0x900;

const fn fault(name: &'static str, vector: u8, path: Path) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Fault {
            vector,
            error_code: 0,
            cr2: None,
        },
        path,
    }
}

/// An emulator fault whose error code is a selector.
const fn selector_fault(name: &'static str, vector: u8, selector: u16) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Fault {
            vector,
            error_code: selector as u64,
            cr2: None,
        },
        path: Path::Emulator,
    }
}

/// A value case's expected value: the word read or pushed, and the selector.
const fn with_selector(low: u32, selector: u16) -> u64 {
    low as u64 | (selector as u64) << 32
}

const fn value(name: &'static str, value: u64) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Value(value),
        path: Path::Emulator,
    }
}

const GP: u8 = vector::GENERAL_PROTECTION;
const SS: u8 = vector::STACK_SEGMENT;
const NP: u8 = vector::SEGMENT_NOT_PRESENT;
const DB: u8 = vector::DEBUG;

/// Words the 32-bit segment-load cases read through the new segments (loads32.s).
const PROBE_A: u32 = 0x5e90_0a0a;
const PROBE_B: u32 = 0x5e90_0b0b;
const PROBE_LDT: u32 = 0x5e90_1d71;
const STACK_A: u32 = 0x57ac_000a;
const STACK_B: u32 = 0x57ac_000b;
/// Selectors of loads32.s's GDT and LDT.
const PROBE_SELECTOR: u16 = 0x58;
const ALT_STACK_SELECTOR: u16 = 0x60;
const LDT_DATA_SELECTOR: u16 = 0x04;
const NOT_PRESENT_SELECTOR: u16 = 0x70;
const PAST_LIMIT_SELECTOR: u16 = 0x200;
/// Trapped words of loads32.s: selectors, far pointers, a stack slot.
const W_DS: usize = VGA_TEXT_BASE + 0xa00;
const W_SS: usize = VGA_TEXT_BASE + 0xa04;
const W_LDT: usize = VGA_TEXT_BASE + 0xa08;
const FP_FS: usize = VGA_TEXT_BASE + 0xa10;
const FP_SS: usize = VGA_TEXT_BASE + 0xa20;
const W_NP: usize = VGA_TEXT_BASE + 0xa30;
const W_PAST: usize = VGA_TEXT_BASE + 0xa34;
const W_NULL: usize = VGA_TEXT_BASE + 0xa38;
const W_SS_FLAT: usize = VGA_TEXT_BASE + 0xa3c;
const TRAPPED_STACK: usize = VGA_TEXT_BASE + 0xb00;

/// The 32-bit cases, in phase32.s order.
const CASES32: [FaultCase; 25] = [
    value("small-in-limit-store", SMALL_VALUE as u64),
    fault("small-beyond-limit-mov", GP, Path::Cpu),
    fault("small-beyond-limit-movs-dest", GP, Path::Emulator),
    value("read-only-load", RO_VALUE as u64),
    fault("read-only-store-mov", GP, Path::Cpu),
    fault("read-only-store-movs-dest", GP, Path::Emulator),
    value("expand-down-in-limit-store", EXPAND_DOWN_VALUE as u64),
    fault("expand-down-below-limit-mov", GP, Path::Cpu),
    fault("expand-down-below-limit-movs-dest", GP, Path::Emulator),
    value("ring3-stack-push-in-limit", STACK_VALUE as u64),
    fault("ring3-stack-push-beyond-limit", SS, Path::Cpu),
    fault(
        "ring3-push-trapped-word-stack-beyond-limit",
        SS,
        Path::Emulator,
    ),
    fault("rep-movsb-runs-into-the-limit", GP, Path::Emulator),
    value(
        "mov-ds-trapped-selector",
        with_selector(PROBE_A, PROBE_SELECTOR),
    ),
    value(
        "mov-ss-trapped-selector-then-stack",
        with_selector(STACK_A, ALT_STACK_SELECTOR),
    ),
    value(
        "pop-es-trapped-stack",
        with_selector(PROBE_A, PROBE_SELECTOR),
    ),
    value(
        "pop-fs-trapped-stack",
        with_selector(PROBE_A, PROBE_SELECTOR),
    ),
    value(
        "pop-gs-trapped-stack",
        with_selector(PROBE_A, PROBE_SELECTOR),
    ),
    value(
        "lfs-trapped-far-pointer",
        with_selector(PROBE_B, PROBE_SELECTOR),
    ),
    value(
        "lss-trapped-far-pointer-then-stack",
        with_selector(STACK_B, ALT_STACK_SELECTOR),
    ),
    value("ldt-selector", with_selector(PROBE_LDT, LDT_DATA_SELECTOR)),
    selector_fault("not-present-descriptor", NP, NOT_PRESENT_SELECTOR),
    selector_fault("selector-past-gdt-limit", GP, PAST_LIMIT_SELECTOR),
    selector_fault("null-ss", GP, 0),
    fault(
        "mov-ss-with-tf-traps-after-the-next-instruction",
        DB,
        Path::Emulator,
    ),
];
/// Index of the MOV SS single-step case, whose record holds the #DB's EIP.
const SINGLE_STEP_CASE: usize = 24;
/// Index of the REP MOVSB case, whose record's value is EDI at the fault.
const REP_CASE: usize = 12;

/// The single-step cases of single_step32.s, in its order.
const STEP_CASES: [&str; 4] = [
    "tf-emulated-store-traps-once-after-it",
    "tf-clear-emulated-store-does-not-trap",
    "tf-rep-stosb-traps-after-each-iteration",
    "tf-emulator-fault-does-not-trap",
];
/// Trapped words of single_step32.s and what its stores leave there.
const STEP_STORE: usize = VGA_TEXT_BASE + 0xc00;
const STEP_STORE_CLEAR: usize = VGA_TEXT_BASE + 0xc04;
const STEP_REP: usize = VGA_TEXT_BASE + 0xc10;
const STEP_STORE_VALUE: u32 = 0x7f1a_0001;
const STEP_CLEAR_VALUE: u32 = 0x7f1a_0002;
/// The dword at STEP_REP after REP STOSB wrote three bytes of 0x5a over zero.
const STEP_REP_VALUE: u32 = 0x005a_5a5a;
/// Traps a single-step record logs at most.
const STEP_LOG: usize = 4;
/// DR6.BS: the #DB was a single-step trap.
const DR6_BS: u32 = 1 << 14;

/// The 64-bit cases.
const CASES64: [FaultCase; 3] = [
    fault("non-canonical-load", GP, Path::Cpu),
    fault("movsq-trapped-to-non-canonical", GP, Path::Emulator),
    value(
        "movsq-trapped-to-trapped",
        (SOURCE_VALUE as u64) | ((SOURCE_HIGH_VALUE as u64) << 32),
    ),
];

/// One record of phase32.s.
#[derive(Clone, Copy)]
#[repr(C)]
struct Record32 {
    vector: u32,
    error_code: u32,
    ticks: u32,
    value: u32,
    value_high: u32,
    /// The EIP the exception reported.
    fault_eip: u32,
}

/// One #DB a single-step case took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct StepTrap {
    eip: u32,
    dr6: u32,
    ecx: u32,
    eflags: u32,
}

/// One record of single_step32.s.
#[derive(Clone, Copy)]
#[repr(C)]
struct StepRecord {
    /// #DBs taken (the log holds the first STEP_LOG).
    traps: u32,
    /// The EIP at which the handler stopped single-stepping.
    stop_eip: u32,
    /// The trapped word read back after the case.
    value: u32,
    /// The fault the case took (0xff: none).
    fault_vector: u32,
    log: [StepTrap; STEP_LOG],
}

impl StepRecord {
    /// The logged traps.
    fn traps(&self) -> &[StepTrap] {
        &self.log[..(self.traps as usize).min(STEP_LOG)]
    }

    /// Whether the case took exactly the traps at `eips` with ECX `ecxs`, each with
    /// DR6.BS, the fault `fault_vector` (0xff: none), and left `value` in its trapped
    /// word.
    fn matches(&self, eips: &[u32], ecxs: &[u32], fault_vector: u32, value: u32) -> bool {
        let traps = self.traps();
        self.traps as usize == eips.len()
            && self.fault_vector == fault_vector
            && traps.iter().map(|trap| trap.eip).eq(eips.iter().copied())
            && traps.iter().map(|trap| trap.ecx).eq(ecxs.iter().copied())
            && traps.iter().all(|trap| trap.dr6 & DR6_BS != 0)
            && self.value == value
    }
}

impl core::fmt::Display for StepRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} #DB", self.traps)?;
        for trap in self.traps() {
            write!(
                f,
                " [eip {:#x} dr6 {:#x} ecx {} eflags {:#x}]",
                trap.eip, trap.dr6, trap.ecx, trap.eflags
            )?;
        }
        write!(
            f,
            ", fault vector {:#x}, value {:#x}",
            self.fault_vector, self.value
        )
    }
}

unsafe extern "C" {
    static seg_records: [Record32; CASES32.len()];
    static seg_step_records: [StepRecord; STEP_CASES.len()];
    static seg_step_store_next: u8;
    static seg_step_rep_eip: u8;
    static seg_step_rep_next: u8;
    static seg_trapped: u32;
    static seg_rep_copied: [u32; 2];
    static seg_single_step_eip: u8;
}

core::arch::global_asm!(
    include_str!("phase32.s"),
    include_str!("loads32.s"),
    include_str!("single_step32.s"),
    CASES = const CASES32.len(),
    STEP_CASES = const STEP_CASES.len(),
    STEP_RECORD = const size_of::<StepRecord>(),
    STEP_LOG = const STEP_LOG,
    STEP_STORE = const STEP_STORE,
    STEP_STORE_CLEAR = const STEP_STORE_CLEAR,
    STEP_REP = const STEP_REP,
    STEP_STORE_VALUE = const STEP_STORE_VALUE,
    STEP_CLEAR_VALUE = const STEP_CLEAR_VALUE,
    RECORD = const size_of::<Record32>(),
    PROBE_A = const PROBE_A,
    PROBE_B = const PROBE_B,
    PROBE_LDT = const PROBE_LDT,
    STACK_A = const STACK_A,
    STACK_B = const STACK_B,
    W_DS = const W_DS,
    W_SS = const W_SS,
    W_LDT = const W_LDT,
    W_NP = const W_NP,
    W_PAST = const W_PAST,
    W_NULL = const W_NULL,
    W_SS_FLAT = const W_SS_FLAT,
    FP_FS = const FP_FS,
    FP_SS = const FP_SS,
    TRAPPED_STACK = const TRAPPED_STACK,
    SOURCE = const SOURCE,
    SOURCE_VALUE = const SOURCE_VALUE,
    SOURCE_HIGH_VALUE = const SOURCE_HIGH_VALUE,
    SMALL_VALUE = const SMALL_VALUE,
    RO_VALUE = const RO_VALUE,
    EXPAND_DOWN_VALUE = const EXPAND_DOWN_VALUE,
    STACK_VALUE = const STACK_VALUE,
    options(att_syntax)
);

fn observed32(record: &Record32) -> Observed {
    Observed {
        fault: (record.vector != 0xff).then_some((
            record.vector as u8,
            u64::from(record.error_code),
            0,
        )),
        value: u64::from(record.value) | u64::from(record.value_high) << 32,
        ticks: u64::from(record.ticks),
    }
}

#[unsafe(no_mangle)]
extern "C" fn guest_main64(_multiboot_magic: u32, _multiboot_info: u32) -> ! {
    let mut checks = runtime::begin(NAME);
    let mut memory = TrappedMemory::new();

    // SAFETY: written by the 32-bit phase, which finished before long mode; volatile
    // because Rust did not see the writes.
    let (records, trapped32, rep_copied, step_records) = unsafe {
        (
            read_volatile(addr_of!(seg_records)),
            read_volatile(addr_of!(seg_trapped)),
            read_volatile(addr_of!(seg_rep_copied)),
            read_volatile(addr_of!(seg_step_records)),
        )
    };
    memory.add_counted_elsewhere(trapped32);
    for (case, record) in CASES32.iter().zip(records.iter()) {
        let judged = Judged {
            case,
            observed: observed32(record),
        };
        checks.check(
            &case_name("[32]", case.name),
            judged.passed(),
            format_args!("{judged}"),
        );
    }
    // The REP MOVSB's first 8 bytes went through before the fault, and only they.
    let rep_edi = records[REP_CASE].value;
    let expected_copy = [SOURCE_VALUE, SOURCE_HIGH_VALUE];
    checks.check(
        "[32] rep-movsb-progress-before-the-fault",
        rep_edi == 0x100 && rep_copied == expected_copy,
        format_args!(
            "edi={rep_edi:#x} (expected 0x100) copied=[{:#x}, {:#x}] (expected [{:#x}, {:#x}])",
            rep_copied[0], rep_copied[1], expected_copy[0], expected_copy[1]
        ),
    );

    // The single-step trap came after the instruction that follows MOV SS.
    let single_step_eip = records[SINGLE_STEP_CASE].fault_eip;
    let expected_eip = addr_of!(seg_single_step_eip) as usize as u32;
    checks.check(
        "[32] mov-ss-single-step-eip",
        single_step_eip == expected_eip,
        format_args!("#DB at eip {single_step_eip:#x} (expected {expected_eip:#x})"),
    );

    // Single-step: one trap after the emulated store; none with TF clear; one after
    // each REP STOSB iteration, the last one after the instruction; none when the
    // emulator faults the instruction (its #GP only).
    let store_next = addr_of!(seg_step_store_next) as usize as u32;
    let rep_eip = addr_of!(seg_step_rep_eip) as usize as u32;
    let rep_next = addr_of!(seg_step_rep_next) as usize as u32;
    const NO_FAULT: u32 = 0xff;
    let step_expected: [(&[u32], &[u32], u32, u32); 4] = [
        (&[store_next], &[0], NO_FAULT, STEP_STORE_VALUE),
        (&[], &[], NO_FAULT, STEP_CLEAR_VALUE),
        (
            &[rep_eip, rep_eip, rep_next],
            &[2, 1, 0],
            NO_FAULT,
            STEP_REP_VALUE,
        ),
        (&[], &[], u32::from(GP), 0),
    ];
    for ((name, record), (eips, ecxs, fault_vector, value)) in
        STEP_CASES.iter().zip(&step_records).zip(step_expected)
    {
        checks.check(
            &case_name("[32]", name),
            record.matches(eips, ecxs, fault_vector, value),
            format_args!(
                "{record}; expected #DB at {eips:#x?}, ecx {ecxs:?}, fault vector {fault_vector:#x}, value {value:#x}"
            ),
        );
    }

    // SAFETY: VGA text memory is trapped device memory no Rust reference covers.
    unsafe {
        memory.store_u32(SOURCE, SOURCE_VALUE);
        memory.store_u32(SOURCE + 4, SOURCE_HIGH_VALUE);
    }
    let outcomes = [
        runtime::timed(|| {
            // SAFETY: the non-canonical address faults before anything is read.
            unsafe { idt::probe_load_u8(NON_CANONICAL as usize) }.map(u64::from)
        }),
        runtime::timed(|| {
            // SAFETY: the non-canonical destination faults before anything is written.
            unsafe { idt::probe_movsq(NON_CANONICAL, SOURCE as u64) }.map(|()| 0)
        }),
        runtime::timed(|| {
            // SAFETY: both addresses are in trapped VGA text memory, which no Rust
            // reference covers.
            unsafe { idt::probe_movsq(MOVSQ_TARGET as u64, SOURCE as u64) }.map(|()| 0)
        }),
    ];
    for (index, (case, mut observed)) in CASES64.iter().zip(outcomes).enumerate() {
        if observed.fault.is_none() && case.path == Path::Emulator {
            memory.add_counted_elsewhere(1);
            if index == 2 {
                // SAFETY: trapped VGA text memory, which no Rust reference covers.
                observed.value = unsafe { memory.load_u64(MOVSQ_TARGET) };
            }
        }
        let judged = Judged { case, observed };
        checks.check(
            &case_name("[64]", case.name),
            judged.passed(),
            format_args!("{judged}"),
        );
    }

    let loads = loads64::run(&mut memory);
    for (case, observed) in loads64::CASES.iter().zip(loads) {
        if observed.fault.is_none() && case.path == Path::Emulator {
            memory.add_counted_elsewhere(1);
        }
        let judged = Judged { case, observed };
        checks.check(
            &case_name("[64]", case.name),
            judged.passed(),
            format_args!("{judged}"),
        );
    }

    let (retired, injected) = [&CASES32[..], &CASES64, &loads64::CASES]
        .into_iter()
        .map(emulator_work)
        .fold((0, 0), |(r, i), (cr, ci)| (r + cr, i + ci));
    // The single-step case's MOV SS retires; its #DB comes from the CPU. Of the
    // single_step32.s cases, three retire one emulated instruction each (REP STOSB's
    // earlier iterations count as retries; their #DBs come from VM entry) and one
    // is the emulator's #GP.
    let (retired, injected) = (retired + 1 + 3, injected - 1 + 1);
    serial_println!(
        "{NAME}: the cases expect the emulator to retire {retired} and inject {injected} (core's exceptions-injected)"
    );
    checks.finish(memory.instructions())
}

/// `[32] name`, cut to 64 bytes.
fn case_name(mode: &str, name: &str) -> heapless::String<64> {
    let mut text = heapless::String::new();
    for part in [mode, " ", name] {
        for character in part.chars() {
            if text.push(character).is_err() {
                return text;
            }
        }
    }
    text
}
