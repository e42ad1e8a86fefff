//! A service instance's address space: the kernel's first gigabyte
//! (supervisor-only, shared with the core's own tables) plus the user mappings
//! in the second gigabyte: the image, a stack, a message page and a map window.

use crate::memory;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The user half lies in [USER_START, USER_END): one page directory's worth.
pub const USER_START: u64 = 0x4000_0000;
pub const USER_END: u64 = 0x8000_0000;
/// Service images must lie below this; the thread's areas come after it.
pub const IMAGE_END: u64 = 0x6000_0000;
/// The thread's 64 KiB stack ends here (an unmapped gap lies below it).
pub const STACK_TOP: u64 = 0x7002_0000;
pub const STACK_SIZE: u64 = 0x1_0000;
/// The message page: the exit message, and the reply at
/// `abi::ServiceStart::REPLY_OFFSET`.
pub const MESSAGE_PAGE: u64 = 0x7800_0000;
/// The map window of `abi::syscall::MAP_SLOTS` pages.
pub const MAP_WINDOW: u64 = 0x7c00_0000;

/// How a user page is mapped.
#[derive(Clone, Copy, Debug)]
pub struct PageFlags {
    pub writable: bool,
    pub executable: bool,
    pub uncached: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    OutOfFrames,
    OutsideUserHalf,
}

/// The page tables of one service.
#[derive(Debug)]
pub struct AddressSpace {
    /// Physical address of the PML4 (the CR3 value).
    pub root: u64,
    user_directory: u64,
}

impl AddressSpace {
    /// A space with the kernel's first gigabyte and an empty user half.
    pub fn new(kernel_directory: u64) -> Result<AddressSpace, SpaceError> {
        let root = memory::zeroed_frame().ok_or(SpaceError::OutOfFrames)?;
        let pointers = memory::zeroed_frame().ok_or(SpaceError::OutOfFrames)?;
        let user_directory = memory::zeroed_frame().ok_or(SpaceError::OutOfFrames)?;
        memory::table(root)[0] = pointers | PRESENT | WRITABLE | USER;
        memory::table(pointers)[0] = kernel_directory | PRESENT | WRITABLE;
        memory::table(pointers)[1] = user_directory | PRESENT | WRITABLE | USER;
        Ok(AddressSpace {
            root,
            user_directory,
        })
    }

    /// The page-table entry slot for user page `address`, creating its table.
    fn entry(&self, address: u64) -> Result<&'static mut u64, SpaceError> {
        if !(USER_START..USER_END).contains(&address) {
            return Err(SpaceError::OutsideUserHalf);
        }
        let directory = memory::table(self.user_directory);
        let slot = ((address >> 21) & 0x1ff) as usize;
        if directory[slot] & PRESENT == 0 {
            let table = memory::zeroed_frame().ok_or(SpaceError::OutOfFrames)?;
            directory[slot] = table | PRESENT | WRITABLE | USER;
        }
        let table = memory::table(directory[slot] & ADDRESS_MASK);
        Ok(&mut table[((address >> 12) & 0x1ff) as usize])
    }

    /// Maps user page `address` to `frame`; returns the previous frame, if any.
    pub fn map(
        &self,
        address: u64,
        frame: u64,
        flags: PageFlags,
    ) -> Result<Option<u64>, SpaceError> {
        let entry = self.entry(address)?;
        let old = (*entry & PRESENT != 0).then_some(*entry & ADDRESS_MASK);
        let mut value = (frame & ADDRESS_MASK) | PRESENT | USER;
        if flags.writable {
            value |= WRITABLE;
        }
        if !flags.executable {
            value |= NO_EXECUTE;
        }
        if flags.uncached {
            value |= CACHE_DISABLE | WRITE_THROUGH;
        }
        *entry = value;
        Ok(old)
    }

    /// Creates the page table for user page `address` ahead of time, so
    /// later `map` calls on different CPUs never race to create it.
    pub fn prepare(&self, address: u64) -> Result<(), SpaceError> {
        self.entry(address).map(drop)
    }

    /// Removes the mapping of user page `address`.
    pub fn unmap(&self, address: u64) -> Result<(), SpaceError> {
        *self.entry(address)? = 0;
        Ok(())
    }
}

impl AddressSpace {
    /// The frame mapped at user page `address`, if any.
    pub fn frame_of(&self, address: u64) -> Option<u64> {
        if !(USER_START..USER_END).contains(&address) {
            return None;
        }
        let directory_entry =
            memory::table(self.user_directory)[((address >> 21) & 0x1ff) as usize];
        if directory_entry & PRESENT == 0 {
            return None;
        }
        let entry =
            memory::table(directory_entry & ADDRESS_MASK)[((address >> 12) & 0x1ff) as usize];
        (entry & PRESENT != 0).then_some(entry & ADDRESS_MASK)
    }
}
