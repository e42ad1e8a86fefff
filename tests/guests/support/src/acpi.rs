//! The guest's view of the ACPI MADT: finding the RSDP, the RSDT/XSDT and the MADT in
//! identity-mapped physical memory, and listing the enabled local APICs (the CPUs the
//! firmware reports), so SMP guests know how many APs must report in.
//!
//! Parsing works on byte slices and is tested on the host; only [`find_madt`] reads
//! physical memory. Every length read from a table is bounded before it is used.

use heapless::Vec;

/// Most CPUs a guest keeps track of.
pub const MAX_CPUS: usize = 16;

/// Why the MADT could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No "RSD PTR " signature with a valid checksum in the BIOS areas.
    NoRsdp,
    /// A table's header is short, its length is out of range or its checksum is wrong.
    BadTable(u64),
    /// The root table lists no "APIC" table.
    NoMadt,
}

/// One enabled local APIC of the MADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalApic {
    /// ACPI processor UID.
    pub processor_uid: u8,
    /// The local APIC ID.
    pub apic_id: u8,
}

/// Size of an ACPI table header.
const HEADER_BYTES: usize = 36;
/// Largest table this module reads (ACPI tables of a small PC are far smaller).
const MAX_TABLE_BYTES: usize = 64 * 1024;
/// MADT entry type: processor local APIC.
const MADT_LOCAL_APIC: u8 = 0;
/// Local APIC flags: enabled.
const LAPIC_ENABLED: u32 = 1;

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let low = u32_at(bytes, offset)?;
    let high = u32_at(bytes, offset + 4)?;
    Some(u64::from(low) | (u64::from(high) << 32))
}

/// The root table's address from an RSDP (20 bytes, or 36 for revision 2+): the XSDT
/// when there is one, else the RSDT; `true` means XSDT (64-bit entries).
pub fn root_table(rsdp: &[u8]) -> Option<(u64, bool)> {
    if rsdp.get(..8)? != b"RSD PTR " || !checksum_ok(rsdp.get(..20)?) {
        return None;
    }
    let revision = *rsdp.get(15)?;
    if revision >= 2
        && let Some(extended) = rsdp.get(..36)
    {
        let xsdt = u64_at(extended, 24)?;
        if checksum_ok(extended) && xsdt != 0 {
            return Some((xsdt, true));
        }
    }
    Some((u64::from(u32_at(rsdp, 16)?), false))
}

/// The length a table header declares, if it is plausible.
pub fn table_length(header: &[u8]) -> Option<usize> {
    let length = u32_at(header, 4)? as usize;
    (HEADER_BYTES..=MAX_TABLE_BYTES)
        .contains(&length)
        .then_some(length)
}

/// The addresses of the tables a whole RSDT (`xsdt` false) or XSDT lists.
pub fn root_entries(table: &[u8], xsdt: bool) -> impl Iterator<Item = u64> + '_ {
    let width = if xsdt { 8 } else { 4 };
    table
        .get(HEADER_BYTES..)
        .unwrap_or(&[])
        .chunks_exact(width)
        .map(move |entry| {
            if xsdt {
                u64_at(entry, 0).unwrap_or(0)
            } else {
                u64::from(u32_at(entry, 0).unwrap_or(0))
            }
        })
}

/// The enabled local APICs of a whole MADT (checksum checked), in table order.
pub fn enabled_local_apics(madt: &[u8]) -> Option<Vec<LocalApic, MAX_CPUS>> {
    if madt.get(..4)? != b"APIC" || !checksum_ok(madt) {
        return None;
    }
    // Header, then the local APIC address (4) and flags (4), then the entries.
    let mut entries = madt.get(HEADER_BYTES + 8..)?;
    let mut cpus = Vec::new();
    while entries.len() >= 2 {
        let kind = entries[0];
        let length = usize::from(entries[1]);
        if length < 2 || length > entries.len() {
            return None;
        }
        if kind == MADT_LOCAL_APIC && length >= 8 {
            let flags = u32_at(entries, 4)?;
            if flags & LAPIC_ENABLED != 0 {
                let apic = LocalApic {
                    processor_uid: entries[2],
                    apic_id: entries[3],
                };
                // More CPUs than we track: keep the first MAX_CPUS.
                let _ = cpus.push(apic);
            }
        }
        entries = &entries[length..];
    }
    Some(cpus)
}

/// Reads `length` bytes of identity-mapped physical memory.
///
/// # Safety
/// `[physical, physical + length)` must be mapped readable memory that nothing writes
/// while the slice lives.
unsafe fn physical_bytes(physical: u64, length: usize) -> &'static [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { core::slice::from_raw_parts(physical as usize as *const u8, length) }
}

/// A whole table at `physical`, its header and checksum checked.
///
/// # Safety
/// As [`find_madt`].
unsafe fn table_at(physical: u64) -> Result<&'static [u8], AcpiError> {
    if physical == 0 || physical >= 0x1_0000_0000 {
        return Err(AcpiError::BadTable(physical));
    }
    // SAFETY: the caller vouches for the identity map of the low 4 GiB; the header is
    // read before its length is trusted.
    let header = unsafe { physical_bytes(physical, HEADER_BYTES) };
    let length = table_length(header).ok_or(AcpiError::BadTable(physical))?;
    // SAFETY: as above, with the bounded length.
    let table = unsafe { physical_bytes(physical, length) };
    if checksum_ok(table) {
        Ok(table)
    } else {
        Err(AcpiError::BadTable(physical))
    }
}

