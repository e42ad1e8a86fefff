//! The physical frame allocator for the hypervisor's own memory: the 4 KiB
//! frames of [1 MiB, 32 MiB) that the firmware reports as available RAM, minus
//! the kernel image, the GRUB modules and the multiboot2 information block.
//!
//! A fixed bitmap (one bit per frame of the region), so every operation is
//! bounded and nothing here allocates. Pure logic, unit-tested on the host.

use core::ops::Range;

/// Size of one frame.
pub const FRAME_SIZE: u64 = 4096;
/// Start of the hypervisor's region (below it: real-mode memory and firmware).
pub const HYPERVISOR_REGION_START: u64 = 0x10_0000;
/// End of the hypervisor's region (exclusive); guests own memory from here up.
pub const HYPERVISOR_REGION_END: u64 = 0x200_0000;

const FRAME_COUNT: usize = (HYPERVISOR_REGION_END / FRAME_SIZE) as usize;
const WORD_BITS: usize = 64;
const WORD_COUNT: usize = FRAME_COUNT / WORD_BITS;

/// Why a frame could not be returned to the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not a multiple of [`FRAME_SIZE`].
    Misaligned,
    /// The frame is not one the allocator manages.
    OutsidePool,
    /// The frame is not currently allocated (a double free).
    NotAllocated,
}

/// Bitmap allocator over the hypervisor region; a set bit means "not free".
pub struct FrameAllocator {
    in_use: [u64; WORD_COUNT],
    managed: [u64; WORD_COUNT],
    free_frames: usize,
}

impl FrameAllocator {
    /// Builds the pool: every whole frame inside an `available` range and the
    /// hypervisor region, except those touching a `reserved` range.
    pub fn new(
        available: impl IntoIterator<Item = Range<u64>>,
        reserved: impl IntoIterator<Item = Range<u64>>,
    ) -> FrameAllocator {
        let mut allocator = FrameAllocator {
            in_use: [u64::MAX; WORD_COUNT],
            managed: [0; WORD_COUNT],
            free_frames: 0,
        };
        for range in available {
            let start = align_up(range.start.max(HYPERVISOR_REGION_START));
            let end = align_down(range.end.min(HYPERVISOR_REGION_END));
            for index in frame_indices(start, end) {
                allocator.set_managed(index);
            }
        }
        for range in reserved {
            let start = align_down(range.start);
            let end = align_up(range.end.min(HYPERVISOR_REGION_END));
            for index in frame_indices(start, end) {
                allocator.clear_managed(index);
            }
        }
        allocator.in_use = allocator.managed.map(|word| !word);
        allocator.free_frames = allocator
            .managed
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum();
        allocator
    }

    /// Number of frames currently free.
    pub fn free_frames(&self) -> usize {
        self.free_frames
    }

    /// Takes one free frame; returns its physical address. The contents are
    /// whatever was there before.
    pub fn allocate(&mut self) -> Option<u64> {
        let (word_index, word) = self
            .in_use
            .iter()
            .enumerate()
            .find(|(_, word)| **word != u64::MAX)?;
        let index = word_index * WORD_BITS + word.trailing_ones() as usize;
        self.mark(index, true);
        Some(index as u64 * FRAME_SIZE)
    }

    /// Takes `count` physically contiguous free frames; returns the address of
    /// the first. First fit, scanning the region once.
    pub fn allocate_contiguous(&mut self, count: usize) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let mut run_start = 0;
        let mut run_length = 0;
        for index in 0..FRAME_COUNT {
            if self.is_in_use(index) {
                run_length = 0;
                continue;
            }
            if run_length == 0 {
                run_start = index;
            }
            run_length += 1;
            if run_length == count {
                for taken in run_start..run_start + count {
                    self.mark(taken, true);
                }
                return Some(run_start as u64 * FRAME_SIZE);
            }
        }
        None
    }

    /// Returns a frame obtained from `allocate` or `allocate_contiguous`.
    pub fn free(&mut self, address: u64) -> Result<(), FrameError> {
        if !address.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::Misaligned);
        }
        let index = usize::try_from(address / FRAME_SIZE).map_err(|_| FrameError::OutsidePool)?;
        if index >= FRAME_COUNT || !self.is_managed(index) {
            return Err(FrameError::OutsidePool);
        }
        if !self.is_in_use(index) {
            return Err(FrameError::NotAllocated);
        }
        self.mark(index, false);
        Ok(())
    }

    fn is_in_use(&self, index: usize) -> bool {
        self.in_use[index / WORD_BITS] & bit(index) != 0
    }

    fn is_managed(&self, index: usize) -> bool {
        self.managed[index / WORD_BITS] & bit(index) != 0
    }

    fn set_managed(&mut self, index: usize) {
        self.managed[index / WORD_BITS] |= bit(index);
    }

    fn clear_managed(&mut self, index: usize) {
        self.managed[index / WORD_BITS] &= !bit(index);
    }

    fn mark(&mut self, index: usize, in_use: bool) {
        let word = &mut self.in_use[index / WORD_BITS];
        if in_use {
            *word |= bit(index);
            self.free_frames -= 1;
        } else {
            *word &= !bit(index);
            self.free_frames += 1;
        }
    }
}

