//! The 64-bit checks: LAPIC registers against CPUID, and every instruction family the
//! demo aims at VGA text memory, each access one counted instruction (guest-support's
//! `TrappedMemory`). Values are chosen so a wrong width, sign or flag shows.
//!
//! Safety of every access below: the LAPIC page and VGA text memory are identity-mapped
//! device memory (LAPIC uncached) that no Rust reference points at, and the RAM buffers
//! are locals only these accessors touch while they run.

use crate::vector_checks;
use demo_guest::lapic;
use demo_guest::report::{CheckLine, Phase};
use guest_support::cpu::initial_apic_id;
use guest_support::idt::{self, vector};
use guest_support::platform::{LAPIC_ID, LAPIC_TPR, LAPIC_VERSION, VGA_TEXT_BASE};
use guest_support::trapped::{TrappedMemory, flags};

/// Multiboot2 handoff magic in EAX at entry.
const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// First linear address the guest's identity map (0..4 GiB) does not map.
const UNMAPPED: usize = 0x1_0000_0000;
/// A dword that straddles two VGA pages (0xb8ffe..0xb9002).
const SPLIT: usize = VGA_TEXT_BASE + 0xffe;

fn vga(offset: usize) -> usize {
    VGA_TEXT_BASE + 0x200 + offset
}

/// A check's verdict and the two values its line shows.
struct Outcome {
    passed: bool,
    first: (&'static str, u64),
    second: (&'static str, u64),
}

fn got_expected(got: u64, expected: u64) -> Outcome {
    Outcome {
        passed: got == expected,
        first: ("got", got),
        second: ("expected", expected),
    }
}

/// A got/expected outcome that also requires `also`.
fn got_expected_and(got: u64, expected: u64, also: bool) -> Outcome {
    Outcome {
        passed: got == expected && also,
        ..got_expected(got, expected)
    }
}

fn old_and_memory(old: u64, memory: u64, expected_old: u64, expected_memory: u64) -> Outcome {
    Outcome {
        passed: old == expected_old && memory == expected_memory,
        first: ("old", old),
        second: ("memory", memory),
    }
}

type Check = fn(&mut TrappedMemory, u32) -> Outcome;

const CHECKS: &[(&str, Check)] = &[
    ("handoff", handoff),
    ("lapic-id", lapic_id),
    ("lapic-version", lapic_version),
    ("tpr", tpr),
    ("mov8", mov8),
    ("mov16", mov16),
    ("mov32", mov32),
    ("mov64", mov64),
    ("movzx-m8", movzx_m8),
    ("movzx-m16", movzx_m16),
    ("movsx-m8", movsx_m8),
    ("movsx-m16", movsx_m16),
    ("movsxd", movsxd),
    ("add8-carry", add8),
    ("add16", add16),
    ("add32", add32),
    ("add64-overflow", add64),
    ("or8", or8),
    ("or32", or32),
    ("or64", or64),
    ("and16", and16),
    ("and32", and32),
    ("and64-zero", and64),
    ("xchg8", xchg8),
    ("xchg32", xchg32),
    ("xchg64", xchg64),
    ("lock-xadd16", lock_xadd16),
    ("lock-xadd32", lock_xadd32),
    ("lock-xadd64", lock_xadd64),
    ("lock-cmpxchg8", lock_cmpxchg8),
    ("lock-cmpxchg32", lock_cmpxchg32),
    ("lock-cmpxchg64", lock_cmpxchg64),
    ("rep-stosb", rep_stosb),
    ("rep-stosq", rep_stosq),
    ("rep-movsb-to-vga", rep_movsb_to_vga),
    ("rep-movsb-from-vga", rep_movsb_from_vga),
    ("split-mov32", split_mov32),
    ("split-lock-xadd32", split_lock_xadd32),
    ("page-fault-recorded", page_fault_recorded),
    ("xmm-survive-exit", xmm_survive_exit),
    ("movdqu-round-trip", movdqu_round_trip),
    ("ymm-load-and-survive", ymm_load_and_survive),
];

/// Runs every 64-bit check, handing each line to `report`. `handoff_magic` is the EAX
/// value the guest was entered with.
pub fn run(memory: &mut TrappedMemory, handoff_magic: u32, mut report: impl FnMut(CheckLine)) {
    for (name, check) in CHECKS {
        let outcome = check(memory, handoff_magic);
        report(CheckLine {
            phase: Phase::Long64,
            name,
            passed: outcome.passed,
            first: outcome.first,
            second: outcome.second,
        });
    }
}

fn handoff(_: &mut TrappedMemory, magic: u32) -> Outcome {
    got_expected(u64::from(magic), u64::from(MULTIBOOT2_MAGIC))
}

fn lapic_id(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation.
    let id = lapic::id_from_register(unsafe { memory.load_u32(LAPIC_ID) });
    let cpuid = initial_apic_id();
    Outcome {
        passed: id == cpuid,
        first: ("id", u64::from(id)),
        second: ("cpuid", u64::from(cpuid)),
    }
}

fn lapic_version(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation.
    let register = unsafe { memory.load_u32(LAPIC_VERSION) };
    let (version, max_lvt) = lapic::decode_version(register);
    Outcome {
        passed: lapic::version_is_sane(register),
        first: ("version", u64::from(version)),
        second: ("max-lvt", u64::from(max_lvt)),
    }
}

fn tpr(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation; TPR 0x60 with interrupts off only masks
    // interrupts nobody sends, and it is restored to 0.
    let got = unsafe {
        memory.store_u32(LAPIC_TPR, 0x60);
        let got = memory.load_u32(LAPIC_TPR) & 0xff;
        memory.store_u32(LAPIC_TPR, 0);
        got
    };
    got_expected(u64::from(got), 0x60)
}

fn mov8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation.
    let got = unsafe {
        memory.store_u8(vga(0x00), 0x5a);
        memory.load_u8(vga(0x00))
    };
    got_expected(u64::from(got), 0x5a)
}

fn mov16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation. Odd address: an unaligned word.
    let got = unsafe {
        memory.store_u16(vga(0x03), 0xc0de);
        memory.load_u16(vga(0x03))
    };
    got_expected(u64::from(got), 0xc0de)
}

