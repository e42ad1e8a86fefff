//! Finding the CPUs: the local APIC IDs listed in the ACPI MADT. Parsing works
//! on byte slices (host-tested); the caller reads the tables from memory.

/// Most CPUs the parser reports.
pub const MAX_APIC_IDS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    BadSignature,
    BadLength,
    BadChecksum,
}

/// The header every ACPI system description table starts with (36 bytes).
pub const HEADER_LENGTH: usize = 36;

/// Checks a table's signature, length and checksum; returns its bytes.
pub fn checked_table<'a>(bytes: &'a [u8], signature: &[u8; 4]) -> Result<&'a [u8], AcpiError> {
    if bytes.len() < HEADER_LENGTH || &bytes[..4] != signature {
        return Err(AcpiError::BadSignature);
    }
    let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let table = bytes
        .get(..length)
        .filter(|_| length >= HEADER_LENGTH)
        .ok_or(AcpiError::BadLength)?;
    if table.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) != 0 {
        return Err(AcpiError::BadChecksum);
    }
    Ok(table)
}

/// The table length field of a header (to know how much to read).
pub fn table_length(header: &[u8; HEADER_LENGTH]) -> usize {
    u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize
}

/// The physical addresses of the tables an RSDT (4-byte entries) or XSDT
/// (8-byte entries) lists.
pub fn root_entries(table: &[u8], entry_size: usize) -> impl Iterator<Item = u64> + '_ {
    table[HEADER_LENGTH.min(table.len())..]
        .chunks_exact(entry_size)
        .map(|entry| {
            let mut bytes = [0u8; 8];
            bytes[..entry.len()].copy_from_slice(entry);
            u64::from_le_bytes(bytes)
        })
}

/// The APIC IDs of the enabled (or online-capable) processors in a MADT,
/// in table order.
pub fn madt_apic_ids(madt: &[u8]) -> heapless::Vec<u32, MAX_APIC_IDS> {
    const LOCAL_APIC: u8 = 0;
    const LOCAL_X2APIC: u8 = 9;
    const ENABLED: u32 = 1;
    const ONLINE_CAPABLE: u32 = 2;
    let mut ids = heapless::Vec::new();
    // Interrupt controller structures start after the header, the local APIC
    // address and the flags.
    let mut rest = madt.get(HEADER_LENGTH + 8..).unwrap_or(&[]);
    while let [kind, length, ..] = *rest {
        let length = usize::from(length);
        let Some(entry) = rest.get(..length).filter(|_| length >= 2) else {
            break;
        };
        let id_and_flags = match (kind, entry) {
            (LOCAL_APIC, [_, _, _, id, f0, f1, f2, f3, ..]) => {
                Some((u32::from(*id), u32::from_le_bytes([*f0, *f1, *f2, *f3])))
            }
            (LOCAL_X2APIC, [_, _, _, _, i0, i1, i2, i3, f0, f1, f2, f3, ..]) => Some((
                u32::from_le_bytes([*i0, *i1, *i2, *i3]),
                u32::from_le_bytes([*f0, *f1, *f2, *f3]),
            )),
            _ => None,
        };
        if let Some((id, flags)) = id_and_flags
            && flags & (ENABLED | ONLINE_CAPABLE) != 0
            && !ids.contains(&id)
            && ids.push(id).is_err()
        {
            break;
        }
        rest = &rest[length..];
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::from(*signature);
        let length = (HEADER_LENGTH + body.len()) as u32;
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.resize(HEADER_LENGTH, 0);
        bytes.extend_from_slice(body);
        let sum = bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        bytes[9] = 0u8.wrapping_sub(sum);
        bytes
    }

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::from([0u8; 8]);
        for entry in entries {
            body.extend_from_slice(entry);
        }
        table(b"APIC", &body)
    }

    #[test]
    fn lists_enabled_processors_in_order() {
        let bytes = madt(&[
            &[0, 8, 0, 0, 1, 0, 0, 0],
            &[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0],
            &[0, 8, 1, 2, 1, 0, 0, 0],
            &[0, 8, 2, 5, 0, 0, 0, 0],
            &[9, 16, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0],
        ]);
        let table = checked_table(&bytes, b"APIC").unwrap();
        assert_eq!(madt_apic_ids(table).as_slice(), &[0, 2, 7]);
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut bytes = madt(&[&[0, 8, 0, 0, 1, 0, 0, 0]]);
        assert_eq!(checked_table(&bytes, b"FACP"), Err(AcpiError::BadSignature));
        bytes[20] ^= 1;
        assert_eq!(checked_table(&bytes, b"APIC"), Err(AcpiError::BadChecksum));
        assert_eq!(
            checked_table(&bytes[..40], b"APIC"),
            Err(AcpiError::BadLength)
        );
    }

    #[test]
    fn truncated_and_zero_length_entries_stop_the_walk() {
        let bytes = madt(&[
            &[0, 8, 0, 3, 1, 0, 0, 0],
            &[0, 0, 0, 0],
            &[0, 8, 1, 4, 1, 0, 0, 0],
        ]);
        assert_eq!(madt_apic_ids(&bytes).as_slice(), &[3]);
        let short = madt(&[&[0, 8, 0, 3, 1, 0, 0, 0], &[0, 8, 1]]);
        assert_eq!(madt_apic_ids(&short).as_slice(), &[3]);
    }

    #[test]
    fn root_entries_of_both_widths() {
        let rsdt = table(b"RSDT", &[0x10, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(root_entries(&rsdt, 4).collect::<Vec<_>>(), [0x10, 0x20]);
        let xsdt = table(b"XSDT", &[1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            root_entries(&xsdt, 8).collect::<Vec<_>>(),
            [0x0100_0000_0000_0001]
        );
    }
}
