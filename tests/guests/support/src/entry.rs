//! The assembly every guest starts in: multiboot2 header, 32-bit entry, identity paging
//! and the switch to long mode (see `entry.s` for the symbols it needs and provides).

/// Size of the boot stack the 32-bit phase and `guest_main64` run on.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    include_str!("entry.s"),
    STACK_SIZE = const BOOT_STACK_SIZE,
    options(att_syntax)
);
