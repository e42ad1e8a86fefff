//! What every experiment binary shares on bare metal: the console and exception set-up,
//! one line per check, the closing verdict (DONE hypercall with the trapped count of
//! all CPUs), and the panic handler.

use core::fmt;
use core::panic::PanicInfo;

use guest_support::idt::{self, ExceptionRecord};
use guest_support::smp::{self, StartupSequence};
use guest_support::trapped::TrappedMemory;
use guest_support::{acpi, cpu, serial, serial_println};
use spin::Once;

use crate::faults::Observed;
use crate::report::{ResultLine, Tally, verdict_word};

static GUEST_NAME: Once<&'static str> = Once::new();

fn guest_name() -> &'static str {
    GUEST_NAME.get().copied().unwrap_or("experiment")
}

/// Checks of one guest, printed as they are made.
#[derive(Debug)]
pub struct Checks {
    name: &'static str,
    tally: Tally,
}

impl Checks {
    /// Prints the check line `NAME: CHECK ok|FAIL (details)` and counts it.
    pub fn check(&mut self, check: &str, passed: bool, details: fmt::Arguments<'_>) -> bool {
        serial_println!(
            "{}: {check} {} ({details})",
            self.name,
            verdict_word(passed)
        );
        self.tally.record(passed);
        passed
    }

    /// The tally so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Prints the verdict and ends the run with `trapped` instructions (all CPUs).
    pub fn finish(self, trapped: u32) -> ! {
        let passed = self.tally.all_passed();
        serial_println!(
            "{}: {}/{} checks passed, trapped-instructions={trapped}",
            self.name,
            self.tally.passed,
            self.tally.total
        );
        serial_println!(
            "{}",
            ResultLine {
                guest: self.name,
                tally: self.tally
            }
        );
        cpu::finish(passed, trapped)
    }
}

/// Sets up the console and the exception table on the BSP and says hello.
pub fn begin(name: &'static str) -> Checks {
    GUEST_NAME.call_once(|| name);
    serial::init();
    idt::install(unexpected_exception);
    serial_println!(
        "{name}: 64-bit mode reached, under Cordon: {}",
        cpu::running_under_cordon()
    );
    Checks {
        name,
        tally: Tally::default(),
    }
}

/// Wakes `needed` APs of the MADT with SIPI-SIPI (Cordon parks its vCPUs in
/// wait-for-SIPI; see guest-support's smp) to run `entry` with their slot 1, 2, ...;
/// ends the run as a failure if the machine has fewer CPUs or the IPIs fail.
pub fn start_helper_cpus(
    checks: &mut Checks,
    memory: &mut TrappedMemory,
    needed: usize,
    entry: smp::ApEntry,
) {
    // SAFETY: the boot identity map covers the low 4 GiB; the ACPI tables are static.
    let cpus = match unsafe { acpi::find_madt() } {
        Ok(cpus) => cpus,
        Err(error) => fail_now(format_args!("no usable MADT: {error:?}")),
    };
    let bsp = cpu::initial_apic_id();
    let helpers: heapless::Vec<u8, { acpi::MAX_CPUS }> = cpus
        .iter()
        .map(|cpu| cpu.apic_id)
        .filter(|id| u32::from(*id) != bsp)
        .take(needed)
        .collect();
    if helpers.len() < needed {
        fail_now(format_args!(
            "needs {} CPUs, the MADT lists {} (run with --cpus {})",
            needed + 1,
            cpus.len(),
            needed + 1
        ));
    }
    // SAFETY: once, on the BSP, after `begin` (IDT), identity map live, page 0x8000
    // unused by this guest, the BSP's own ID filtered out.
    let sent = unsafe { smp::start_aps(memory, &helpers, StartupSequence::SipiSipi, entry) };
    checks.check(
        "start-helper-cpus",
        sent.is_ok(),
        format_args!("SIPI-SIPI to apic-ids {:?}: {sent:?}", helpers.as_slice()),
    );
}

/// Spins until `done()` or `timeout_ticks` TSC ticks passed; returns `done()`.
pub fn wait_until(timeout_ticks: u64, done: impl Fn() -> bool) -> bool {
    let start = cpu::rdtsc_fenced();
    while !done() {
        if cpu::rdtsc_fenced().wrapping_sub(start) > timeout_ticks {
            return done();
        }
        core::hint::spin_loop();
    }
    true
}

/// Ends the run at once as a failure (reason printed in the RESULT line).
pub fn fail_now(reason: fmt::Arguments<'_>) -> ! {
    serial_println!("RESULT: FAIL {}: {reason}", guest_name());
    cpu::finish(false, 0)
}

fn unexpected_exception(record: &ExceptionRecord) -> ! {
    fail_now(format_args!(
        "unexpected exception vector={} error={:#x} rip={:#x} cr2={:#x} apic-id={}",
        record.vector,
        record.error_code,
        record.rip,
        record.cr2,
        cpu::initial_apic_id()
    ))
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    fail_now(format_args!("panic: {info}"))
}

/// Runs `probe` (one access that may fault) between fenced TSC reads: the
/// exception taken or the value read back, and how long it took.
pub fn timed(probe: impl FnOnce() -> Result<u64, ExceptionRecord>) -> Observed {
    let start = cpu::rdtsc_fenced();
    let outcome = probe();
    let ticks = cpu::rdtsc_fenced().wrapping_sub(start);
    match outcome {
        Ok(value) => Observed {
            fault: None,
            value,
            ticks,
        },
        Err(record) => Observed {
            fault: Some((record.vector, record.error_code, record.cr2)),
            value: 0,
            ticks,
        },
    }
}