fn bit(index: usize) -> u64 {
    1 << (index % WORD_BITS)
}

fn align_up(address: u64) -> u64 {
    address
        .checked_next_multiple_of(FRAME_SIZE)
        .unwrap_or(u64::MAX - (FRAME_SIZE - 1))
}

fn align_down(address: u64) -> u64 {
    address - address % FRAME_SIZE
}

/// Indices of the frames in [start, end) that lie inside the region; both
/// bounds are frame-aligned.
fn frame_indices(start: u64, end: u64) -> Range<usize> {
    let clamp = |address: u64| (address.min(HYPERVISOR_REGION_END) / FRAME_SIZE) as usize;
    let (first, last) = (clamp(start), clamp(end));
    first..last.max(first)
}

#[cfg(test)]
#[allow(
    clippy::single_range_in_vec_init,
    clippy::reversed_empty_ranges,
    reason = "the memory maps here are lists of ranges, some deliberately reversed"
)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pool_is_the_available_part_of_the_region_minus_reservations() {
        let frames = FrameAllocator::new(
            [0..0x9f000, MIB..128 * MIB],
            [MIB..MIB + 0x5_0800, 3 * MIB..4 * MIB],
        );
        let pool = 31 * MIB - 0x5_1000 - MIB;
        assert_eq!(frames.free_frames() as u64, pool / FRAME_SIZE);
    }

    #[test]
    fn allocations_are_inside_the_pool_and_distinct() {
        let mut frames = FrameAllocator::new([MIB..2 * MIB], [MIB..MIB + 0x3000]);
        let first = frames.allocate();
        let second = frames.allocate();
        assert_eq!(first, Some(MIB + 0x3000));
        assert_eq!(second, Some(MIB + 0x4000));
        let mut count = 2;
        while let Some(address) = frames.allocate() {
            assert!((MIB + 0x5000..2 * MIB).contains(&address));
            count += 1;
        }
        assert_eq!(count, (MIB - 0x3000) / FRAME_SIZE);
        assert_eq!(frames.free_frames(), 0);
    }

    #[test]
    fn unaligned_and_out_of_region_ranges_are_trimmed() {
        let frames = FrameAllocator::new([0x10_0001..0x10_3fff, 30 * MIB..u64::MAX], []);
        // 0x101000..0x103000 (2 frames) plus 30..32 MiB (512 frames).
        assert_eq!(frames.free_frames(), 2 + 512);
        let reversed = FrameAllocator::new([5 * MIB..4 * MIB], []);
        assert_eq!(reversed.free_frames(), 0);
    }

    #[test]
    fn free_rejects_misaligned_foreign_and_double_frees() {
        let mut frames = FrameAllocator::new([MIB..2 * MIB], []);
        let address = frames.allocate().expect("a frame");
        assert_eq!(frames.free(address + 1), Err(FrameError::Misaligned));
        assert_eq!(frames.free(40 * MIB), Err(FrameError::OutsidePool));
        assert_eq!(frames.free(0x8000), Err(FrameError::OutsidePool));
        assert_eq!(frames.free(address), Ok(()));
        assert_eq!(frames.free(address), Err(FrameError::NotAllocated));
        assert_eq!(frames.allocate(), Some(address));
    }

    #[test]
    fn contiguous_runs_skip_holes() {
        let mut frames = FrameAllocator::new([MIB..MIB + 0x10000], [MIB + 0x2000..MIB + 0x3000]);
        assert_eq!(frames.allocate_contiguous(3), Some(MIB + 0x3000));
        assert_eq!(frames.allocate_contiguous(2), Some(MIB));
        assert_eq!(frames.allocate_contiguous(0), None);
        assert_eq!(frames.allocate_contiguous(100), None);
        assert_eq!(frames.free_frames(), 16 - 1 - 3 - 2);
    }
}
