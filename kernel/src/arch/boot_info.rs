//! `BootInfo`: what the early boot hands the core: the multiboot2 information
//! block (command line, memory map, modules) and the frame allocator.

use super::frames::{FrameAllocator, HYPERVISOR_REGION_END, HYPERVISOR_REGION_START};
use core::ops::Range;
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
use x86_64::structures::tss::TaskStateSegment;

/// The multiboot2 bootloader magic in EAX at entry.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

/// Why the boot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX did not hold the multiboot2 magic: not started by a multiboot2 loader.
    WrongMagic(u32),
    /// The information block is malformed.
    Malformed,
    /// There is no memory map tag, so no memory can be trusted.
    NoMemoryMap,
    /// A module or the information block lies (partly) outside the hypervisor
    /// region, where the guest could read or overwrite it.
    OutsideHypervisorRegion { start: u64, end: u64 },
}

/// A GRUB module: its name (the `module2` line's argument) and where it lies.
#[derive(Clone, Debug)]
pub struct BootModule<'a> {
    pub name: &'a str,
    pub range: Range<u64>,
}

impl BootModule<'_> {
    /// The module's bytes. Module memory is reserved from the frame allocator
    /// and hidden from guests, so nothing writes it after boot.
    pub fn contents(&self) -> &'static [u8] {
        let length = usize::try_from(self.range.end - self.range.start).unwrap_or(0);
        // SAFETY: GRUB placed the module in RAM below 4 GiB, which the boot page
        // tables identity-map; the range is excluded from the frame pool and
        // from every guest, so it stays valid and unmodified for ever.
        unsafe { core::slice::from_raw_parts(self.range.start as *const u8, length) }
    }
}

/// The kind of a memory-map region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Available,
    /// Anything else (reserved, ACPI, defective, firmware-specific).
    Reserved,
}

/// One region of the firmware's memory map.
#[derive(Clone, Debug)]
pub struct MemoryRegion {
    pub range: Range<u64>,
    pub kind: MemoryKind,
}

/// The boot information handed to `kernel::start`.
pub struct BootInfo {
    multiboot: BootInformation<'static>,
    /// Physical address of the multiboot2 information block.
    pub multiboot_address: u64,
    /// Physical range of the kernel image (code, data, .bss).
    pub kernel_image: Range<u64>,
    /// Frames of the hypervisor region not used by the image, modules or boot
    /// information. (Modules and the information block are checked to lie
    /// inside the hypervisor region, hidden from the guest.)
    pub frames: FrameAllocator,
    /// The boot CPU's task-state segment (set `privilege_stack_table[0]` to the
    /// stack for interrupts that arrive in ring 3).
    pub boot_cpu_tss: &'static mut TaskStateSegment,
}

impl BootInfo {
    /// Parses the information block GRUB left at `address` and builds the frame
    /// allocator around everything that must stay untouched.
    ///
    /// # Safety
    /// `address` must be the EBX value the multiboot2 loader passed, and the
    /// block must stay unmodified for ever (it is reserved from the frame pool).
    pub unsafe fn parse(
        magic: u32,
        address: u32,
        boot_cpu_tss: &'static mut TaskStateSegment,
    ) -> Result<BootInfo, BootInfoError> {
        if magic != MULTIBOOT2_BOOTLOADER_MAGIC {
            return Err(BootInfoError::WrongMagic(magic));
        }
        let header = address as usize as *const BootInformationHeader;
        // SAFETY: the loader guarantees a valid block at this identity-mapped
        // address; the crate checks the sizes and the tag sequence.
        let multiboot =
            unsafe { BootInformation::load(header) }.map_err(|_| BootInfoError::Malformed)?;
        let memory_map = multiboot
            .memory_map_tag()
            .ok_or(BootInfoError::NoMemoryMap)?;
        let kernel_image = super::boot::kernel_image();
        let information_block = multiboot.start_address() as u64..multiboot.end_address() as u64;
        let hypervisor_region = HYPERVISOR_REGION_START..HYPERVISOR_REGION_END;
        let module_ranges = multiboot
            .module_tags()
            .map(|module| u64::from(module.start_address())..u64::from(module.end_address()));
        for range in module_ranges.chain([information_block.clone()]) {
            let inside = hypervisor_region.start <= range.start
                && range.start <= range.end
                && range.end <= hypervisor_region.end;
            if !inside {
                return Err(BootInfoError::OutsideHypervisorRegion {
                    start: range.start,
                    end: range.end,
                });
            }
        }

        let available = memory_map
            .memory_areas()
            .iter()
            .filter(|area| area.typ() == MemoryAreaType::Available)
            .map(|area| area.start_address()..area.start_address().saturating_add(area.size()));
        let modules = multiboot
            .module_tags()
            .map(|module| u64::from(module.start_address())..u64::from(module.end_address()));
        let reserved = modules.chain([kernel_image.clone(), information_block]);
        let frames = FrameAllocator::new(available, reserved);

        Ok(BootInfo {
            multiboot,
            multiboot_address: u64::from(address),
            kernel_image,
            frames,
            boot_cpu_tss,
        })
    }

    /// The kernel command line (empty if the loader gave none or it is not UTF-8).
    pub fn command_line(&self) -> &str {
        self.multiboot
            .command_line_tag()
            .and_then(|tag| tag.cmdline().ok())
            .unwrap_or("")
    }

    /// The GRUB modules in the order of the `module2` lines. A module whose
    /// end lies before its start is skipped.
    pub fn modules(&self) -> impl Iterator<Item = BootModule<'_>> {
        self.multiboot.module_tags().filter_map(|module| {
            let range = u64::from(module.start_address())..u64::from(module.end_address());
            (range.start <= range.end).then(|| BootModule {
                name: module.cmdline().unwrap_or(""),
                range,
            })
        })
    }

    /// The module whose name is `name` (the first word of its `module2` argument
    /// line), if any.
    pub fn module(&self, name: &str) -> Option<BootModule<'_>> {
        self.modules()
            .find(|module| module.name.split_whitespace().next() == Some(name))
    }

    /// The firmware memory map.
    pub fn memory_map(&self) -> impl Iterator<Item = MemoryRegion> + '_ {
        self.multiboot
            .memory_map_tag()
            .map(|tag| tag.memory_areas())
            .unwrap_or(&[])
            .iter()
            .map(|area| MemoryRegion {
                range: area.start_address()..area.start_address().saturating_add(area.size()),
                kind: if area.typ() == MemoryAreaType::Available {
                    MemoryKind::Available
                } else {
                    MemoryKind::Reserved
                },
            })
    }

    /// The raw multiboot2 information, for tags not covered above.
    pub fn multiboot(&self) -> &BootInformation<'static> {
        &self.multiboot
    }
}
