//! Deliberately broken guests for negative controls: an experiment that is
//! meant to catch a bug must fail when the bug is put in on purpose.

use crate::memory::{FRAME_SIZE, SharedGuest};
use emulator::{Guest, MemoryError};

/// Compare-exchange as a read, a compare and a plain write (what KVM does
/// for a split locked access), with a yield in between to let other threads
/// in. Reads and writes are passed through.
pub struct NonAtomicGuest<'a>(pub SharedGuest<'a>);

impl Guest for NonAtomicGuest<'_> {
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read_physical(gpa, buf)
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.0.write_physical(gpa, data)
    }

    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError> {
        let width = expected.len();
        if new.len() != width || current.len() != width || usize::from(offset) >= FRAME_SIZE {
            return Err(MemoryError::NoAccess);
        }
        let first = (FRAME_SIZE - usize::from(offset)).min(width);
        let start = pages[0] + u64::from(offset);
        let memory = self.0.memory();
        memory.read(start, &mut current[..first])?;
        memory.read(pages[1], &mut current[first..])?;
        if current != expected {
            return Ok(false);
        }
        std::thread::yield_now();
        memory.write(start, &new[..first])?;
        memory.write(pages[1], &new[first..])?;
        Ok(true)
    }
}
