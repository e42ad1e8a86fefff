//! Rights a service can hold over a range of guest-physical memory, and ask for
//! in `map`.

/// Access rights, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights;

impl Rights {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// Atomic compare-exchange through the `cmpxchg` syscall.
    pub const CMPXCHG: u64 = 1 << 2;
    pub const ALL: u64 = Self::READ | Self::WRITE | Self::CMPXCHG;
}
