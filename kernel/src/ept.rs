//! Construction of the extended page tables: an identity map of guest-physical
//! memory in which RAM is write-back, everything else uncacheable, and the
//! hypervisor's own memory and the trapped ranges are not present.
//!
//! Pure logic over a [`TableFrames`] source, so it is unit-tested on the host.

use core::ops::Range;

const PRESENT_RWX: u64 = 0b111;
const MEMORY_TYPE_SHIFT: u64 = 3;
const LARGE_PAGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const SIZE_2M: u64 = 1 << 21;
const SIZE_4K: u64 = 1 << 12;

/// EPT memory types (SDM Vol. 3 28.3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum MemoryType {
    Uncacheable = 0,
    WriteBack = 6,
}

/// What one guest-physical page becomes in the EPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    NotPresent,
    Present(MemoryType),
}

/// The guest-physical layout the EPT is built from.
#[derive(Clone, Copy, Debug)]
pub struct GuestLayout<'a> {
    /// Ranges backed by RAM (write-back).
    pub ram: &'a [Range<u64>],
    /// Ranges that must exit: hypervisor memory and trapped regions.
    pub not_present: &'a [Range<u64>],
    /// Everything at or above this address is left unmapped.
    pub limit: u64,
}

impl GuestLayout<'_> {
    /// The kind of the page at `gpa`.
    pub fn kind_of(&self, gpa: u64) -> PageKind {
        if self.not_present.iter().any(|r| r.contains(&gpa)) || gpa >= self.limit {
            PageKind::NotPresent
        } else if self.ram.iter().any(|r| r.contains(&gpa)) {
            PageKind::Present(MemoryType::WriteBack)
        } else {
            PageKind::Present(MemoryType::Uncacheable)
        }
    }

    /// Whether every page of `range` has the same kind (no range boundary
    /// falls strictly inside it).
    fn is_uniform(&self, range: &Range<u64>) -> bool {
        let inside = |x: u64| x > range.start && x < range.end;
        !self
            .ram
            .iter()
            .chain(self.not_present.iter())
            .any(|r| inside(r.start) || inside(r.end))
            && !inside(self.limit)
    }
}

/// Where the builder gets zeroed 4 KiB tables and how it reaches them.
pub trait TableFrames {
    /// A new zeroed table; returns its physical address.
    fn allocate(&mut self) -> Option<u64>;
    /// The table at physical address `table`.
    fn table(&mut self, table: u64) -> &mut [u64; 512];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    OutOfFrames,
}

/// Builds the four-level EPT for `layout` and returns the EPT pointer value
/// (write-back paging structures, 4-level walk, accessed/dirty flags off).
pub fn build(layout: &GuestLayout, frames: &mut impl TableFrames) -> Result<u64, EptError> {
    let pml4 = frames.allocate().ok_or(EptError::OutOfFrames)?;
    let mut gpa = 0;
    while gpa < layout.limit {
        map_2m_region(layout, frames, pml4, gpa)?;
        gpa += SIZE_2M;
    }
    Ok(pml4 | (3 << 3) | MemoryType::WriteBack as u64)
}

fn leaf(gpa: u64, memory_type: MemoryType) -> u64 {
    gpa | PRESENT_RWX | ((memory_type as u64) << MEMORY_TYPE_SHIFT)
}

/// Returns the table that `table[index]` points to, creating it if needed.
fn next_table(frames: &mut impl TableFrames, table: u64, index: usize) -> Result<u64, EptError> {
    let entry = frames.table(table)[index];
    if entry & PRESENT_RWX != 0 {
        return Ok(entry & ADDRESS_MASK);
    }
    let next = frames.allocate().ok_or(EptError::OutOfFrames)?;
    frames.table(table)[index] = next | PRESENT_RWX;
    Ok(next)
}

fn map_2m_region(
    layout: &GuestLayout,
    frames: &mut impl TableFrames,
    pml4: u64,
    gpa: u64,
) -> Result<(), EptError> {
    let region = gpa..gpa + SIZE_2M;
    if layout.is_uniform(&region) && layout.kind_of(gpa) == PageKind::NotPresent {
        return Ok(());
    }
    let pdpt = next_table(frames, pml4, index(gpa, 39))?;
    let pd = next_table(frames, pdpt, index(gpa, 30))?;
    if layout.is_uniform(&region) {
        if let PageKind::Present(memory_type) = layout.kind_of(gpa) {
            frames.table(pd)[index(gpa, 21)] = leaf(gpa, memory_type) | LARGE_PAGE;
        }
        return Ok(());
    }
    let pt = next_table(frames, pd, index(gpa, 21))?;
    for slot in 0..512 {
        let page = gpa + slot as u64 * SIZE_4K;
        if let PageKind::Present(memory_type) = layout.kind_of(page) {
            frames.table(pt)[slot] = leaf(page, memory_type);
        }
    }
    Ok(())
}

