//! The ring-3 service: loading its ELF into its own address space, one thread
//! per CPU (stack, message page, map window), and handing it exits.

pub mod elf;
pub mod space;
pub mod syscall;
pub mod window;

use crate::cpu::PerCpu;
use crate::policy::capability::CapabilityTable;
use crate::policy::user_range::UserRegion;
use crate::{memory, println};
use abi::syscall::MAP_SLOTS;
use abi::{PAGE_SIZE, ServiceStart};
use heapless::Vec;
use space::{AddressSpace, PageFlags};
use spin::Once;

/// Largest number of distinct user regions (image segments and per-CPU areas).
const MAX_REGIONS: usize = 24;

/// A loaded service.
#[derive(Debug)]
pub struct Service {
    pub space: AddressSpace,
    pub entry: u64,
    /// Where the service may point the core (image, stacks, message pages).
    pub regions: Vec<UserRegion, MAX_REGIONS>,
    pub capabilities: CapabilityTable,
}

static SERVICE: Once<Service> = Once::new();

/// The loaded service.
pub fn get() -> &'static Service {
    SERVICE
        .get()
        .expect("the service is loaded before any CPU enters it")
}

#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    Elf(elf::ElfError),
    Space(space::SpaceError),
    SegmentOutsideImageArea,
    /// Two segments overlap in one page (link services with page-aligned segments).
    SegmentsSharePage(u64),
    TooManyRegions,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::Elf(error) => write!(f, "bad ELF image: {error:?}"),
            LoadError::Space(error) => write!(f, "cannot build its address space: {error:?}"),
            LoadError::SegmentOutsideImageArea => {
                write!(
                    f,
                    "a segment or the entry lies outside {:#x}-{:#x}",
                    space::USER_START,
                    space::IMAGE_END
                )
            }
            LoadError::SegmentsSharePage(page) => {
                write!(f, "two segments share the page at {page:#x}")
            }
            LoadError::TooManyRegions => {
                write!(f, "more than {MAX_REGIONS} segments and per-CPU areas")
            }
        }
    }
}

impl From<space::SpaceError> for LoadError {
    fn from(error: space::SpaceError) -> Self {
        LoadError::Space(error)
    }
}

impl From<elf::ElfError> for LoadError {
    fn from(error: elf::ElfError) -> Self {
        LoadError::Elf(error)
    }
}

/// Loads the service image and prepares a thread for each of `cpus` CPUs.
pub fn load(bytes: &[u8], capabilities: CapabilityTable, cpus: usize) -> Result<(), LoadError> {
    let image = elf::Image::parse(bytes)?;
    let space = AddressSpace::new(crate::arch::kernel_page_directories())?;
    let mut regions = Vec::new();
    for segment in image.segments() {
        let segment = segment?;
        let start = segment.virtual_address & !(PAGE_SIZE - 1);
        let end = segment
            .virtual_address
            .checked_add(segment.memory_size)
            .ok_or(LoadError::SegmentOutsideImageArea)?;
        if start < space::USER_START || end > space::IMAGE_END {
            return Err(LoadError::SegmentOutsideImageArea);
        }
        let flags = PageFlags {
            writable: segment.writable,
            executable: segment.executable,
            uncached: false,
        };
        let mut page = start;
        while page < end {
            let frame = memory::zeroed_frame().ok_or(space::SpaceError::OutOfFrames)?;
            copy_segment_page(&segment, page, frame);
            if space.map(page, frame, flags)?.is_some() {
                return Err(LoadError::SegmentsSharePage(page));
            }
            page += PAGE_SIZE;
        }
        regions
            .push(UserRegion {
                start: segment.virtual_address,
                end,
                writable: segment.writable,
            })
            .map_err(|_| LoadError::TooManyRegions)?;
    }
    if image.entry() < space::USER_START || image.entry() >= space::IMAGE_END {
        return Err(LoadError::SegmentOutsideImageArea);
    }
    for cpu in 0..cpus as u64 {
        let stack_top = space::STACKS + (cpu + 1) * space::STACK_STRIDE;
        let data = PageFlags {
            writable: true,
            executable: false,
            uncached: false,
        };
        let mut page = stack_top - space::STACK_SIZE;
        while page < stack_top {
            space.map(
                page,
                memory::zeroed_frame().ok_or(space::SpaceError::OutOfFrames)?,
                data,
            )?;
            page += PAGE_SIZE;
        }
        space.prepare(map_window_address(cpu as usize))?;
        let message = message_page_address(cpu as usize);
        space.map(
            message,
            memory::zeroed_frame().ok_or(space::SpaceError::OutOfFrames)?,
            data,
        )?;
        for region in [
            UserRegion {
                start: stack_top - space::STACK_SIZE,
                end: stack_top,
                writable: true,
            },
            UserRegion {
                start: message,
                end: message + PAGE_SIZE,
                writable: true,
            },
        ] {
            regions
                .push(region)
                .map_err(|_| LoadError::TooManyRegions)?;
        }
    }
    println!(
        "cordon: service loaded: entry {:#x}, {} user regions, {} capabilities",
        image.entry(),
        regions.len(),
        capabilities.entries().len()
    );
    SERVICE.call_once(|| Service {
        space,
        entry: image.entry(),
        regions,
        capabilities,
    });
    Ok(())
}

