//! Test and measurement support for the Cordon emulator, shared by its
//! integration tests, benchmarks and fuzz target: guest memory with real
//! atomics, page tables, exit states, and a native sandbox that runs one
//! instruction on the host CPU for differential testing.

pub mod broken;
pub mod drive;
pub mod memory;
pub mod native;
pub mod paging;
pub mod rng;
pub mod scene;
pub mod state;

pub use broken::NonAtomicGuest;
pub use memory::{FRAME_SIZE, GuestMemory, SharedGuest};
pub use paging::{FrameAllocator, PageAttributes, PageTables, PagingMode};
pub use rng::Rng;
pub use scene::Scene;
