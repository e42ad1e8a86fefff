//! Tests of the capability table: construction from config and memory map,
//! the hypervisor hole, and every refusal of `check`.

use super::*;

const R: u64 = Rights::READ;
const W: u64 = Rights::WRITE;
const C: u64 = Rights::CMPXCHG;
const MIB: u64 = 1 << 20;

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(start, end).unwrap()
}

/// A Bochs-like memory map: low RAM up to 0x9fc00, then 1 MiB to 256 MiB.
fn ram() -> [PhysRange; 2] {
    [range(0, 0x9_fc00), range(MIB, 256 * MIB)]
}

fn hypervisor() -> PhysRange {
    range(MIB, 32 * MIB)
}

fn default_table() -> CapabilityTable {
    CapabilityTable::new(&Config::defaults(), &ram(), hypervisor()).unwrap()
}

#[test]
fn default_grants_cover_ram_lapic_and_vga_but_not_the_hypervisor() {
    let table = default_table();
    assert_eq!(
        table.entries(),
        &[
            Capability {
                range: range(0, 0x9_f000),
                rights: Rights::ALL
            },
            Capability {
                range: range(32 * MIB, 256 * MIB),
                rights: Rights::ALL
            },
            Capability {
                range: PhysRange::LAPIC,
                rights: Rights::ALL
            },
            Capability {
                range: PhysRange::VGA_TEXT,
                rights: Rights::ALL
            },
        ]
    );
    assert_eq!(table.check_page(0, R), Ok(()));
    assert_eq!(table.check_page(0x9_e000, R | W | C), Ok(()));
    assert_eq!(table.check_page(32 * MIB, W), Ok(()));
    assert_eq!(table.check_page(256 * MIB - 4096, C), Ok(()));
    assert_eq!(table.check_page(0xfee0_0000, R | W), Ok(()));
    assert_eq!(table.check_page(0xb_8000, R), Ok(()));
    assert_eq!(table.check_page(0xb_f000, W), Ok(()));
}

#[test]
fn hypervisor_memory_is_refused() {
    let table = default_table();
    assert_eq!(table.check_page(MIB, R), Err(SyscallError::NoCapability));
    assert_eq!(
        table.check_page(32 * MIB - 4096, R),
        Err(SyscallError::NoCapability)
    );
    // A range reaching into it from below or above.
    assert_eq!(table.check(MIB - 8, 16, R), Err(SyscallError::NoCapability));
    assert_eq!(
        table.check(32 * MIB - 1, 2, R),
        Err(SyscallError::NoCapability)
    );
}

#[test]
fn explicit_grants_over_the_hypervisor_are_cut() {
    let config = Config::parse("cordon.cap=0-fffffff:rwc").unwrap();
    let table = CapabilityTable::new(&config, &[], range(MIB + 0x10, 2 * MIB - 3)).unwrap();
    assert_eq!(
        table.entries(),
        &[
            Capability {
                range: range(0, MIB),
                rights: Rights::ALL
            },
            Capability {
                range: range(2 * MIB, 256 * MIB),
                rights: Rights::ALL
            },
        ]
    );
    assert_eq!(table.check_page(MIB, R), Err(SyscallError::NoCapability));
    assert_eq!(
        table.check_page(2 * MIB - 4096, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(table.check_page(2 * MIB, R), Ok(()));
}

#[test]
fn ungranted_memory_and_missing_rights_are_refused() {
    let table = default_table();
    assert_eq!(
        table.check_page(0xf000_0000, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(0xa_0000, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(256 * MIB, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(0x9_f000, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(0xfee0_1000, R),
        Err(SyscallError::NoCapability)
    );

    let config = Config::parse("cordon.cap=guest-ram:r,vga:rw").unwrap();
    let table = CapabilityTable::new(&config, &ram(), hypervisor()).unwrap();
    assert_eq!(table.check_page(64 * MIB, R), Ok(()));
    assert_eq!(
        table.check_page(64 * MIB, W),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(64 * MIB, R | C),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(table.check_page(0xb_8000, R | W), Ok(()));
    assert_eq!(
        table.check_page(0xb_8000, C),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(0xfee0_0000, R),
        Err(SyscallError::NoCapability)
    );
}

#[test]
fn a_range_may_span_adjacent_entries_but_not_a_gap() {
    let config = Config::parse("cordon.cap=1000-1fff:rw,2000-2fff:r,4000-4fff:r").unwrap();
    let table = CapabilityTable::new(&config, &[], hypervisor()).unwrap();
    assert_eq!(table.check(0x1ff8, 16, R), Ok(()));
    assert_eq!(table.check(0x1ff8, 16, W), Err(SyscallError::NoCapability));
    assert_eq!(table.check(0x2ff8, 16, R), Err(SyscallError::NoCapability));
    assert_eq!(table.check(0x1000, 0x2000, R), Ok(()));
    assert_eq!(
        table.check(0x1000, 0x2001, R),
        Err(SyscallError::NoCapability)
    );
}

#[test]
fn bad_arguments() {
    let table = default_table();
    assert_eq!(table.check(0, 0, R), Err(SyscallError::BadArgument));
    assert_eq!(
        table.check(u64::MAX - 4095, 4097, R),
        Err(SyscallError::BadArgument)
    );
    assert_eq!(table.check(u64::MAX, 1, R), Err(SyscallError::BadArgument));
    assert_eq!(table.check(0, 4096, 0), Err(SyscallError::BadArgument));
    assert_eq!(table.check(0, 4096, 1 << 3), Err(SyscallError::BadArgument));
    assert_eq!(table.check_page(0x10, R), Err(SyscallError::BadArgument));
}

#[test]
fn nothing_at_or_above_the_physical_limit_is_granted() {
    let huge = [range(0xf_ffff_ffff_f000, u64::MAX)];
    let table = CapabilityTable::new(&Config::defaults(), &huge, hypervisor()).unwrap();
    assert_eq!(table.check_page(0xf_ffff_ffff_f000, R), Ok(()));
    assert_eq!(
        table.check_page(1 << 52, R),
        Err(SyscallError::NoCapability)
    );
    assert_eq!(
        table.check_page(u64::MAX - 8191, R),
        Err(SyscallError::NoCapability)
    );
    // The very last page: its end is 2^64, which does not fit.
    assert_eq!(
        table.check_page(u64::MAX - 4095, R),
        Err(SyscallError::BadArgument)
    );
}

#[test]
fn too_many_ram_ranges_is_an_error() {
    let many: std::vec::Vec<PhysRange> = (0..MAX_CAPABILITIES as u64)
        .map(|i| range(64 * MIB + i * 0x2000, 64 * MIB + i * 0x2000 + 0x1000))
        .collect();
    // Three default grants: RAM pieces plus LAPIC and VGA overflow the table.
    assert_eq!(
        CapabilityTable::new(&Config::defaults(), &many, hypervisor()),
        Err(CapabilityTableError::TooManyEntries)
    );
    let fits = &many[..MAX_CAPABILITIES - 2];
    assert!(CapabilityTable::new(&Config::defaults(), fits, hypervisor()).is_ok());
}
