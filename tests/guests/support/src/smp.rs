//! Starting the application processors the way an OS does: the AP trampoline in low
//! memory (smp.s), INIT-SIPI-SIPI through the xAPIC interrupt command register (trapped
//! memory, so every ICR access is an emulated, counted instruction) or SIPI-SIPI alone,
//! per-AP stacks, and
//! the 64-bit entry that hands each AP to the guest's own function. Also the count of
//! trapped instructions the APs made, which the BSP adds to its own for the DONE call.

use core::sync::atomic::{AtomicU32, Ordering};

use spin::Once;

use crate::cpu;
use crate::idt::{self, ExceptionRecord};
use crate::platform::LAPIC_BASE;
use crate::trapped::TrappedMemory;

/// Physical page the AP trampoline is copied to (below 1 MiB, in guest RAM, clear
/// of the core's AP page 0x7000 and of the multiboot2 information at 0x10000).
pub const TRAMPOLINE: usize = 0x8000;
/// The SIPI vector that starts an AP at [`TRAMPOLINE`].
pub const SIPI_VECTOR: u32 = (TRAMPOLINE >> 12) as u32;
/// Most APs that get a slot (the rest park in the trampoline).
pub const MAX_APS: usize = 7;
/// Stack of each AP.
pub const AP_STACK_SIZE: usize = 32 * 1024;

/// Interrupt command register, low half (writing it sends the IPI).
pub const LAPIC_ICR_LOW: usize = LAPIC_BASE + 0x300;
/// Interrupt command register, high half (destination in bits 31:24).
pub const LAPIC_ICR_HIGH: usize = LAPIC_BASE + 0x310;
/// ICR: delivery mode INIT, level assert, physical destination (ICR high bits 31:24).
pub const ICR_INIT: u32 = 0x0000_4500;
/// ICR: delivery mode start-up, physical destination (OR the vector in).
pub const ICR_SIPI: u32 = 0x0000_4600;
/// ICR delivery status: send pending.
pub const ICR_SEND_PENDING: u32 = 1 << 12;

/// Ticks to wait after INIT (10 ms at Bochs's 50 MIPS) and after each SIPI (200 us).
const INIT_DELAY_TICKS: u64 = 500_000;
const SIPI_DELAY_TICKS: u64 = 10_000;
/// Most ICR reads while waiting for a send to finish.
const ICR_POLLS: u32 = 1000;

/// What an AP runs once in 64-bit mode: gets its slot (1, 2, ...), never returns.
pub type ApEntry = fn(u32) -> !;

static AP_ENTRY: Once<ApEntry> = Once::new();
static AP_TRAPPED: AtomicU32 = AtomicU32::new(0);

core::arch::global_asm!(
    include_str!("smp.s"),
    TRAMPOLINE = const TRAMPOLINE,
    MAX_APS = const MAX_APS,
    STACK_SIZE = const AP_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static guest_ap_trampoline_start: u8;
    static guest_ap_trampoline_end: u8;
}

/// Why the APs could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    /// The ICR still showed "send pending" after many reads.
    IcrStuck,
    /// The trampoline does not fit its page.
    TrampolineTooLarge,
}

/// Adds trapped instructions an AP made (call once per AP, when it is done).
pub fn add_ap_trapped(instructions: u32) {
    AP_TRAPPED.fetch_add(instructions, Ordering::SeqCst);
}

/// Trapped instructions all APs reported so far.
pub fn ap_trapped() -> u32 {
    AP_TRAPPED.load(Ordering::SeqCst)
}

/// Spins until `ticks` TSC ticks have passed.
pub fn delay_ticks(ticks: u64) {
    let start = cpu::rdtsc_fenced();
    while cpu::rdtsc_fenced().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

fn wait_for_send(memory: &mut TrappedMemory) -> Result<(), SmpError> {
    for _ in 0..ICR_POLLS {
        // SAFETY: the LAPIC page is identity-mapped device memory no reference covers.
        if unsafe { memory.load_u32(LAPIC_ICR_LOW) } & ICR_SEND_PENDING == 0 {
            return Ok(());
        }
    }
    Err(SmpError::IcrStuck)
}

fn send_ipi(memory: &mut TrappedMemory, apic_id: u8, low: u32) -> Result<(), SmpError> {
    // SAFETY: as in `wait_for_send`.
    unsafe {
        memory.store_u32(LAPIC_ICR_HIGH, u32::from(apic_id) << 24);
        memory.store_u32(LAPIC_ICR_LOW, low);
    }
    wait_for_send(memory)
}

/// How the BSP wakes an AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupSequence {
    /// INIT, then two start-up IPIs (the MP specification's sequence).
    InitSipiSipi,
    /// Two start-up IPIs only, for APs known to wait for a SIPI already (Cordon's
    /// vCPUs start in wait-for-SIPI).
    SipiSipi,
}

/// Copies the trampoline to [`TRAMPOLINE`] and wakes each CPU of `apic_ids` with
/// `sequence` (physical destination, one AP after the other); each AP then runs
/// `entry` in 64-bit mode on its own stack. Returns once the IPIs are sent; the APs
/// report in on their own.
///
/// # Safety
/// Once per boot, on the BSP, after [`idt::install`], with the guests' identity map
/// live (the APs use guest_pml4) and nothing else using physical page [`TRAMPOLINE`];
/// `apic_ids` must not hold the BSP's own ID.
pub unsafe fn start_aps(
    memory: &mut TrappedMemory,
    apic_ids: &[u8],
    sequence: StartupSequence,
    entry: ApEntry,
) -> Result<(), SmpError> {
    let start = &raw const guest_ap_trampoline_start as usize;
    let end = &raw const guest_ap_trampoline_end as usize;
    let length = end.saturating_sub(start);
    if length > 4096 {
        return Err(SmpError::TrampolineTooLarge);
    }
    // SAFETY: the trampoline's bytes are in the guest image; page TRAMPOLINE is guest
    // RAM that the caller guarantees is unused, identity-mapped and writable.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE as *mut u8, length);
    }
    AP_ENTRY.call_once(|| entry);
    for &apic_id in apic_ids {
        if sequence == StartupSequence::InitSipiSipi {
            send_ipi(memory, apic_id, ICR_INIT)?;
            delay_ticks(INIT_DELAY_TICKS);
        }
        for _ in 0..2 {
            send_ipi(memory, apic_id, ICR_SIPI | SIPI_VECTOR)?;
            delay_ticks(SIPI_DELAY_TICKS);
        }
    }
    Ok(())
}

fn ap_unexpected_exception(_record: &ExceptionRecord) -> ! {
    cpu::halt_forever()
}

/// 64-bit entry of every AP (called by smp.s through guest_enter_long_mode).
#[unsafe(no_mangle)]
extern "C" fn guest_ap_main64(slot: u32, _unused: u32) -> ! {
    // The BSP built the IDT and chose its handler; this loads it on the AP.
    idt::install(ap_unexpected_exception);
    match AP_ENTRY.get() {
        Some(entry) => entry(slot),
        None => cpu::halt_forever(),
    }
}
