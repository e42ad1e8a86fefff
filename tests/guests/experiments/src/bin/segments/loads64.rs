//! The segments guest's 64-bit segment-register loads: MOV DS/SS/FS, POP FS/GS, LFS
//! and LSS with the selector, far pointer or stack slot in VGA text memory (trapped),
//! an LDT selector, a not-present descriptor, a selector past the GDT limit and a null
//! SS (allowed at CPL 0 in 64-bit mode). The guest loads a GDT of its own for them
//! (the support's selectors plus the test descriptors), and sets FS and GS bases to an
//! upper-half address before each load, so only a load that takes the whole base from
//! the descriptor (upper 32 bits clear) reads the probe words.

use core::arch::global_asm;
use core::ptr::{addr_of, addr_of_mut, read_volatile};

use experiments_guest::faults::{Expected, FaultCase, Observed, Path};
use experiments_guest::runtime;
use guest_support::idt::{self, vector};
use guest_support::platform::VGA_TEXT_BASE;
use guest_support::trapped::TrappedMemory;

/// Flat read/write data, accessed, for DS and SS.
const FLAT: u16 = 0x30;
/// Data over [`PROBE`] (byte-granular, limit 0xff).
const PROBE_SELECTOR: u16 = 0x38;
/// Data, not present.
const NOT_PRESENT: u16 = 0x40;
/// The LDT's system descriptor (16 bytes in long mode).
const LDT_SELECTOR: u16 = 0x20;
/// Index 0 of the LDT (TI = 1): data over [`PROBE_LDT`].
const LDT_DATA: u16 = 0x04;
/// Past the GDT's limit.
const PAST_LIMIT: u16 = 0x200;

const PROBE_A: u32 = 0x6a90_0a0a;
const PROBE_B: u32 = 0x6a90_0b0b;
const PROBE_LDT_VALUE: u32 = 0x6a90_1d71;
const STACK_A: u32 = 0x67ac_000a;
const STACK_B: u32 = 0x67ac_000b;
const STACK_NULL: u32 = 0x67ac_0000;

/// Trapped words: selectors, far pointers (offset dword, selector word), a stack slot.
const W_FLAT: usize = VGA_TEXT_BASE + 0xc00;
const W_PROBE: usize = VGA_TEXT_BASE + 0xc04;
const W_LDT: usize = VGA_TEXT_BASE + 0xc08;
const W_NOT_PRESENT: usize = VGA_TEXT_BASE + 0xc0c;
const W_PAST_LIMIT: usize = VGA_TEXT_BASE + 0xc10;
const W_NULL: usize = VGA_TEXT_BASE + 0xc14;
const FP_FS: usize = VGA_TEXT_BASE + 0xc20;
const FP_SS: usize = VGA_TEXT_BASE + 0xc30;
const TRAPPED_STACK: usize = VGA_TEXT_BASE + 0xd00;

const fn with_selector(low: u32, selector: u16) -> u64 {
    low as u64 | (selector as u64) << 32
}

const fn value(name: &'static str, expected: u64) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Value(expected),
        path: Path::Emulator,
    }
}

const fn fault(name: &'static str, vector: u8, error_code: u16) -> FaultCase {
    FaultCase {
        name,
        expected: Expected::Fault {
            vector,
            error_code: error_code as u64,
            cr2: None,
        },
        path: Path::Emulator,
    }
}

/// The cases, in [`run`]'s order. A value is the word read through the new segment
/// (or pushed on the new stack) in bits 31:0 and the selector read back in 47:32.
pub const CASES: [FaultCase; 11] = [
    value("mov-ds-trapped-selector", FLAT as u64),
    value(
        "mov-ss-trapped-selector-then-stack",
        with_selector(STACK_A, FLAT),
    ),
    value(
        "mov-fs-trapped-base-from-descriptor",
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
        with_selector(STACK_B, FLAT),
    ),
    value("ldt-selector", with_selector(PROBE_LDT_VALUE, LDT_DATA)),
    fault(
        "not-present-descriptor",
        vector::SEGMENT_NOT_PRESENT,
        NOT_PRESENT,
    ),
    fault(
        "selector-past-gdt-limit",
        vector::GENERAL_PROTECTION,
        PAST_LIMIT,
    ),
    value("null-ss-allowed-at-cpl0", with_selector(STACK_NULL, 0)),
];

