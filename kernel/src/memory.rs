//! The core's physical memory after boot: the frame allocator behind a lock,
//! zeroed frames, and access to frames through the boot identity map.

use crate::arch::frames::FrameAllocator;
use spin::{Mutex, Once};

static FRAMES: Once<Mutex<FrameAllocator>> = Once::new();

/// Takes over the boot frame allocator.
pub fn init(frames: FrameAllocator) {
    FRAMES.call_once(|| Mutex::new(frames));
}

/// A zeroed 4 KiB frame from the hypervisor region.
pub fn zeroed_frame() -> Option<u64> {
    let frame = FRAMES.get()?.lock().allocate()?;
    // SAFETY: the frame is free, in the hypervisor region (identity-mapped
    // below 32 MiB) and now ours alone.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, 4096) };
    Some(frame)
}

/// The paging structure (or any 4 KiB table) at physical `frame`.
pub fn table(frame: u64) -> &'static mut [u64; 512] {
    // SAFETY: callers pass frames they allocated for tables; the hypervisor
    // region is identity-mapped in every address space the core runs on.
    unsafe { &mut *(frame as *mut [u64; 512]) }
}

/// The EPT builder's view of the frame pool.
pub struct EptFrames;

impl crate::ept::TableFrames for EptFrames {
    fn allocate(&mut self) -> Option<u64> {
        zeroed_frame()
    }

    fn table(&mut self, frame: u64) -> &mut [u64; 512] {
        table(frame)
    }
}