/// Finds the RSDP in the EBDA's first KiB or in 0xE0000..0x100000.
///
/// # Safety
/// As [`find_madt`].
unsafe fn find_rsdp() -> Option<&'static [u8]> {
    // SAFETY: the BIOS data area word at 0x40e is mapped low memory.
    let ebda = u64::from(unsafe { core::ptr::read_volatile(0x40e as *const u16) }) << 4;
    let areas = [(ebda, ebda + 1024), (0xe_0000, 0x10_0000)];
    for (start, end) in areas {
        if start == 0 || end > 0x10_0000 {
            continue;
        }
        let mut address = start;
        while address + 36 <= end {
            // SAFETY: inside the BIOS areas, mapped below 1 MiB.
            let candidate = unsafe { physical_bytes(address, 36) };
            if root_table(candidate).is_some() {
                return Some(candidate);
            }
            address += 16;
        }
    }
    None
}

/// The enabled local APICs the firmware's MADT lists.
///
/// # Safety
/// Physical memory below 4 GiB must be identity-mapped and readable (the guests' boot
/// identity map is), and the ACPI tables must not change while this runs.
pub unsafe fn find_madt() -> Result<Vec<LocalApic, MAX_CPUS>, AcpiError> {
    // SAFETY: forwarded from the caller.
    let rsdp = unsafe { find_rsdp() }.ok_or(AcpiError::NoRsdp)?;
    let (root, xsdt) = root_table(rsdp).ok_or(AcpiError::NoRsdp)?;
    // SAFETY: forwarded from the caller.
    let root_bytes = unsafe { table_at(root) }?;
    for address in root_entries(root_bytes, xsdt) {
        // SAFETY: forwarded from the caller.
        let Ok(table) = (unsafe { table_at(address) }) else {
            continue;
        };
        if table.get(..4) == Some(b"APIC") {
            return enabled_local_apics(table).ok_or(AcpiError::BadTable(address));
        }
    }
    Err(AcpiError::NoMadt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn table(signature: &[u8; 4], body: &[u8]) -> StdVec<u8> {
        let mut bytes = StdVec::new();
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(&((HEADER_BYTES + body.len()) as u32).to_le_bytes());
        bytes.resize(HEADER_BYTES, 0);
        bytes.extend_from_slice(body);
        fix_checksum(&mut bytes, 9);
        bytes
    }

    #[test]
    fn rsdp_revisions() {
        let mut rsdp = [0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[16..20].copy_from_slice(&0x000f_1234u32.to_le_bytes());
        fix_checksum(&mut rsdp[..20], 8);
        assert_eq!(root_table(&rsdp), Some((0xf_1234, false)));
        rsdp[15] = 2;
        rsdp[24..32].copy_from_slice(&0x0fff_0000u64.to_le_bytes());
        fix_checksum(&mut rsdp[..20], 8);
        fix_checksum(&mut rsdp, 32);
        assert_eq!(root_table(&rsdp), Some((0x0fff_0000, true)));
        rsdp[0] = b'X';
        assert_eq!(root_table(&rsdp), None);
    }

    #[test]
    fn madt_lists_enabled_local_apics() {
        let mut body = StdVec::new();
        body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        for (uid, id, flags) in [(0u8, 0u8, 1u32), (1, 1, 1), (2, 5, 0), (3, 3, 1)] {
            body.extend_from_slice(&[0, 8, uid, id]);
            body.extend_from_slice(&flags.to_le_bytes());
        }
        body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]); // I/O APIC
        let madt = table(b"APIC", &body);
        let cpus = enabled_local_apics(&madt).unwrap();
        let ids: StdVec<u8> = cpus.iter().map(|cpu| cpu.apic_id).collect();
        assert_eq!(ids, [0, 1, 3]);
        let mut corrupt = madt.clone();
        corrupt[HEADER_BYTES + 9] = 200; // entry length past the end
        fix_checksum(&mut corrupt, 9);
        assert_eq!(enabled_local_apics(&corrupt), None);
        let mut bad_sum = madt;
        bad_sum[9] ^= 1;
        assert_eq!(enabled_local_apics(&bad_sum), None);
    }

    #[test]
    fn root_entries_and_lengths() {
        let mut body = StdVec::new();
        body.extend_from_slice(&0x1000u32.to_le_bytes());
        body.extend_from_slice(&0x2000u32.to_le_bytes());
        let rsdt = table(b"RSDT", &body);
        assert_eq!(table_length(&rsdt), Some(rsdt.len()));
        let entries: StdVec<u64> = root_entries(&rsdt, false).collect();
        assert_eq!(entries, [0x1000, 0x2000]);
        let xsdt_entries: StdVec<u64> = root_entries(&rsdt, true).collect();
        assert_eq!(xsdt_entries, [0x2000_0000_1000]);
        let mut huge = rsdt;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(table_length(&huge), None);
    }
}
