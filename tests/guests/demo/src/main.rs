//! The demo guest binary: 32-bit checks (phase32.s), then 64-bit checks and the store
//! figure, one line each on COM1, a summary, `demo: done pass|fail`, the `RESULT:` line
//! the boot tool judges, and the end of the run (DONE hypercall under Cordon, Bochs
//! magic breakpoint natively).
#![no_std]
#![no_main]

mod checks64;
mod entry32;
mod figure;
mod vector_checks;

use core::panic::PanicInfo;

use demo_guest::phase32;
use demo_guest::report::{ResultLine, Tally, done_line};
use guest_support::cpu;
use guest_support::idt::{self, ExceptionRecord};
use guest_support::trapped::TrappedMemory;
use guest_support::{serial, serial_println};

// The mem* symbols libcore needs come from `baremetal`.
use baremetal as _;

/// 64-bit entry, called by guest-support's long-mode switch.
#[unsafe(no_mangle)]
extern "C" fn guest_main64(multiboot_magic: u32, _multiboot_info: u32) -> ! {
    serial::init();
    idt::install(unexpected_exception);
    serial_println!("demo: 64-bit mode reached");

    let mut tally = Tally::default();
    let mut memory = TrappedMemory::new();

    let phase32 = entry32::results();
    memory.add_counted_elsewhere(phase32.trapped_instructions);
    for (index, record) in phase32.records.iter().enumerate() {
        if let Some(line) = phase32::line(index, record) {
            serial_println!("{line}");
            tally.record(&line);
        }
    }
    let complete = phase32.recorded as usize == phase32::CHECKS.len();
    if !complete {
        serial_println!(
            "demo: [32] recorded {} of {} checks",
            phase32.recorded,
            phase32::CHECKS.len()
        );
    }

    checks64::run(&mut memory, multiboot_magic, |line| {
        serial_println!("{line}");
        tally.record(&line);
    });

    serial_println!("{}", figure::measure(&mut memory));

    let trapped = memory.instructions();
    serial_println!("{}", tally.summary(trapped));
    let result = ResultLine::new(tally, complete);
    serial_println!("{}", done_line(result.passed()));
    serial_println!("{result}");
    cpu::finish(result.passed(), trapped)
}

fn unexpected_exception(record: &ExceptionRecord) -> ! {
    serial_println!("{}", done_line(false));
    serial_println!(
        "RESULT: FAIL demo: unexpected exception vector={} error={:#x} rip={:#x} cr2={:#x}",
        record.vector,
        record.error_code,
        record.rip,
        record.cr2
    );
    cpu::finish(false, 0)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    serial_println!("{}", done_line(false));
    serial_println!("RESULT: FAIL demo: panic: {info}");
    cpu::finish(false, 0)
}