fn mov32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation.
    let got = unsafe {
        memory.store_u32(vga(0x08), 0xdead_beef);
        memory.load_u32(vga(0x08))
    };
    got_expected(u64::from(got), 0xdead_beef)
}

fn mov64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation.
    let got = unsafe {
        memory.store_u64(vga(0x10), 0xfedc_ba98_7654_3210);
        memory.load_u64(vga(0x10))
    };
    got_expected(got, 0xfedc_ba98_7654_3210)
}

/// The qword the extension checks load from: byte 0xf1, word 0x80f1, dword 0x876580f1,
/// all negative as signed values.
const EXTEND_PATTERN: u64 = 0x1234_5678_8765_80f1;

fn extend_source(memory: &mut TrappedMemory) -> usize {
    let address = vga(0x20);
    // SAFETY: see the module documentation.
    unsafe { memory.store_u64(address, EXTEND_PATTERN) };
    address
}

fn movzx_m8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let address = extend_source(memory);
    // SAFETY: see the module documentation.
    let (r16, r32, r64) = unsafe {
        (
            memory.movzx_u8_to_u16(address),
            memory.movzx_u8_to_u32(address),
            memory.movzx_u8_to_u64(address),
        )
    };
    got_expected_and(r64, 0xf1, r16 == 0xf1 && r32 == 0xf1)
}

fn movzx_m16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let address = extend_source(memory);
    // SAFETY: see the module documentation.
    let (r32, r64) = unsafe {
        (
            memory.movzx_u16_to_u32(address),
            memory.movzx_u16_to_u64(address),
        )
    };
    got_expected_and(r64, 0x80f1, r32 == 0x80f1)
}

fn movsx_m8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let address = extend_source(memory);
    // SAFETY: see the module documentation.
    let (r16, r32, r64) = unsafe {
        (
            memory.movsx_i8_to_i16(address),
            memory.movsx_i8_to_i32(address),
            memory.movsx_i8_to_i64(address),
        )
    };
    got_expected_and(r64 as u64, -15i64 as u64, r16 == -15 && r32 == -15)
}

fn movsx_m16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let address = extend_source(memory);
    // SAFETY: see the module documentation.
    let (r32, r64) = unsafe {
        (
            memory.movsx_i16_to_i32(address),
            memory.movsx_i16_to_i64(address),
        )
    };
    let expected = i64::from(0x80f1u16 as i16);
    got_expected_and(r64 as u64, expected as u64, i64::from(r32) == expected)
}

