//! A 4-level page-table builder over a caller-provided pool of tables, for guests that
//! map linear pages of their own (aliases, read-only, user, NX mappings).
//!
//! The builder never dereferences a physical address: a table is found by its index in
//! the pool (`pool_physical + index * 4096`), so it is plain safe code, tested on the host.

use x86_64::PhysAddr;
use x86_64::structures::paging::{PageTable, PageTableFlags};

/// Size of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB page (a PTE).
    Size4KiB,
    /// 2 MiB page (a PDE with PS).
    Size2MiB,
    /// 1 GiB page (a PDPTE with PS).
    Size1GiB,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4KiB => 0x1000,
            Self::Size2MiB => 0x20_0000,
            Self::Size1GiB => 0x4000_0000,
        }
    }

    /// The table level whose entry maps a page of this size (1 = page table).
    const fn level(self) -> usize {
        match self {
            Self::Size4KiB => 1,
            Self::Size2MiB => 2,
            Self::Size1GiB => 3,
        }
    }
}

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    /// The pool is empty or its physical address is not 4 KiB aligned.
    BadPool,
    /// The linear address is not canonical (48-bit).
    NonCanonical(u64),
    /// Linear or physical address not aligned to the page size.
    Misaligned,
    /// The physical address does not fit in 52 bits.
    PhysicalOutOfRange(u64),
    /// Every table of the pool is in use.
    OutOfTables,
    /// The linear page is mapped already.
    AlreadyMapped(u64),
    /// A larger page covers the linear address already.
    LargePageInTheWay(u64),
    /// An entry points at a table outside the pool (tables changed behind our back).
    TableOutsidePool(u64),
}

/// Builds 4-level page tables in a pool; table 0 is the PML4.
#[derive(Debug)]
pub struct PageTableBuilder<'a> {
    tables: &'a mut [PageTable],
    pool_physical: u64,
    used: usize,
}

const TABLE_BYTES: u64 = 4096;

