//! The service's capability table: which guest-physical pages it may reach
//! through `map` and `cmpxchg`, with which [`Rights`]. Built once at boot from
//! the [`Config`] grants and the memory map; the hypervisor's own region is cut
//! out of every entry whatever the configuration says.

use super::PhysRange;
use super::cmdline::{Config, GrantRegion, PHYS_LIMIT};
use abi::{Rights, SyscallError};
use heapless::Vec;

/// Most entries the table holds (each RAM range can split in two around the
/// hypervisor).
pub const MAX_CAPABILITIES: usize = 64;

/// Rights over one page-aligned range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub range: PhysRange,
    pub rights: u64,
}

/// Why the table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilityTableError {
    /// The grants and RAM ranges need more than [`MAX_CAPABILITIES`] entries.
    TooManyEntries,
}

impl CapabilityTableError {
    pub const fn describe(self) -> &'static str {
        match self {
            CapabilityTableError::TooManyEntries => {
                "capability table full: too many RAM ranges or grants"
            }
        }
    }
}

/// The capabilities of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityTable {
    entries: Vec<Capability, MAX_CAPABILITIES>,
    /// Never grantable; kept to refuse it again at check time.
    hypervisor: PhysRange,
}

impl CapabilityTable {
    /// Builds the table. `guest_ram` are the RAM ranges of the memory map
    /// (any alignment: only whole pages inside them are granted);
    /// `hypervisor` is the core's own region (grown to whole pages and cut out
    /// of every entry).
    pub fn new(
        config: &Config,
        guest_ram: &[PhysRange],
        hypervisor: PhysRange,
    ) -> Result<CapabilityTable, CapabilityTableError> {
        let hypervisor = hypervisor.grow_to_pages();
        let mut table = CapabilityTable {
            entries: Vec::new(),
            hypervisor,
        };
        for grant in &config.grants {
            match grant.region {
                GrantRegion::GuestRam => {
                    for ram in guest_ram {
                        if let Some(pages) = ram.shrink_to_pages() {
                            table.add(pages, grant.rights)?;
                        }
                    }
                }
                GrantRegion::Range(range) => table.add(range, grant.rights)?,
            }
        }
        Ok(table)
    }

    fn add(&mut self, range: PhysRange, rights: u64) -> Result<(), CapabilityTableError> {
        for piece in range.subtract(&self.hypervisor).into_iter().flatten() {
            // Nothing at or above the physical-address limit is grantable.
            let Some(piece) = PhysRange::new(piece.start, piece.end.min(PHYS_LIMIT)) else {
                continue;
            };
            self.entries
                .push(Capability {
                    range: piece,
                    rights,
                })
                .map_err(|_| CapabilityTableError::TooManyEntries)?;
        }
        Ok(())
    }

    pub fn entries(&self) -> &[Capability] {
        &self.entries
    }

    /// Whether the service may access `[gpa, gpa + len)` with every right in
    /// `rights`. The range may span several adjacent entries.
    ///
    /// Errors: [`SyscallError::BadArgument`] for an empty range, one that wraps
    /// past 2^64, or rights that are empty or unknown;
    /// [`SyscallError::NoCapability`] if any byte is not covered by an entry
    /// with those rights, or touches the hypervisor's region.
    pub fn check(&self, gpa: u64, len: u64, rights: u64) -> Result<(), SyscallError> {
        if rights == 0 || rights & !Rights::ALL != 0 {
            return Err(SyscallError::BadArgument);
        }
        let end = gpa.checked_add(len).ok_or(SyscallError::BadArgument)?;
        let wanted = PhysRange::new(gpa, end).ok_or(SyscallError::BadArgument)?;
        if wanted.overlaps(&self.hypervisor) {
            return Err(SyscallError::NoCapability);
        }
        // Each step moves `covered` to the end of an entry that contains it, so
        // no entry is used twice: at most `entries.len()` steps.
        let mut covered = wanted.start;
        while covered < wanted.end {
            let entry = self
                .entries
                .iter()
                .find(|entry| entry.range.contains(covered) && entry.rights & rights == rights)
                .ok_or(SyscallError::NoCapability)?;
            covered = entry.range.end;
        }
        Ok(())
    }

    /// [`CapabilityTable::check`] for one whole page at `gpa_page`, which must
    /// be page-aligned (else [`SyscallError::BadArgument`]).
    pub fn check_page(&self, gpa_page: u64, rights: u64) -> Result<(), SyscallError> {
        if !gpa_page.is_multiple_of(abi::PAGE_SIZE) {
            return Err(SyscallError::BadArgument);
        }
        self.check(gpa_page, abi::PAGE_SIZE, rights)
    }
}

#[cfg(test)]
mod tests;