fn movsxd(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let address = extend_source(memory);
    // SAFETY: see the module documentation.
    let got = unsafe { memory.movsxd_i32_to_i64(address) };
    got_expected(got as u64, 0xffff_ffff_8765_80f1)
}

/// Stores `initial`, applies one read-modify-write, loads the result; returns the
/// result and RFLAGS of the read-modify-write.
macro_rules! read_modify_write {
    ($memory:expr, $store:ident, $op:ident, $load:ident, $address:expr, $initial:expr, $operand:expr) => {{
        let address = $address;
        // SAFETY: see the module documentation.
        unsafe {
            $memory.$store(address, $initial);
            let rflags = $memory.$op(address, $operand);
            (u64::from($memory.$load(address)), rflags)
        }
    }};
}

fn add8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, rflags) =
        read_modify_write!(memory, store_u8, add_u8, load_u8, vga(0x30), 0xf0, 0x20);
    got_expected_and(got, 0x10, rflags & flags::CF != 0)
}

fn add16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, _) = read_modify_write!(
        memory,
        store_u16,
        add_u16,
        load_u16,
        vga(0x32),
        0x1234,
        0x1111
    );
    got_expected(got, 0x2345)
}

fn add32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, rflags) = read_modify_write!(
        memory,
        store_u32,
        add_u32,
        load_u32,
        vga(0x34),
        0xffff_fff0,
        0x10
    );
    got_expected_and(
        got,
        0,
        rflags & (flags::CF | flags::ZF) == flags::CF | flags::ZF,
    )
}

fn add64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, rflags) = read_modify_write!(
        memory,
        store_u64,
        add_u64,
        load_u64,
        vga(0x38),
        i64::MAX as u64,
        1
    );
    let wanted = flags::OF | flags::SF;
    got_expected_and(got, 1 << 63, rflags & (wanted | flags::CF) == wanted)
}

fn or8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, _) = read_modify_write!(memory, store_u8, or_u8, load_u8, vga(0x40), 0x81, 0x18);
    got_expected(got, 0x99)
}

fn or32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, _) = read_modify_write!(
        memory,
        store_u32,
        or_u32,
        load_u32,
        vga(0x44),
        0xf000_000f,
        0x0ff0_0f00
    );
    got_expected(got, 0xfff0_0f0f)
}

fn or64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, rflags) = read_modify_write!(
        memory,
        store_u64,
        or_u64,
        load_u64,
        vga(0x48),
        0x8000_0000_0000_0001,
        0x0000_0001_0000_0000
    );
    got_expected_and(got, 0x8000_0001_0000_0001, rflags & flags::SF != 0)
}

fn and16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, _) = read_modify_write!(
        memory,
        store_u16,
        and_u16,
        load_u16,
        vga(0x50),
        0xff0f,
        0x0ff0
    );
    got_expected(got, 0x0f00)
}

fn and32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, _) = read_modify_write!(
        memory,
        store_u32,
        and_u32,
        load_u32,
        vga(0x54),
        0xffff_00ff,
        0x0f0f_0f0f
    );
    got_expected(got, 0x0f0f_000f)
}

fn and64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (got, rflags) = read_modify_write!(
        memory,
        store_u64,
        and_u64,
        load_u64,
        vga(0x58),
        0xaaaa_aaaa_aaaa_aaaa,
        0x5555_5555_5555_5555
    );
    got_expected_and(got, 0, rflags & flags::ZF != 0)
}

/// Stores `initial`, runs one exchanging instruction with `operand`, loads the memory;
/// returns (old value returned in the register, memory afterwards).
macro_rules! exchange {
    ($memory:expr, $store:ident, $op:ident, $load:ident, $address:expr, $initial:expr, $operand:expr) => {{
        let address = $address;
        // SAFETY: see the module documentation.
        unsafe {
            $memory.$store(address, $initial);
            let old = $memory.$op(address, $operand);
            (u64::from(old), u64::from($memory.$load(address)))
        }
    }};
}

fn xchg8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(memory, store_u8, xchg_u8, load_u8, vga(0x60), 0x11, 0x22);
    old_and_memory(old, now, 0x11, 0x22)
}

fn xchg32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u32,
        xchg_u32,
        load_u32,
        vga(0x64),
        0x1111_1111,
        0x2222_2222
    );
    old_and_memory(old, now, 0x1111_1111, 0x2222_2222)
}

