//! Physical addresses of the PC devices Cordon traps by default (local APIC, VGA text).

/// Physical base of the local APIC's MMIO page (xAPIC mode).
pub const LAPIC_BASE: usize = 0xfee0_0000;
/// Local APIC ID register (ID in bits 31:24).
pub const LAPIC_ID: usize = LAPIC_BASE + 0x20;
/// Local APIC version register (version 7:0, max LVT entry 23:16).
pub const LAPIC_VERSION: usize = LAPIC_BASE + 0x30;
/// Local APIC task-priority register.
pub const LAPIC_TPR: usize = LAPIC_BASE + 0x80;
/// First byte of VGA text memory.
pub const VGA_TEXT_BASE: usize = 0xb8000;
/// One past the last byte of the VGA text window Cordon traps.
pub const VGA_TEXT_END: usize = 0xc0000;
