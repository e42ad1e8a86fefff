//! Memory the core touches on a service's behalf: copies to and from user and
//! physical memory, and the per-CPU two-page window in which a compare-exchange
//! that splits two guest pages becomes one locked instruction.

use crate::memory;
use crate::policy::cmpxchg_check::{CheckedCmpxchg, CmpxchgWidth};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// Kernel virtual address of the windows: the last 2 MiB of the first
/// gigabyte, taken over from the boot identity map.
const WINDOWS: u64 = 0x3fe0_0000;
const DIRECTORY_SLOT: usize = 511;
const PRESENT_WRITABLE: u64 = 0b11;
const UNCACHED: u64 = (1 << 3) | (1 << 4);
const NO_EXECUTE: u64 = 1 << 63;

static WINDOW_TABLE: spin::Once<u64> = spin::Once::new();

/// Installs the window page table in the kernel's first page directory
/// (shared by the core's and every service's address space).
pub fn init() -> Option<()> {
    let table = memory::zeroed_frame()?;
    memory::table(crate::arch::kernel_page_directories())[DIRECTORY_SLOT] =
        table | PRESENT_WRITABLE;
    crate::regs::invlpg(WINDOWS);
    WINDOW_TABLE.call_once(|| table);
    Some(())
}

/// Maps `first` and `second` next to each other in this CPU's window and
/// returns the window's address.
fn map_pair(cpu: usize, first: u64, second: Option<u64>) -> u64 {
    let table = memory::table(*WINDOW_TABLE.get().expect("windows are set up at boot"));
    let slot = cpu * 2;
    let window = WINDOWS + slot as u64 * 4096;
    for (n, page) in [Some(first), second].into_iter().enumerate() {
        table[slot + n] = match page {
            Some(page) => {
                let cache = if crate::is_ram(page) { 0 } else { UNCACHED };
                page | PRESENT_WRITABLE | cache | NO_EXECUTE
            }
            None => 0,
        };
        crate::regs::invlpg(window + n as u64 * 4096);
    }
    window
}

/// One `lock cmpxchg` of the width of `$value_type` through `$accumulator`.
macro_rules! locked_cmpxchg {
    ($address:expr, $expected:expr, $new:expr, $value_type:ty, $accumulator:tt, $modifier:literal) => {{
        let mut found = $expected as $value_type;
        let swapped: u8;
        // SAFETY: `address` lies in this CPU's window, where the pages of the
        // checked request are mapped writable; the access stays within them.
        unsafe {
            asm!(
                concat!("lock cmpxchg [{a}], {n", $modifier, "}"),
                "sete {s}",
                a = in(reg) $address,
                n = in(reg) $new as $value_type,
                s = out(reg_byte) swapped,
                inout($accumulator) found,
                options(nostack),
            );
        }
        (swapped != 0, u128::from(found))
    }};
}

/// Performs a checked compare-exchange as one locked instruction; returns
/// whether it stored and the value found (low `width` bytes).
pub fn compare_exchange(cpu: usize, request: &CheckedCmpxchg) -> (bool, [u8; 16]) {
    let window = map_pair(cpu, request.first_page, request.second_page);
    let address = window + request.offset;
    let expected = u128::from_le_bytes(request.expected);
    let new = u128::from_le_bytes(request.new);
    let (swapped, found) = match request.width {
        CmpxchgWidth::Byte => locked_byte(address, expected, new),
        CmpxchgWidth::Word => locked_cmpxchg!(address, expected, new, u16, "ax", ":x"),
        CmpxchgWidth::Dword => locked_cmpxchg!(address, expected, new, u32, "eax", ":e"),
        CmpxchgWidth::Qword => locked_cmpxchg!(address, expected, new, u64, "rax", ""),
        CmpxchgWidth::Oword => locked16(address, expected, new),
    };
    map_pair(cpu, 0, None);
    (swapped, found.to_le_bytes())
}

fn locked_byte(address: u64, expected: u128, new: u128) -> (bool, u128) {
    let mut found = expected as u8;
    let swapped: u8;
    // SAFETY: as in `locked_cmpxchg`.
    unsafe {
        asm!(
            "lock cmpxchg [{a}], {n}",
            "sete {s}",
            a = in(reg) address,
            n = in(reg_byte) new as u8,
            s = out(reg_byte) swapped,
            inout("al") found,
            options(nostack),
        );
    }
    (swapped != 0, u128::from(found))
}

fn locked16(address: u64, expected: u128, new: u128) -> (bool, u128) {
    let (mut low, mut high) = (expected as u64, (expected >> 64) as u64);
    let swapped: u8;
    // SAFETY: the checked request is 16-byte aligned within one mapped page;
    // rbx is saved and restored around the instruction (LLVM reserves it).
    unsafe {
        asm!(
            "xchg rbx, {nl}",
            "lock cmpxchg16b [{a}]",
            "sete {s}",
            "xchg rbx, {nl}",
            a = in(reg) address,
            nl = inout(reg) new as u64 => _,
            s = out(reg_byte) swapped,
            inout("rax") low,
            inout("rdx") high,
            in("rcx") (new >> 64) as u64,
            options(nostack),
        );
    }
    (swapped != 0, (u128::from(high) << 64) | u128::from(low))
}

const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
static SMAP: AtomicBool = AtomicBool::new(false);

/// Turns on SMEP and SMAP on this CPU where supported: the core then never
/// executes service code and touches service memory only inside
/// [`copy_user`].
pub fn protect_supervisor() {
    let features = crate::regs::cpuid(7, 0)[1];
    let mut cr4 = crate::regs::cr4();
    if features & (1 << 7) != 0 {
        cr4 |= CR4_SMEP;
    }
    if features & (1 << 20) != 0 {
        cr4 |= CR4_SMAP;
        SMAP.store(true, Ordering::Relaxed);
    }
    // SAFETY: the core executes no user pages and reaches user memory only
    // through `copy_user`, which opens SMAP around the copy.
    unsafe { crate::regs::write_cr4(cr4) };
}

/// Copies `length` bytes to or from service memory.
///
/// # Safety
/// As for [`copy_bytes`]; one side is a checked range of the current
/// service's user memory.
pub unsafe fn copy_user(from: u64, to: u64, length: u64) {
    let smap = SMAP.load(Ordering::Relaxed);
    // SAFETY: STAC/CLAC exist when SMAP was enabled; between them only the
    // copy runs.
    unsafe {
        if smap {
            asm!("stac", options(nomem, nostack));
        }
        copy_bytes(from, to, length);
        if smap {
            asm!("clac", options(nomem, nostack));
        }
    }
}

/// Copies `length` bytes between two addresses the core may access.
///
/// # Safety
/// Both ranges are mapped for the access; they may be written concurrently by
/// another party (the copy is a plain `rep movsb`, no Rust reference exists).
pub unsafe fn copy_bytes(from: u64, to: u64, length: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("rep movsb", inout("rsi") from => _, inout("rdi") to => _, inout("rcx") length => _, options(nostack))
    };
}

/// Copies `bytes` to physical `frame` (identity-mapped hypervisor memory).
///
/// # Safety
/// `frame` is a frame the core owns or lends to the service, and `bytes` fits in it.
pub unsafe fn copy_to_physical(frame: u64, bytes: &[u8]) {
    // SAFETY: per the caller.
    unsafe { copy_bytes(bytes.as_ptr() as u64, frame, bytes.len() as u64) };
}