/// Copies the part of `segment` that falls in user page `page` into `frame`.
fn copy_segment_page(segment: &elf::Segment, page: u64, frame: u64) {
    let data_start = segment.virtual_address;
    let data_end = data_start + segment.data.len() as u64;
    let from = page.max(data_start);
    let to = (page + PAGE_SIZE).min(data_end);
    if from < to {
        let source = &segment.data[(from - data_start) as usize..(to - data_start) as usize];
        // SAFETY: `frame` is a hypervisor frame (identity-mapped) reserved for
        // this page; the copy stays within it (from..to lies in one page).
        unsafe {
            core::ptr::copy_nonoverlapping(
                source.as_ptr(),
                (frame + (from - page)) as *mut u8,
                source.len(),
            );
        }
    }
}

pub fn message_page_address(cpu: usize) -> u64 {
    space::MESSAGE_PAGES + cpu as u64 * PAGE_SIZE
}

pub fn map_window_address(cpu: usize) -> u64 {
    space::MAP_WINDOWS + cpu as u64 * MAP_SLOTS * PAGE_SIZE
}

/// Physical frame behind this CPU's message page.
fn message_frame(cpu: usize) -> u64 {
    window::user_frame(message_page_address(cpu)).expect("message pages are mapped at load")
}

/// Starts this CPU's service thread at the image's entry point.
pub fn start_thread(cpu: &mut PerCpu) -> ! {
    let service = get();
    let start = ServiceStart {
        message_page: message_page_address(cpu.index),
        cpu: cpu.index as u64,
        map_window: map_window_address(cpu.index),
    };
    cpu.user = crate::cpu::Registers::default();
    cpu.user.gprs[7] = start.message_page;
    cpu.user.gprs[6] = start.cpu;
    cpu.user.gprs[2] = start.map_window;
    cpu.user.gprs[4] = space::STACKS + (cpu.index as u64 + 1) * space::STACK_STRIDE - 8;
    cpu.user.rip = service.entry;
    syscall::return_to_service(cpu)
}

/// Writes the pending exit into this CPU's message page and returns to the
/// service from its `reply_recv`.
pub fn deliver_exit(cpu: &mut PerCpu) -> ! {
    let bytes = zerocopy::IntoBytes::as_bytes(&cpu.pending);
    let frame = message_frame(cpu.index);
    // SAFETY: the message frame is the service's, identity-mapped for the core;
    // the service may race with this write, which only harms its own view.
    unsafe { window::copy_to_physical(frame, bytes) };
    cpu.user.gprs[0] = 0;
    cpu.user.gprs[2] = cpu.pending.sequence;
    syscall::return_to_service(cpu)
}

/// An exception in the service thread: the service is at fault, not the core
/// or the guest. Reports it and stops this CPU's VM.
pub fn fault(vector: u64, error_code: u64, rip: u64) -> ! {
    // SAFETY: called once from the exception path with GS restored; no other
    // reference to this CPU's slot is live (the service was running).
    let cpu = unsafe { crate::cpu::this_cpu() };
    crate::vm::stop(
        cpu,
        format_args!(
            "service fault: exception {vector} (error code {error_code:#x}) at service rip {rip:#x}, cr2 {:#x}",
            crate::regs::cr2()
        ),
    )
}
