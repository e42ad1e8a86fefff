//! What the demo expects of the local APIC's ID and version registers.

/// Lowest local APIC version of an integrated (xAPIC) APIC.
pub const VERSION_MIN: u32 = 0x10;
/// Highest integrated-APIC version the SDM documents.
pub const VERSION_MAX: u32 = 0x15;
/// Fewest LVT entries minus one a local APIC reports (timer, LINT0, LINT1, error).
pub const MAX_LVT_MIN: u32 = 3;
/// Most LVT entries minus one (adds thermal, performance counter, CMCI).
pub const MAX_LVT_MAX: u32 = 7;

/// The APIC ID field (bits 31:24) of the ID register.
pub fn id_from_register(register: u32) -> u32 {
    register >> 24
}

/// Version (bits 7:0) and max LVT entry (bits 23:16) of the version register.
pub fn decode_version(register: u32) -> (u32, u32) {
    (register & 0xff, (register >> 16) & 0xff)
}

/// Whether the version register describes a plausible integrated local APIC.
pub fn version_is_sane(register: u32) -> bool {
    let (version, max_lvt) = decode_version(register);
    (VERSION_MIN..=VERSION_MAX).contains(&version) && (MAX_LVT_MIN..=MAX_LVT_MAX).contains(&max_lvt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_registers() {
        assert_eq!(id_from_register(0x0300_0000), 3);
        assert_eq!(decode_version(0x0005_0014), (0x14, 5));
        assert!(version_is_sane(0x0005_0014));
        assert!(version_is_sane(0x0006_0015));
        // 82489DX (discrete APIC), no LVT info, junk from an unmapped page.
        assert!(!version_is_sane(0x0002_0003));
        assert!(!version_is_sane(0x0000_0014));
        assert!(!version_is_sane(0xffff_ffff));
    }
}
