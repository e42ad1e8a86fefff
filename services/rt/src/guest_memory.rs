//! Guest-physical memory through this CPU's map window: pages are mapped into
//! window slots on demand (a [`SlotCache`] remembers them across exits, with
//! the least rights each needs) and accessed with volatile loads and stores of
//! the widest naturally aligned size, so a 4-byte LAPIC register access is one
//! 4-byte access. Compare-exchange goes through the `cmpxchg` syscall.

use crate::slot_cache::{SlotCache, SlotPlan};
use crate::syscall::{self, Error};
use abi::syscall::MAP_SLOTS;
use abi::{CmpxchgRequest, PAGE_SIZE, Rights};

/// Why a guest-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// The range runs past the end of its page.
    CrossesPage,
    /// A compare-exchange whose operands are not all 1, 2, 4, 8 or 16 bytes
    /// of the same width.
    BadWidth,
    /// The core refused `map`, `unmap` or `cmpxchg`.
    Syscall(Error),
}

/// Guest-physical memory of the vCPU this thread serves.
#[derive(Debug)]
pub struct GuestMemory {
    window: u64,
    slots: SlotCache<{ MAP_SLOTS as usize }>,
}

impl GuestMemory {
    /// # Safety
    /// `map_window` must be the window the core gave this thread in
    /// `ServiceStart::map_window`, used by nothing but this `GuestMemory`.
    pub unsafe fn new(map_window: u64) -> GuestMemory {
        GuestMemory {
            window: map_window,
            slots: SlotCache::default(),
        }
    }

    /// Reads `buf.len()` bytes at `gpa`; the range must lie in one page.
    pub fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let source = self.window_address(gpa, buf.len(), Rights::READ)?;
        // SAFETY: `window_address` mapped the page readable and checked that
        // the range stays inside it; no reference into the window exists.
        unsafe { copy_from_window(source as *const u8, buf) };
        Ok(())
    }

    /// Writes `data` at `gpa`; the range must lie in one page.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), AccessError> {
        let target = self.window_address(gpa, data.len(), Rights::WRITE)?;
        // SAFETY: `window_address` mapped the page writable and checked that
        // the range stays inside it; no reference into the window exists.
        unsafe { copy_to_window(target as *mut u8, data) };
        Ok(())
    }

    /// Atomically replaces `expected` by `new` at `offset` in `pages[0]`
    /// (continuing in `pages[1]` for a split access; `pages[1]` is ignored
    /// otherwise). Fills `current` with what was there; returns whether it
    /// stored.
    pub fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, AccessError> {
        let width = expected.len();
        if !matches!(width, 1 | 2 | 4 | 8 | 16) || new.len() != width || current.len() != width {
            return Err(AccessError::BadWidth);
        }
        // The ABI wants no second page unless the access really splits.
        let splits = usize::from(offset) + width > PAGE_SIZE as usize;
        let mut request = CmpxchgRequest {
            pages: [pages[0], if splits { pages[1] } else { 0 }],
            offset,
            width: width as u8,
            ..CmpxchgRequest::default()
        };
        request.expected[..width].copy_from_slice(expected);
        request.new[..width].copy_from_slice(new);
        let swapped = syscall::cmpxchg(&mut request).map_err(AccessError::Syscall)?;
        current.copy_from_slice(&request.current[..width]);
        Ok(swapped)
    }

    /// Maps the page of `gpa` with `needed` rights (if not already) and
    /// returns the window address of `gpa`.
    fn window_address(&mut self, gpa: u64, len: usize, needed: u64) -> Result<u64, AccessError> {
        let offset = gpa % PAGE_SIZE;
        if offset + len as u64 > PAGE_SIZE {
            return Err(AccessError::CrossesPage);
        }
        let page = gpa - offset;
        let slot = match self.slots.plan(page, needed) {
            SlotPlan::Hit { slot } => slot,
            SlotPlan::Map {
                slot,
                rights,
                occupied,
            } => {
                self.map_slot(slot, page, rights, needed, occupied)?;
                slot
            }
        };
        Ok(self.window + slot as u64 * PAGE_SIZE + offset)
    }

    /// Maps `page` into `slot` with `rights`, or with `needed` alone if the
    /// core refuses the wider set (an upgrade the capability does not allow).
    fn map_slot(
        &mut self,
        slot: usize,
        page: u64,
        rights: u64,
        needed: u64,
        occupied: bool,
    ) -> Result<(), AccessError> {
        if occupied {
            self.slots.cleared(slot);
            // SAFETY: only this GuestMemory uses the window and it holds no
            // reference into it.
            unsafe { syscall::unmap(slot as u64) }.map_err(AccessError::Syscall)?;
        }
        // SAFETY: only this GuestMemory uses the window and it holds no
        // reference into it.
        let first = unsafe { syscall::map(page, rights, slot as u64) };
        let (mapped, granted) = match first {
            Err(_) if rights != needed => {
                // SAFETY: as above.
                let retry = unsafe { syscall::map(page, needed, slot as u64) };
                (retry, needed)
            }
            other => (other, rights),
        };
        mapped.map_err(AccessError::Syscall)?;
        self.slots.mapped(slot, page, granted);
        Ok(())
    }
}

