//! Small per-CPU operations: halting, stopping the machine, the CPU's APIC ID.

use core::arch::x86_64::__cpuid;

/// Stops this CPU for good: interrupts off, `hlt` in a loop (an NMI or SMI that
/// wakes it just halts again).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Ends the machine. Under Bochs, success is the magic breakpoint (the boot
/// tool's debugger script then quits with status 0) and failure the shutdown
/// port (status 1); under QEMU the `isa-debug-exit` device; on real hardware
/// the CPU halts. The console line before it says why.
pub fn shutdown(success: bool) -> ! {
    crate::emergency_println!(
        "cordon: machine stop ({})",
        if success { "success" } else { "failure" }
    );
    // SAFETY: stopping the machine is the point; the line above is already out
    // (the console writes synchronously).
    unsafe { baremetal::power::stop_machine(success) }
}

/// The initial local APIC ID of this CPU (CPUID leaf 1, EBX[31:24]).
pub fn initial_apic_id() -> u8 {
    // CPUID leaf 1 exists on every x86-64 CPU.
    let leaf = __cpuid(1);
    (leaf.ebx >> 24) as u8
}
