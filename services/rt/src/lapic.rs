//! The one piece of local-APIC semantics a service applies: a guest write to
//! the xAPIC ICR that sends INIT is not passed to the hardware but handed to
//! the core (`init_cpu`), which puts the target vCPUs in the INIT state.
//! Other IPIs, SIPI included, go to the hardware as written.

use abi::syscall::INIT_ALL_EXCLUDING_SELF;

/// Guest-physical address of the ICR's low half (the write that sends).
pub const ICR_LOW: u64 = 0xfee0_0300;
/// Guest-physical address of the ICR's high half (the destination).
pub const ICR_HIGH: u64 = 0xfee0_0310;

const DELIVERY_MODE_SHIFT: u32 = 8;
const DELIVERY_INIT: u32 = 0b101;
const DESTINATION_LOGICAL: u32 = 1 << 11;
const LEVEL_ASSERT: u32 = 1 << 14;
const TRIGGER_LEVEL: u32 = 1 << 15;
const SHORTHAND_SHIFT: u32 = 18;

/// What an ICR write asks for, as far as the core is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrWrite {
    /// Not an INIT: write it to the hardware.
    PassThrough,
    /// An INIT level de-assert: a no-op on every CPU since the Pentium 4.
    InitDeassert,
    /// INIT to the CPU with this APIC ID, or to all but the sender
    /// ([`INIT_ALL_EXCLUDING_SELF`]): for the core's `init_cpu`.
    Init(u64),
}

/// Classifies a 4-byte write of `low` to the ICR, with `high` the current
/// ICR high half. Logical-destination INITs and the self / all-including-self
/// shorthands are passed through (the hardware resolves them).
pub fn classify_icr_write(low: u32, high: u32) -> IcrWrite {
    if (low >> DELIVERY_MODE_SHIFT) & 0b111 != DELIVERY_INIT {
        return IcrWrite::PassThrough;
    }
    if low & TRIGGER_LEVEL != 0 && low & LEVEL_ASSERT == 0 {
        return IcrWrite::InitDeassert;
    }
    match (low >> SHORTHAND_SHIFT) & 0b11 {
        0b00 if low & DESTINATION_LOGICAL == 0 => IcrWrite::Init(u64::from(high >> 24)),
        0b11 => IcrWrite::Init(INIT_ALL_EXCLUDING_SELF),
        _ => IcrWrite::PassThrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_to_one_cpu_names_its_apic_id() {
        assert_eq!(
            classify_icr_write(0x0000_4500, 0x0300_0000),
            IcrWrite::Init(3)
        );
        assert_eq!(
            classify_icr_write(0x0000_c500, 0x0100_0000),
            IcrWrite::Init(1)
        );
    }

    #[test]
    fn init_deassert_is_a_no_op() {
        assert_eq!(
            classify_icr_write(0x0000_8500, 0x0100_0000),
            IcrWrite::InitDeassert
        );
    }

    #[test]
    fn broadcast_init_and_other_ipis() {
        assert_eq!(
            classify_icr_write(0x000c_4500, 0),
            IcrWrite::Init(INIT_ALL_EXCLUDING_SELF)
        );
        assert_eq!(
            classify_icr_write(0x0000_4608, 0x0100_0000),
            IcrWrite::PassThrough
        );
        assert_eq!(classify_icr_write(0x0000_00ef, 0), IcrWrite::PassThrough);
        assert_eq!(
            classify_icr_write(0x0000_4d00, 0x0100_0000),
            IcrWrite::PassThrough
        );
        assert_eq!(classify_icr_write(0x0008_4500, 0), IcrWrite::PassThrough);
    }
}