#[repr(C, align(16))]
struct Table<const N: usize>([u64; N]);

#[repr(C, align(16))]
struct Stack([u8; 4096]);

static mut GDT: Table<9> = Table([0; 9]);
static mut LDT: Table<1> = Table([0; 1]);
static mut LSS_STACK: Stack = Stack([0; 4096]);

const fn probe_words(at_8: u32, at_12: u32) -> [u32; 64] {
    let mut words = [0; 64];
    words[2] = at_8;
    words[3] = at_12;
    words
}

static PROBE: [u32; 64] = probe_words(PROBE_A, PROBE_B);
static PROBE_LDT: [u32; 64] = probe_words(PROBE_LDT_VALUE, 0);

/// A code or data descriptor: 32-bit base, 20-bit limit, access byte, flags nibble
/// (G, D/B, L, AVL).
const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | (access as u64) << 40
        | ((limit >> 16) & 0xf) << 48
        | ((flags & 0xf) as u64) << 52
        | (base >> 24) << 56
}

unsafe extern "C" {
    static guest_gdt_pointer: u8;
    fn seg64_mov_ds(selector: u64) -> u64;
    fn seg64_mov_ss(selector: u64, pushed: u64) -> u64;
    fn seg64_mov_fs(selector: u64, offset: u64) -> u64;
    fn seg64_pop_fs(slot: u64, offset: u64) -> u64;
    fn seg64_pop_gs(slot: u64, offset: u64) -> u64;
    fn seg64_lfs(far_pointer: u64) -> u64;
    fn seg64_lss(far_pointer: u64, pushed: u64) -> u64;
}

global_asm!(include_str!("loads64.s"), options(att_syntax));

/// A 32-bit address of a static (the guest runs below 4 GiB).
fn low_address<T>(item: *const T) -> u32 {
    u32::try_from(item as usize)
        .unwrap_or_else(|_| runtime::fail_now(format_args!("a static above 4 GiB")))
}

/// Builds and loads the test GDT (and its LDT in LDTR).
fn load_tables() {
    let probe = low_address(addr_of!(PROBE));
    let probe_ldt = low_address(addr_of!(PROBE_LDT));
    let ldt = addr_of_mut!(LDT);
    let ldt_base = u64::from(low_address(ldt));
    let entries: [u64; 9] = [
        0,
        0x00cf_9a00_0000_ffff, // 0x08 flat code32
        0x00cf_9200_0000_ffff, // 0x10 flat data
        0x00af_9a00_0000_ffff, // 0x18 code64
        // 0x20: the LDT (type 2, present), base high half in the next slot.
        descriptor(ldt_base as u32, 7, 0x82, 0),
        0,
        descriptor(0, 0xf_ffff, 0x93, 0xc), // 0x30 flat data
        descriptor(probe, 0xff, 0x93, 0x4), // 0x38 probe data
        descriptor(0, 0xff, 0x13, 0x4),     // 0x40 not present
    ];
    let gdt = addr_of_mut!(GDT);
    // SAFETY: only this CPU runs; the tables are statics nothing else references.
    unsafe {
        (*gdt).0 = entries;
        (*ldt).0 = [descriptor(probe_ldt, 0xff, 0x93, 0x4)];
    }
    let pointer = TablePointer {
        limit: (size_of::<[u64; 9]>() - 1) as u16,
        base: gdt as u64,
    };
    // SAFETY: the new GDT holds the support's selectors at the same slots (CS 0x18 and
    // the data selectors stay valid); the LDT selector names a valid LDT descriptor.
    unsafe {
        core::arch::asm!(
            "lgdt [{p}]",
            "lldt {l:x}",
            p = in(reg) &pointer,
            l = in(reg) u64::from(LDT_SELECTOR),
            options(nostack, preserves_flags),
        );
    }
}

