//! The panic handler: logs the message and location, then exits.

/// Exit code of a service that panicked.
const PANIC_EXIT_CODE: u64 = 0xdead;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::log!("service panicked: {info}");
    crate::syscall::exit(PANIC_EXIT_CODE)
}
