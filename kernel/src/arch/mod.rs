//! Early boot and the hardware basics the rest of the core builds on: the
//! multiboot2 entry and boot page tables, the COM1 console, per-CPU GDT/TSS,
//! the exception IDT, the frame allocator and the boot information.
//!
//! The frame allocator is pure logic and also compiles (and is tested) on the
//! host; everything else exists only in the bare-metal build.

pub mod frames;

#[cfg(feature = "bare-metal")]
mod boot;
#[cfg(feature = "bare-metal")]
mod boot_info;
#[cfg(feature = "bare-metal")]
mod cpu;
#[cfg(feature = "bare-metal")]
pub mod gdt;
#[cfg(feature = "bare-metal")]
pub mod idt;
#[cfg(feature = "bare-metal")]
pub mod serial;
#[cfg(feature = "bare-metal")]
pub mod take_once;

#[cfg(feature = "bare-metal")]
pub use boot::{BOOT_STACK_SIZE, kernel_page_directories, kernel_pml4};
#[cfg(feature = "bare-metal")]
pub use boot_info::{BootInfo, BootInfoError, BootModule, MemoryKind, MemoryRegion};
#[cfg(feature = "bare-metal")]
pub use cpu::{halt_forever, initial_apic_id, shutdown};

#[cfg(feature = "bare-metal")]
static BOOT_CPU_TABLES: take_once::TakeOnce<gdt::CpuTables> =
    take_once::TakeOnce::new(gdt::CpuTables::new());

#[cfg(feature = "bare-metal")]
static EXCEPTION_TABLE: spin::Once<idt::InterruptTable> = spin::Once::new();

/// Loads the shared exception IDT on the calling CPU (built on first use).
#[cfg(feature = "bare-metal")]
pub fn load_exception_table() {
    EXCEPTION_TABLE
        .call_once(idt::InterruptTable::with_exception_reports)
        .load();
}

/// Early initialisation on the boot CPU, in order: console, GDT/TSS, IDT, boot
/// information and frame allocator. Returns the boot information (with the boot
/// CPU's TSS and the frame allocator), or why it is unusable.
///
/// # Safety
/// Call once, on the boot CPU, with the registers the multiboot2 loader passed.
#[cfg(feature = "bare-metal")]
pub unsafe fn init(
    multiboot_magic: u32,
    multiboot_address: u32,
) -> Result<BootInfo, BootInfoError> {
    serial::init();
    let Some(tables) = BOOT_CPU_TABLES.take() else {
        panic!("arch::init called twice");
    };
    let boot_cpu_tss = tables.load();
    load_exception_table();
    // SAFETY: the caller passes the loader's registers unchanged.
    unsafe { BootInfo::parse(multiboot_magic, multiboot_address, boot_cpu_tss) }
}