/// Puts the support's GDT back, clears LDTR and reloads flat FS and GS.
fn restore_tables() {
    // SAFETY: guest_gdt_pointer is the support's 10-byte pseudo-descriptor; the
    // selectors in use (0x18, 0x10) are in it.
    unsafe {
        core::arch::asm!(
            "lgdt [{p}]",
            "xor {t:e}, {t:e}",
            "lldt {t:x}",
            "mov {t:e}, 0x10",
            "mov fs, {t:e}",
            "mov gs, {t:e}",
            p = in(reg) addr_of!(guest_gdt_pointer),
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}

#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// Writes the trapped selectors and far pointers, runs the cases with the test GDT,
/// and returns what each observed (in [`CASES`] order).
pub fn run(memory: &mut TrappedMemory) -> [Observed; CASES.len()] {
    let lss_stack = addr_of_mut!(LSS_STACK);
    let lss_top = low_address(lss_stack) + size_of::<Stack>() as u32;
    // SAFETY: VGA text memory is trapped device memory no Rust reference covers.
    unsafe {
        memory.store_u32(W_FLAT, u32::from(FLAT));
        memory.store_u32(W_PROBE, u32::from(PROBE_SELECTOR));
        memory.store_u32(W_LDT, u32::from(LDT_DATA));
        memory.store_u32(W_NOT_PRESENT, u32::from(NOT_PRESENT));
        memory.store_u32(W_PAST_LIMIT, u32::from(PAST_LIMIT));
        memory.store_u32(W_NULL, 0);
        memory.store_u32(FP_FS, 12);
        memory.store_u16(FP_FS + 4, PROBE_SELECTOR);
        memory.store_u32(FP_SS, lss_top);
        memory.store_u16(FP_SS + 4, FLAT);
        memory.store_u64(TRAPPED_STACK, u64::from(PROBE_SELECTOR));
    }
    load_tables();
    let call = |function: u64, arguments: [u64; 3]| {
        // SAFETY: the functions of loads64.s take these arguments, keep R12 and R13,
        // touch only the trapped words, the probe words and their own stack, and
        // restore the flat selectors; the IDT is installed (runtime::begin).
        runtime::timed(|| unsafe { idt::probe_call(function, arguments) })
    };
    let address = |function: unsafe extern "C" fn(u64) -> u64| function as usize as u64;
    let address2 = |function: unsafe extern "C" fn(u64, u64) -> u64| function as usize as u64;
    let at = |trapped: usize| trapped as u64;
    let mut lss = call(address2(seg64_lss), [at(FP_SS), u64::from(STACK_B), 0]);
    if lss.fault.is_none() {
        // The push went to the far pointer's offset in the new stack.
        // SAFETY: the stack is a static only this probe used.
        let pushed = unsafe { read_volatile((lss_top as usize - 8) as *const u64) };
        lss.value = (lss.value & !0xffff_ffff) | (pushed & 0xffff_ffff);
    }
    let observed = [
        call(address(seg64_mov_ds), [at(W_FLAT), 0, 0]),
        call(address2(seg64_mov_ss), [at(W_FLAT), u64::from(STACK_A), 0]),
        call(address2(seg64_mov_fs), [at(W_PROBE), 8, 0]),
        call(address2(seg64_pop_fs), [at(TRAPPED_STACK), 8, 0]),
        call(address2(seg64_pop_gs), [at(TRAPPED_STACK), 8, 0]),
        call(address(seg64_lfs), [at(FP_FS), 0, 0]),
        lss,
        call(address2(seg64_mov_fs), [at(W_LDT), 8, 0]),
        call(address(seg64_mov_ds), [at(W_NOT_PRESENT), 0, 0]),
        call(address(seg64_mov_ds), [at(W_PAST_LIMIT), 0, 0]),
        call(
            address2(seg64_mov_ss),
            [at(W_NULL), u64::from(STACK_NULL), 0],
        ),
    ];
    restore_tables();
    observed
}