fn table_index(linear: u64, level: usize) -> usize {
    ((linear >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

fn is_canonical(linear: u64) -> bool {
    let upper = linear >> 47;
    upper == 0 || upper == 0x1_ffff
}

impl<'a> PageTableBuilder<'a> {
    /// Starts with every table of `tables` cleared; `pool_physical` is the physical
    /// address of `tables[0]` (the tables must be physically contiguous, as a static
    /// array in an identity-mapped guest is).
    pub fn new(tables: &'a mut [PageTable], pool_physical: u64) -> Result<Self, PagingError> {
        if tables.is_empty() || !pool_physical.is_multiple_of(TABLE_BYTES) {
            return Err(PagingError::BadPool);
        }
        for table in tables.iter_mut() {
            table.zero();
        }
        Ok(Self {
            tables,
            pool_physical,
            used: 1,
        })
    }

    /// Physical address of the PML4, for CR3.
    pub fn root_physical(&self) -> u64 {
        self.pool_physical
    }

    /// Maps the page at `linear` to `physical` with `flags` (PRESENT is added, and
    /// HUGE_PAGE for large pages). Intermediate entries are present, writable and
    /// user-accessible, so the leaf's flags alone decide the access rights.
    pub fn map(
        &mut self,
        linear: u64,
        physical: u64,
        size: PageSize,
        flags: PageTableFlags,
    ) -> Result<(), PagingError> {
        if !is_canonical(linear) {
            return Err(PagingError::NonCanonical(linear));
        }
        if !linear.is_multiple_of(size.bytes()) || !physical.is_multiple_of(size.bytes()) {
            return Err(PagingError::Misaligned);
        }
        let frame =
            PhysAddr::try_new(physical).map_err(|_| PagingError::PhysicalOutOfRange(physical))?;
        let mut table = 0;
        for level in (size.level() + 1..=4).rev() {
            table = self.next_table(table, table_index(linear, level), linear)?;
        }
        let entry = &mut self.tables[table][table_index(linear, size.level())];
        if !entry.is_unused() {
            return Err(PagingError::AlreadyMapped(linear));
        }
        let mut leaf_flags = flags | PageTableFlags::PRESENT;
        if size != PageSize::Size4KiB {
            leaf_flags |= PageTableFlags::HUGE_PAGE;
        }
        entry.set_addr(frame, leaf_flags);
        Ok(())
    }

    /// Walks the tables: the physical address `linear` maps to and the leaf's flags.
    pub fn translate(&self, linear: u64) -> Option<(u64, PageTableFlags)> {
        let mut table = 0;
        for level in (1..=4).rev() {
            let entry = &self.tables[table][table_index(linear, level)];
            let flags = entry.flags();
            if !flags.contains(PageTableFlags::PRESENT) {
                return None;
            }
            let is_leaf = level == 1 || (level < 4 && flags.contains(PageTableFlags::HUGE_PAGE));
            if is_leaf {
                let page_mask = (1u64 << (12 + 9 * (level - 1))) - 1;
                return Some((entry.addr().as_u64() + (linear & page_mask), flags));
            }
            table = self.pool_index(entry.addr().as_u64())?;
        }
        None
    }

    /// Index of the table the entry `index` of table `table` points at, allocating
    /// one from the pool when the entry is empty.
    fn next_table(
        &mut self,
        table: usize,
        index: usize,
        linear: u64,
    ) -> Result<usize, PagingError> {
        let entry = &self.tables[table][index];
        if entry.is_unused() {
            let next = self.used;
            if next >= self.tables.len() {
                return Err(PagingError::OutOfTables);
            }
            self.used += 1;
            let address = PhysAddr::new_truncate(self.pool_physical + next as u64 * TABLE_BYTES);
            let flags = PageTableFlags::PRESENT
                | PageTableFlags::WRITABLE
                | PageTableFlags::USER_ACCESSIBLE;
            self.tables[table][index].set_addr(address, flags);
            return Ok(next);
        }
        if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            return Err(PagingError::LargePageInTheWay(linear));
        }
        let address = entry.addr().as_u64();
        self.pool_index(address)
            .ok_or(PagingError::TableOutsidePool(address))
    }

    fn pool_index(&self, physical: u64) -> Option<usize> {
        let offset = physical.checked_sub(self.pool_physical)?;
        let index = usize::try_from(offset / TABLE_BYTES).ok()?;
        (index < self.used).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn pool(count: usize) -> Vec<PageTable> {
        (0..count).map(|_| PageTable::new()).collect()
    }

    const RW: PageTableFlags = PageTableFlags::WRITABLE;

    #[test]
    fn maps_aliases_and_translates() {
        let mut tables = pool(8);
        let mut builder = PageTableBuilder::new(&mut tables, 0x10_0000).unwrap();
        let frame_a = 0x300_0000;
        builder
            .map(0x4000_0000, frame_a, PageSize::Size4KiB, RW)
            .unwrap();
        builder
            .map(0x4000_1000, frame_a + 0x1000, PageSize::Size4KiB, RW)
            .unwrap();
        builder
            .map(
                0x4000_2000,
                frame_a,
                PageSize::Size4KiB,
                PageTableFlags::empty(),
            )
            .unwrap();
        // One PML4, PDPT, PD and PT.
        assert_eq!(builder.used, 4);
        assert_eq!(builder.translate(0x4000_1ffc).unwrap().0, frame_a + 0x1ffc);
        let (physical, flags) = builder.translate(0x4000_2010).unwrap();
        assert_eq!(physical, frame_a + 0x10);
        assert!(!flags.contains(PageTableFlags::WRITABLE));
        assert_eq!(builder.translate(0x4000_3000), None);
        assert_eq!(builder.root_physical(), 0x10_0000);
    }

    #[test]
    fn large_pages_and_high_half() {
        let mut tables = pool(6);
        let mut builder = PageTableBuilder::new(&mut tables, 0x8000).unwrap();
        builder.map(0, 0, PageSize::Size1GiB, RW).unwrap();
        builder
            .map(0x4020_0000, 0x20_0000, PageSize::Size2MiB, RW)
            .unwrap();
        builder
            .map(0xffff_8000_0000_0000, 0x1000, PageSize::Size4KiB, RW)
            .unwrap();
        assert_eq!(builder.translate(0x1234_5678).unwrap().0, 0x1234_5678);
        assert_eq!(builder.translate(0x402f_ffff).unwrap().0, 0x2f_ffff);
        assert_eq!(builder.translate(0xffff_8000_0000_0123).unwrap().0, 0x1123);
    }

    #[test]
    fn refuses_bad_requests() {
        let mut tables = pool(4);
        assert_eq!(
            PageTableBuilder::new(&mut tables, 0x123).unwrap_err(),
            PagingError::BadPool
        );
        assert_eq!(
            PageTableBuilder::new(&mut [], 0).unwrap_err(),
            PagingError::BadPool
        );
        let mut builder = PageTableBuilder::new(&mut tables, 0).unwrap();
        assert_eq!(
            builder.map(0x0000_8000_0000_0000, 0, PageSize::Size4KiB, RW),
            Err(PagingError::NonCanonical(0x0000_8000_0000_0000))
        );
        assert_eq!(
            builder.map(0x1000, 0x800, PageSize::Size4KiB, RW),
            Err(PagingError::Misaligned)
        );
        assert_eq!(
            builder.map(0x20_0000, 0x1000, PageSize::Size2MiB, RW),
            Err(PagingError::Misaligned)
        );
        assert_eq!(
            builder.map(0, 1 << 52, PageSize::Size4KiB, RW),
            Err(PagingError::PhysicalOutOfRange(1 << 52))
        );
        builder.map(0x20_0000, 0, PageSize::Size2MiB, RW).unwrap();
        assert_eq!(
            builder.map(0x20_0000, 0, PageSize::Size2MiB, RW),
            Err(PagingError::AlreadyMapped(0x20_0000))
        );
        assert_eq!(
            builder.map(0x20_1000, 0, PageSize::Size4KiB, RW),
            Err(PagingError::LargePageInTheWay(0x20_1000))
        );
        // PML4, PDPT and PD used; a PT for the next 2 MiB region takes the last table,
        // then a new PDPT region needs two more.
        builder.map(0x40_0000, 0, PageSize::Size4KiB, RW).unwrap();
        assert_eq!(
            builder.map(0x80_0000_0000, 0, PageSize::Size4KiB, RW),
            Err(PagingError::OutOfTables)
        );
    }

    #[test]
    fn rejects_entries_pointing_outside_the_pool() {
        let mut tables = pool(4);
        let mut builder = PageTableBuilder::new(&mut tables, 0).unwrap();
        // `new` clears the pool, so plant the stray entry afterwards.
        builder.tables[0][0].set_addr(PhysAddr::new(0x9000_0000), PageTableFlags::PRESENT);
        assert_eq!(
            builder.map(0x1000, 0, PageSize::Size4KiB, RW),
            Err(PagingError::TableOutsidePool(0x9000_0000))
        );
        assert_eq!(builder.translate(0x1000), None);
    }
}
