//! The global allocator: talc over a static arena in .bss (iced-x86's decoder
//! allocates its tables, about 85 KB, on first use). Shared by every service
//! thread, hence the spin lock.

use spinning_top::RawSpinlock;
use talc::TalcLock;
use talc::source::Claim;

/// Size of the heap arena.
const ARENA_SIZE: usize = 1 << 20;

#[global_allocator]
static ALLOCATOR: TalcLock<RawSpinlock, Claim> = TalcLock::new({
    static mut ARENA: [u8; ARENA_SIZE] = [0; ARENA_SIZE];
    // SAFETY: ARENA is used by nothing but this allocator.
    unsafe { Claim::array(&raw mut ARENA) }
});
