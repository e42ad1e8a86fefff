//! The bootable Cordon core: early initialisation on the boot CPU, the optional
//! boot self-test, then `kernel::start`. Entered from `arch`'s 32-bit multiboot2
//! entry once the CPU is in 64-bit mode.
#![no_std]
#![no_main]

use kernel::arch;
use kernel::{emergency_println, println};

/// Kernel command-line switch that makes the core execute `ud2` after early
/// boot, to prove the exception reports work (the machine then stops with
/// success).
const SELFTEST_UD2: &str = "cordon.selftest=ud2";
const INVALID_OPCODE_VECTOR: u8 = 6;

/// Called by the 64-bit entry with the multiboot2 loader's EAX and EBX.
#[unsafe(no_mangle)]
extern "C" fn cordon_main(multiboot_magic: u32, multiboot_address: u32) -> ! {
    // SAFETY: RDTSC is available on every x86-64 CPU and has no side effects.
    let entry_tsc = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: called once by the entry code on the boot CPU with the loader's
    // registers.
    let boot_info = match unsafe { arch::init(multiboot_magic, multiboot_address) } {
        Ok(boot_info) => boot_info,
        Err(error) => {
            println!("cordon: FATAL unusable boot information: {error:?}");
            arch::shutdown(false);
        }
    };
    println!(
        "cordon: early boot done (entered 64-bit mode at tsc {entry_tsc}); command line \"{}\"",
        boot_info.command_line()
    );
    println!(
        "cordon: kernel image {:#x}-{:#x}, boot information at {:#x}, {} free frames in the \
         hypervisor region",
        boot_info.kernel_image.start,
        boot_info.kernel_image.end,
        boot_info.multiboot_address,
        boot_info.frames.free_frames()
    );
    for module in boot_info.modules() {
        println!(
            "cordon: module \"{}\" at {:#x}-{:#x}",
            module.name, module.range.start, module.range.end
        );
    }
    if boot_info
        .command_line()
        .split_whitespace()
        .any(|word| word == SELFTEST_UD2)
    {
        println!("cordon: selftest: executing ud2, expecting an exception report");
        arch::idt::expect_selftest_exception(INVALID_OPCODE_VECTOR);
        // SAFETY: `ud2` only raises #UD, which the armed handler turns into a
        // report and a successful machine stop.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
    kernel::start(boot_info)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    emergency_println!("cordon: PANIC {info}");
    arch::shutdown(false)
}
