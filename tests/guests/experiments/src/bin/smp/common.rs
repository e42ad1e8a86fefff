//! The `smp` guest: AP start-up the way an OS does it. The BSP finds the CPUs in the
//! ACPI MADT, wakes the APs with INIT-SIPI-SIPI written to the xAPIC ICR (trapped: the
//! service emulates each write and passes it to the real LAPIC), and each AP goes real
//! -> protected -> long mode through guest-support's trampoline at 0x8000 and reports
//! the APIC ID it reads from the emulated LAPIC ID register against CPUID's. Passes when
//! every AP the MADT lists reported a consistent, distinct ID; x2APIC must be hidden.
//!
//! Shared by the `smp` binary (INIT-SIPI-SIPI) and `smp-sipi` (SIPI-SIPI only).

use core::sync::atomic::{AtomicU32, Ordering};

use experiments_guest::runtime;
use guest_support::acpi;
use guest_support::cpu;
use guest_support::platform::LAPIC_ID;
use guest_support::serial_println;
use guest_support::smp::{self, MAX_APS, StartupSequence};
use guest_support::trapped::TrappedMemory;

const NAME: &str = "smp";
/// CPUID.1:ECX bit 21: x2APIC.
const CPUID_X2APIC: u32 = 1 << 21;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// How long the BSP waits for the APs to report (TSC ticks).
const REPORT_TIMEOUT_TICKS: u64 = 300_000_000;
/// Marks an empty report slot.
const NO_REPORT: u32 = u32::MAX;

/// What one AP saw: its LAPIC ID register, CPUID's initial APIC ID, and flags.
struct ApReport {
    lapic_id: AtomicU32,
    cpuid_id: AtomicU32,
    /// Bit 0: long mode active; bit 1: x2APIC visible in CPUID.
    flags: AtomicU32,
}

static REPORTS: [ApReport; MAX_APS] = [const {
    ApReport {
        lapic_id: AtomicU32::new(NO_REPORT),
        cpuid_id: AtomicU32::new(NO_REPORT),
        flags: AtomicU32::new(0),
    }
}; MAX_APS];
static REPORTED: AtomicU32 = AtomicU32::new(0);

fn efer() -> u64 {
    // SAFETY: reading IA32_EFER has no side effect; it exists on every 64-bit CPU.
    unsafe { x86_msr_read(0xc000_0080) }
}

/// RDMSR.
///
/// # Safety
/// `msr` must exist.
unsafe fn x86_msr_read(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: forwarded from the caller; ring 0.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    u64::from(low) | (u64::from(high) << 32)
}

/// Each AP: read the emulated LAPIC ID, compare with CPUID, record, halt.
fn ap_main(slot: u32) -> ! {
    let mut memory = TrappedMemory::new();
    // SAFETY: the LAPIC page is identity-mapped device memory no reference covers.
    let lapic_id = unsafe { memory.load_u32(LAPIC_ID) } >> 24;
    let cpuid_id = cpu::initial_apic_id();
    let long_mode = efer() & EFER_LMA != 0;
    let x2apic = cpu::cpuid(1, 0).ecx & CPUID_X2APIC != 0;
    serial_println!(
        "{NAME}: ap slot={slot} lapic-id={lapic_id} cpuid-apic-id={cpuid_id} long-mode={long_mode} x2apic-visible={x2apic}"
    );
    smp::add_ap_trapped(memory.instructions());
    if let Some(report) = REPORTS.get(slot as usize - 1) {
        report.lapic_id.store(lapic_id, Ordering::SeqCst);
        report.cpuid_id.store(cpuid_id, Ordering::SeqCst);
        report.flags.store(
            u32::from(long_mode) | (u32::from(x2apic) << 1),
            Ordering::SeqCst,
        );
    }
    REPORTED.fetch_add(1, Ordering::SeqCst);
    cpu::halt_forever()
}

/// The BSP's part: checks, AP start-up with `sequence`, the reports.
pub fn bsp_main(sequence: StartupSequence) -> ! {
    let mut checks = runtime::begin(NAME);
    let mut memory = TrappedMemory::new();

    let ecx = cpu::cpuid(1, 0).ecx;
    checks.check(
        "x2apic-hidden",
        ecx & CPUID_X2APIC == 0,
        format_args!("cpuid.1:ecx={ecx:#x}"),
    );

    // SAFETY: the boot identity map covers the low 4 GiB; the ACPI tables are static.
    let cpus = match unsafe { acpi::find_madt() } {
        Ok(cpus) => cpus,
        Err(error) => runtime::fail_now(format_args!("no usable MADT: {error:?}")),
    };
    let bsp_cpuid = cpu::initial_apic_id();
    // SAFETY: as in `ap_main`.
    let bsp_lapic = unsafe { memory.load_u32(LAPIC_ID) } >> 24;
    checks.check(
        "bsp-lapic-id",
        bsp_lapic == bsp_cpuid,
        format_args!("lapic-id={bsp_lapic} cpuid-apic-id={bsp_cpuid}"),
    );
    let expected_aps = cpus.len().saturating_sub(1);
    checks.check(
        "madt",
        !cpus.is_empty() && expected_aps <= MAX_APS,
        format_args!("cpus={} expected-aps={expected_aps}", cpus.len()),
    );

    let ap_ids: heapless::Vec<u8, { acpi::MAX_CPUS }> = cpus
        .iter()
        .map(|cpu| cpu.apic_id)
        .filter(|id| u32::from(*id) != bsp_cpuid)
        .collect();
    let started = cpu::rdtsc_fenced();
    // SAFETY: once, on the BSP, IDT installed, identity map live, page 0x8000 unused,
    // the BSP's own ID filtered out.
    let sent = unsafe { smp::start_aps(&mut memory, &ap_ids, sequence, ap_main) };
    checks.check(
        "startup-ipis",
        sent.is_ok(),
        format_args!("{sequence:?} to apic-ids {:?}: {sent:?}", ap_ids.as_slice()),
    );
    while (REPORTED.load(Ordering::SeqCst) as usize) < expected_aps
        && cpu::rdtsc_fenced().wrapping_sub(started) < REPORT_TIMEOUT_TICKS
    {
        core::hint::spin_loop();
    }
    let elapsed = cpu::rdtsc_fenced().wrapping_sub(started);
    let reported = REPORTED.load(Ordering::SeqCst) as usize;
    checks.check(
        "aps-reported",
        reported == expected_aps,
        format_args!("reported={reported} expected={expected_aps} ticks={elapsed}"),
    );

    let mut seen = [bsp_lapic; MAX_APS + 1];
    for (index, report) in REPORTS.iter().enumerate().take(reported.min(MAX_APS)) {
        let lapic = report.lapic_id.load(Ordering::SeqCst);
        let cpuid = report.cpuid_id.load(Ordering::SeqCst);
        let flags = report.flags.load(Ordering::SeqCst);
        let in_madt = cpus.iter().any(|cpu| u32::from(cpu.apic_id) == lapic);
        let distinct = !seen[..=index].contains(&lapic);
        seen[index + 1] = lapic;
        checks.check(
            "ap",
            lapic == cpuid && in_madt && distinct && flags == 1,
            format_args!(
                "slot={} lapic-id={lapic} cpuid-apic-id={cpuid} in-madt={in_madt} distinct={distinct} long-mode={} x2apic-visible={}",
                index + 1,
                flags & 1 != 0,
                flags & 2 != 0
            ),
        );
    }
    let trapped = memory.instructions() + smp::ap_trapped();
    checks.finish(trapped)
}