fn index(gpa: u64, shift: u32) -> usize {
    ((gpa >> shift) & 0x1ff) as usize
}

/// Translates `gpa` through the EPT rooted at `eptp`: the host-physical
/// address and memory type, or `None` when not present.
pub fn translate(frames: &mut impl TableFrames, eptp: u64, gpa: u64) -> Option<(u64, u64)> {
    let mut table = eptp & ADDRESS_MASK;
    for shift in [39, 30, 21, 12] {
        let entry = frames.table(table)[index(gpa, shift)];
        if entry & PRESENT_RWX == 0 {
            return None;
        }
        let memory_type = (entry >> MEMORY_TYPE_SHIFT) & 7;
        if shift == 12 || (shift == 21 && entry & LARGE_PAGE != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some((
                (entry & ADDRESS_MASK & !page_mask) | (gpa & page_mask),
                memory_type,
            ));
        }
        table = entry & ADDRESS_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// Tables in host memory; "physical" addresses are (index + 1) * 4096.
    struct VecFrames(Vec<[u64; 512]>);

    impl TableFrames for VecFrames {
        fn allocate(&mut self) -> Option<u64> {
            if self.0.len() >= 64 {
                return None;
            }
            self.0.push([0; 512]);
            Some(self.0.len() as u64 * 4096)
        }
        fn table(&mut self, table: u64) -> &mut [u64; 512] {
            &mut self.0[(table / 4096 - 1) as usize]
        }
    }

    const RAM: [Range<u64>; 2] = [0..0x9f000, 0x100000..0x1000_0000];
    const HIDDEN: [Range<u64>; 3] = [
        0x100000..0x200_0000,
        0xb8000..0xc0000,
        0xfee0_0000..0xfee0_1000,
    ];

    fn build_test() -> (VecFrames, u64) {
        let layout = GuestLayout {
            ram: &RAM,
            not_present: &HIDDEN,
            limit: 1 << 32,
        };
        let mut frames = VecFrames(Vec::new());
        let eptp = build(&layout, &mut frames).unwrap();
        (frames, eptp)
    }

    #[test]
    fn ram_is_identity_mapped_write_back() {
        let (mut frames, eptp) = build_test();
        assert_eq!(translate(&mut frames, eptp, 0x1234), Some((0x1234, 6)));
        assert_eq!(
            translate(&mut frames, eptp, 0x300_0008),
            Some((0x300_0008, 6))
        );
        assert_eq!(
            translate(&mut frames, eptp, 0xfff_ffff),
            Some((0xfff_ffff, 6))
        );
    }

    #[test]
    fn hypervisor_and_traps_are_not_present() {
        let (mut frames, eptp) = build_test();
        assert_eq!(translate(&mut frames, eptp, 0x100000), None);
        assert_eq!(translate(&mut frames, eptp, 0x1ff_ffff), None);
        assert_eq!(translate(&mut frames, eptp, 0xb8000), None);
        assert_eq!(translate(&mut frames, eptp, 0xbffff), None);
        assert_eq!(translate(&mut frames, eptp, 0xfee0_0fff), None);
    }

    #[test]
    fn holes_are_uncacheable_and_neighbours_of_traps_stay_mapped() {
        let (mut frames, eptp) = build_test();
        assert_eq!(translate(&mut frames, eptp, 0xa0000), Some((0xa0000, 0)));
        assert_eq!(translate(&mut frames, eptp, 0xc0000), Some((0xc0000, 0)));
        assert_eq!(
            translate(&mut frames, eptp, 0xfee0_1000),
            Some((0xfee0_1000, 0))
        );
        assert_eq!(
            translate(&mut frames, eptp, 0xfedf_f000),
            Some((0xfedf_f000, 0))
        );
        assert_eq!(
            translate(&mut frames, eptp, 0x200_0000),
            Some((0x200_0000, 6))
        );
    }

    #[test]
    fn nothing_past_the_limit_and_few_tables() {
        let (mut frames, eptp) = build_test();
        assert_eq!(translate(&mut frames, eptp, 1 << 32), None);
        // PML4, PDPT, 4 PDs, and 4 KiB tables only for 0-2M and the LAPIC's 2M.
        assert_eq!(frames.0.len(), 1 + 1 + 4 + 2);
        assert_eq!(eptp & 0xfff, 0x1e);
    }

    #[test]
    fn running_out_of_frames_is_an_error() {
        struct NoFrames;
        impl TableFrames for NoFrames {
            fn allocate(&mut self) -> Option<u64> {
                None
            }
            fn table(&mut self, _: u64) -> &mut [u64; 512] {
                unreachable!("no table was handed out")
            }
        }
        let layout = GuestLayout {
            ram: &RAM,
            not_present: &HIDDEN,
            limit: 1 << 32,
        };
        assert_eq!(build(&layout, &mut NoFrames), Err(EptError::OutOfFrames));
    }
}