/// The widest of 8, 4, 2, 1 that divides both `address` and `len`.
fn access_width(address: usize, len: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|width| address.is_multiple_of(*width) && len.is_multiple_of(*width))
        .unwrap_or(1)
}

/// Copies from the window with volatile loads of the widest aligned size.
///
/// # Safety
/// `source` must be readable for `buf.len()` bytes.
unsafe fn copy_from_window(source: *const u8, buf: &mut [u8]) {
    let width = access_width(source as usize, buf.len());
    for (index, chunk) in buf.chunks_exact_mut(width).enumerate() {
        // SAFETY: `index * width + width <= buf.len()`, so the load stays in
        // the range the caller vouched for, and it is `width`-aligned.
        unsafe {
            let at = source.add(index * width);
            match width {
                8 => chunk.copy_from_slice(&(at as *const u64).read_volatile().to_le_bytes()),
                4 => chunk.copy_from_slice(&(at as *const u32).read_volatile().to_le_bytes()),
                2 => chunk.copy_from_slice(&(at as *const u16).read_volatile().to_le_bytes()),
                _ => chunk[0] = at.read_volatile(),
            }
        }
    }
}

/// Copies into the window with volatile stores of the widest aligned size.
///
/// # Safety
/// `target` must be writable for `data.len()` bytes.
unsafe fn copy_to_window(target: *mut u8, data: &[u8]) {
    let width = access_width(target as usize, data.len());
    for (index, chunk) in data.chunks_exact(width).enumerate() {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(chunk);
        // SAFETY: `index * width + width <= data.len()`, so the store stays in
        // the range the caller vouched for, and it is `width`-aligned.
        unsafe {
            let at = target.add(index * width);
            match width {
                8 => (at as *mut u64).write_volatile(u64::from_le_bytes(bytes)),
                4 => (at as *mut u32)
                    .write_volatile(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
                2 => (at as *mut u16).write_volatile(u16::from_le_bytes([bytes[0], bytes[1]])),
                _ => at.write_volatile(bytes[0]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_width_is_the_widest_aligned_size() {
        assert_eq!(access_width(0x1000, 4), 4);
        assert_eq!(access_width(0x1000, 16), 8);
        assert_eq!(access_width(0x1004, 8), 4);
        assert_eq!(access_width(0x1002, 4), 2);
        assert_eq!(access_width(0x1001, 4), 1);
        assert_eq!(access_width(0x1000, 3), 1);
        assert_eq!(access_width(0x1000, 0), 8);
    }

    #[test]
    fn window_copies_round_trip_at_every_alignment() {
        let mut memory = [0u64; 8];
        let base = memory.as_mut_ptr() as *mut u8;
        for offset in 0..8 {
            for len in 1..=16 {
                let data: [u8; 16] = core::array::from_fn(|i| (i * 7 + offset + len) as u8);
                let mut back = [0u8; 16];
                // SAFETY: offset + len <= 24 < 64 bytes of `memory`.
                unsafe {
                    copy_to_window(base.add(offset), &data[..len]);
                    copy_from_window(base.add(offset), &mut back[..len]);
                }
                assert_eq!(back[..len], data[..len], "offset {offset} len {len}");
            }
        }
    }
}