fn xchg64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u64,
        xchg_u64,
        load_u64,
        vga(0x68),
        0x1111_2222_3333_4444,
        0x5555_6666_7777_8888
    );
    old_and_memory(old, now, 0x1111_2222_3333_4444, 0x5555_6666_7777_8888)
}

fn lock_xadd16(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u16,
        lock_xadd_u16,
        load_u16,
        vga(0x70),
        0xfffe,
        3
    );
    old_and_memory(old, now, 0xfffe, 1)
}

fn lock_xadd32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u32,
        lock_xadd_u32,
        load_u32,
        vga(0x74),
        100,
        23
    );
    old_and_memory(old, now, 100, 123)
}

fn lock_xadd64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u64,
        lock_xadd_u64,
        load_u64,
        vga(0x78),
        0x0000_0001_ffff_ffff,
        1
    );
    old_and_memory(old, now, 0x0000_0001_ffff_ffff, 0x0000_0002_0000_0000)
}

/// Stores `initial`, then LOCK CMPXCHG expecting `initial` (must swap in `new`), then
/// expecting `initial` again (must fail and return `new`), then loads the memory.
macro_rules! compare_exchange {
    ($memory:expr, $store:ident, $op:ident, $load:ident, $address:expr, $initial:expr, $new:expr, $other:expr) => {{
        let address = $address;
        // SAFETY: see the module documentation.
        let (first, second, now) = unsafe {
            $memory.$store(address, $initial);
            let first = $memory.$op(address, $initial, $new);
            let second = $memory.$op(address, $initial, $other);
            (first, second, $memory.$load(address))
        };
        let passed = first == (true, $initial) && second == (false, $new) && now == $new;
        Outcome {
            passed,
            first: ("returned", u64::from(second.1)),
            second: ("memory", u64::from(now)),
        }
    }};
}

fn lock_cmpxchg8(memory: &mut TrappedMemory, _: u32) -> Outcome {
    compare_exchange!(
        memory,
        store_u8,
        lock_cmpxchg_u8,
        load_u8,
        vga(0x80),
        0x05,
        0x09,
        0x07
    )
}

fn lock_cmpxchg32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    compare_exchange!(
        memory,
        store_u32,
        lock_cmpxchg_u32,
        load_u32,
        vga(0x84),
        0x0505_0505,
        0x0909_0909,
        7
    )
}

fn lock_cmpxchg64(memory: &mut TrappedMemory, _: u32) -> Outcome {
    compare_exchange!(
        memory,
        store_u64,
        lock_cmpxchg_u64,
        load_u64,
        vga(0x88),
        0x0505_0505_0505_0505,
        0x0909_0909_0909_0909,
        7
    )
}

fn rep_stosb(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // 100 bytes from an odd address; the bytes just before and after stay 0.
    let start = vga(0x101);
    // SAFETY: see the module documentation.
    let (before, first, last, after) = unsafe {
        memory.store_u8(start - 1, 0);
        memory.store_u8(start + 100, 0);
        memory.rep_stosb(start, 0xc3, 100);
        (
            memory.load_u8(start - 1),
            memory.load_u8(start),
            memory.load_u8(start + 99),
            memory.load_u8(start + 100),
        )
    };
    Outcome {
        passed: first == 0xc3 && last == 0xc3 && before == 0 && after == 0,
        first: ("first", u64::from(first)),
        second: ("last", u64::from(last)),
    }
}

fn rep_stosq(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // 8 quadwords; the quadword after them stays 0.
    let start = vga(0x180);
    let value = 0x0123_4567_89ab_cdef;
    // SAFETY: see the module documentation.
    let (first, last, after) = unsafe {
        memory.store_u64(start + 64, 0);
        memory.rep_stosq(start, value, 8);
        (
            memory.load_u64(start),
            memory.load_u64(start + 56),
            memory.load_u64(start + 64),
        )
    };
    Outcome {
        passed: first == value && last == value && after == 0,
        first: ("first", first),
        second: ("last", last),
    }
}

/// Where the REP MOVSB checks copy to and from, and its 64-byte pattern.
const COPY_AREA: usize = 0x200;
const COPY_BYTES: usize = 64;

fn copy_pattern() -> [u8; COPY_BYTES] {
    let mut pattern = [0u8; COPY_BYTES];
    for (index, byte) in pattern.iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(7).wrapping_add(0x31);
    }
    pattern
}

