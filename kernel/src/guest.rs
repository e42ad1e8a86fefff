//! Putting the guest in its memory: its ELF image at its physical addresses,
//! and a multiboot2 information block whose memory map hides the hypervisor.

use crate::policy::PhysRange;
use crate::service::elf;

/// Where the guest's multiboot2 information block goes (low guest RAM).
pub const INFO_BLOCK: u64 = 0x1_0000;
const INFO_BLOCK_MAX: usize = 4096;
const MULTIBOOT2_MAGIC: u64 = 0x36d7_6289;

#[derive(Clone, Copy, Debug)]
pub enum GuestLoadError {
    Elf(elf::ElfError),
    SegmentOutsideGuestRam(u64),
    InfoBlockTooLarge,
}

impl core::fmt::Display for GuestLoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            GuestLoadError::Elf(error) => write!(f, "bad ELF image: {error:?}"),
            GuestLoadError::SegmentOutsideGuestRam(address) => {
                write!(
                    f,
                    "the segment at {address:#x} does not lie in guest RAM below 4 GiB"
                )
            }
            GuestLoadError::InfoBlockTooLarge => {
                write!(f, "the multiboot2 information block does not fit")
            }
        }
    }
}

/// What the vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct GuestEntry {
    pub rip: u64,
    pub rax: u64,
    pub rbx: u64,
}

/// Whether all of `[start, end)` is usable guest RAM (not hidden, not trapped).
fn in_guest_ram(start: u64, end: u64) -> bool {
    let platform = crate::platform();
    platform
        .guest_ram
        .iter()
        .any(|ram| ram.start <= start && end <= ram.end)
        && !platform
            .config
            .traps
            .iter()
            .any(|trap| trap.start < end && start < trap.end)
}

/// Copies the guest image to its physical addresses and writes the
/// information block; returns the entry state.
pub fn load(bytes: &[u8], command_line: &str) -> Result<GuestEntry, GuestLoadError> {
    let image = elf::Image::parse(bytes).map_err(GuestLoadError::Elf)?;
    for segment in image.segments() {
        let segment = segment.map_err(GuestLoadError::Elf)?;
        let start = segment.physical_address;
        let end = start
            .checked_add(segment.memory_size)
            .ok_or(GuestLoadError::SegmentOutsideGuestRam(start))?;
        if !in_guest_ram(start, end) || end > 1 << 32 {
            return Err(GuestLoadError::SegmentOutsideGuestRam(start));
        }
        // SAFETY: the range is guest RAM below 4 GiB (identity-mapped in the
        // core's tables) that no one else uses before the guest starts.
        unsafe {
            core::ptr::copy_nonoverlapping(
                segment.data.as_ptr(),
                start as *mut u8,
                segment.data.len(),
            );
            core::ptr::write_bytes(
                (start + segment.data.len() as u64) as *mut u8,
                0,
                (segment.memory_size - segment.data.len() as u64) as usize,
            );
        }
    }
    write_info_block(command_line)?;
    Ok(GuestEntry {
        rip: image.entry(),
        rax: MULTIBOOT2_MAGIC,
        rbx: INFO_BLOCK,
    })
}

/// Builds the multiboot2 information block (command line, boot-loader name,
/// memory map) at [`INFO_BLOCK`].
fn write_info_block(command_line: &str) -> Result<(), GuestLoadError> {
    let mut block = InfoWriter {
        bytes: [0; INFO_BLOCK_MAX],
        length: 8,
    };
    block.tag(1, |w| w.bytes_nul(command_line.as_bytes()))?;
    block.tag(2, |w| w.bytes_nul(b"Cordon"))?;
    block.tag(6, |w| {
        w.u32(24)?;
        w.u32(0)?;
        for (range, kind) in guest_memory_map() {
            w.u64(range.start)?;
            w.u64(range.end - range.start)?;
            w.u32(kind)?;
            w.u32(0)?;
        }
        Ok(())
    })?;
    block.tag(0, |_| Ok(()))?;
    let length = block.length;
    block.bytes[..4].copy_from_slice(&(length as u32).to_le_bytes());
    if !in_guest_ram(INFO_BLOCK, INFO_BLOCK + length as u64) {
        return Err(GuestLoadError::InfoBlockTooLarge);
    }
    // SAFETY: the block's range was checked to be guest RAM, identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(block.bytes.as_ptr(), INFO_BLOCK as *mut u8, length) };
    Ok(())
}

/// The firmware's map with the hypervisor region turned into a reserved entry.
fn guest_memory_map() -> impl Iterator<Item = (PhysRange, u32)> {
    const AVAILABLE: u32 = 1;
    const RESERVED: u32 = 2;
    let platform = crate::platform();
    let hidden = platform.hypervisor;
    platform
        .firmware_map
        .iter()
        .flat_map(move |&(range, available)| {
            let kind = if available { AVAILABLE } else { RESERVED };
            let pieces = range.subtract(&hidden);
            let overlap = PhysRange::new(range.start.max(hidden.start), range.end.min(hidden.end));
            pieces
                .into_iter()
                .flatten()
                .map(move |piece| (piece, kind))
                .chain(overlap.filter(|_| available).map(|piece| (piece, RESERVED)))
        })
}

struct InfoWriter {
    bytes: [u8; INFO_BLOCK_MAX],
    length: usize,
}

impl InfoWriter {
    fn put(&mut self, data: &[u8]) -> Result<(), GuestLoadError> {
        let end = self.length + data.len();
        self.bytes
            .get_mut(self.length..end)
            .ok_or(GuestLoadError::InfoBlockTooLarge)?
            .copy_from_slice(data);
        self.length = end;
        Ok(())
    }
    fn u32(&mut self, value: u32) -> Result<(), GuestLoadError> {
        self.put(&value.to_le_bytes())
    }
    fn u64(&mut self, value: u64) -> Result<(), GuestLoadError> {
        self.put(&value.to_le_bytes())
    }
    fn bytes_nul(&mut self, data: &[u8]) -> Result<(), GuestLoadError> {
        self.put(data)?;
        self.put(&[0])
    }
    /// Writes one tag (type, size, body) padded to 8 bytes.
    fn tag(
        &mut self,
        kind: u32,
        body: impl FnOnce(&mut Self) -> Result<(), GuestLoadError>,
    ) -> Result<(), GuestLoadError> {
        let start = self.length;
        self.u32(kind)?;
        self.u32(0)?;
        body(self)?;
        let size = (self.length - start) as u32;
        self.bytes[start + 4..start + 8].copy_from_slice(&size.to_le_bytes());
        while !self.length.is_multiple_of(8) {
            self.put(&[0])?;
        }
        Ok(())
    }
}

/// Reads a u64 of guest RAM (for the core's own needs, such as PAE PDPTEs).
pub fn read_guest_u64(gpa: u64) -> Option<u64> {
    if !gpa.is_multiple_of(8) || !in_guest_ram(gpa, gpa + 8) || gpa + 8 > 1 << 32 {
        return None;
    }
    // SAFETY: checked to be aligned guest RAM below 4 GiB, identity-mapped in
    // the core's tables (active during exit handling).
    Some(unsafe { (gpa as *const u64).read_volatile() })
}
