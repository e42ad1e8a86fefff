//! The service entry point: `_start` receives `ServiceStart` in rdi/rsi/rdx/r8 on
//! the stack the core set, aligns the stack and calls the `main` that
//! [`entry!`](crate::entry!) declared.

use abi::ServiceStart;

unsafe extern "Rust" {
    /// Defined by `rt::entry!` in the service binary.
    safe fn __cordon_service_main(start: ServiceStart) -> !;
}

/// The ELF entry point.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "and rsp, -16",
        // The restart count arrives in r8 (rcx held the SYSRET address).
        "mov rcx, r8",
        "xor ebp, ebp",
        "call {enter}",
        "ud2",
        enter = sym enter,
    )
}

extern "C" fn enter(message_page: u64, cpu: u64, map_window: u64, restarts: u64) -> ! {
    __cordon_service_main(ServiceStart {
        message_page,
        cpu,
        map_window,
        restarts,
    })
}