fn rep_movsb_to_vga(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let pattern = copy_pattern();
    let destination = vga(COPY_AREA);
    // SAFETY: see the module documentation; `pattern` is a local the copy only reads.
    let (first, last) = unsafe {
        memory.rep_movsb(destination, pattern.as_ptr() as usize, COPY_BYTES);
        (
            memory.load_u64(destination),
            memory.load_u64(destination + COPY_BYTES - 8),
        )
    };
    let expected_first = u64::from_le_bytes(pattern[..8].try_into().unwrap_or_default());
    let expected_last =
        u64::from_le_bytes(pattern[COPY_BYTES - 8..].try_into().unwrap_or_default());
    Outcome {
        passed: first == expected_first && last == expected_last,
        first: ("first", first),
        second: ("last", last),
    }
}

fn rep_movsb_from_vga(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // Reads back what rep-movsb-to-vga wrote.
    let mut copy = [0u8; COPY_BYTES];
    // SAFETY: see the module documentation; `copy` is a local only the copy writes.
    unsafe { memory.rep_movsb(copy.as_mut_ptr() as usize, vga(COPY_AREA), COPY_BYTES) };
    let mismatches = copy
        .iter()
        .zip(copy_pattern())
        .filter(|(a, b)| **a != *b)
        .count();
    Outcome {
        passed: mismatches == 0,
        first: ("mismatched-bytes", mismatches as u64),
        second: ("bytes", COPY_BYTES as u64),
    }
}

fn split_mov32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: see the module documentation; both VGA pages are device memory.
    let (got, low, high) = unsafe {
        memory.store_u32(SPLIT, 0xa1b2_c3d4);
        (
            memory.load_u32(SPLIT),
            memory.load_u16(SPLIT),
            memory.load_u16(SPLIT + 2),
        )
    };
    got_expected_and(u64::from(got), 0xa1b2_c3d4, low == 0xc3d4 && high == 0xa1b2)
}

fn split_lock_xadd32(memory: &mut TrappedMemory, _: u32) -> Outcome {
    let (old, now) = exchange!(
        memory,
        store_u32,
        lock_xadd_u32,
        load_u32,
        SPLIT,
        0x0000_ffff,
        0x0001_0001
    );
    old_and_memory(old, now, 0x0000_ffff, 0x0002_0000)
}

fn page_fault_recorded(_: &mut TrappedMemory, _: u32) -> Outcome {
    // Not trapped memory: checks that guest-support's IDT records a #PF (read of a
    // not-present page: error code 0) with the faulting address in CR2.
    // SAFETY: the load of an unmapped address has no side effect; the IDT is installed.
    match unsafe { idt::probe_load_u8(UNMAPPED) } {
        Ok(value) => Outcome {
            passed: false,
            first: ("no-fault-value", u64::from(value)),
            second: ("cr2", 0),
        },
        Err(record) => Outcome {
            passed: record.vector == vector::PAGE_FAULT
                && record.error_code == 0
                && record.cr2 == UNMAPPED as u64,
            first: ("vector", u64::from(record.vector)),
            second: ("cr2", record.cr2),
        },
    }
}

fn xmm_survive_exit(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: VGA text memory is trapped and the demo's to write.
    let changed = unsafe { vector_checks::xmm_survive_exit(memory, vga(0x300)) };
    Outcome {
        passed: changed == 0,
        first: ("changed-bytes", changed),
        second: ("registers", 16),
    }
}

fn movdqu_round_trip(memory: &mut TrappedMemory, _: u32) -> Outcome {
    // SAFETY: as above, 32 bytes of VGA text memory.
    let (loaded, stored) = unsafe { vector_checks::movdqu_round_trip(memory, vga(0x340)) };
    Outcome {
        passed: loaded == 0 && stored == 0,
        first: ("load-wrong", loaded),
        second: ("store-wrong", stored),
    }
}

fn ymm_load_and_survive(memory: &mut TrappedMemory, _: u32) -> Outcome {
    if !vector_checks::enable_avx() {
        return Outcome {
            passed: false,
            first: ("avx", 0),
            second: ("xsave", 0),
        };
    }
    // SAFETY: AVX is on; 32 bytes of VGA text memory.
    let (wrong, changed) = unsafe { vector_checks::ymm_load_and_survive(memory, vga(0x380)) };
    Outcome {
        passed: wrong == 0 && changed == 0,
        first: ("ymm3-wrong", wrong),
        second: ("others-changed", changed),
    }
}
