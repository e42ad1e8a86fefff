//! The ring-3 service: its image loaded once, and one instance per CPU
//! (address space, thread, message page, map window) that receives that CPU's
//! exits and can be restarted alone when it fails.

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

/// Largest number of distinct user regions (image segments and thread areas).
const MAX_REGIONS: usize = 16;
/// Restarts allowed for one pending exit before the core gives up on the VM.
const MAX_RESTARTS_PER_EXIT: u32 = 3;

/// The loaded service image, shared by every CPU's instance.
pub struct Service {
    image: elf::Image<'static>,
    pub capabilities: CapabilityTable,
}

/// One CPU's instance of the service: its own address space, in which the
/// code and read-only data are shared with the other instances and the
/// writable data, stack, message page and map window are its own. Instances
/// share no writable memory, so one can be restarted alone.
pub struct Instance {
    pub space: AddressSpace,
    /// Where the service may point the core (image, stack, message page).
    pub regions: Vec<UserRegion, MAX_REGIONS>,
}

static SERVICE: Once<Service> = Once::new();
static INSTANCES: [Once<Instance>; crate::cpu::MAX_CPUS] =
    [const { Once::new() }; crate::cpu::MAX_CPUS];

/// The loaded service.
pub fn get() -> &'static Service {
    SERVICE
        .get()
        .expect("the service is loaded before any CPU enters it")
}

/// CPU `index`'s instance.
pub fn instance(index: usize) -> &'static Instance {
    INSTANCES[index]
        .get()
        .expect("each CPU's instance is created at load")
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
            LoadError::SegmentOutsideImageArea => write!(
                f,
                "a segment or the entry lies outside {:#x}-{:#x}",
                space::USER_START,
                space::IMAGE_END
            ),
            LoadError::SegmentsSharePage(page) => {
                write!(f, "two segments share the page at {page:#x}")
            }
            LoadError::TooManyRegions => {
                write!(f, "more than {MAX_REGIONS} segments and thread areas")
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

/// The user pages a segment covers.
fn segment_pages(segment: &elf::Segment) -> impl Iterator<Item = u64> + use<> {
    let start = segment.virtual_address & !(PAGE_SIZE - 1);
    let end = segment.virtual_address + segment.memory_size;
    (start..end).step_by(PAGE_SIZE as usize)
}

/// The pages of the thread's stack.
fn stack_pages() -> impl Iterator<Item = u64> {
    (space::STACK_TOP - space::STACK_SIZE..space::STACK_TOP).step_by(PAGE_SIZE as usize)
}

/// Loads the service image and creates an instance for each of `cpus` CPUs.
pub fn load(
    bytes: &'static [u8],
    capabilities: CapabilityTable,
    cpus: usize,
) -> Result<(), LoadError> {
    let image = elf::Image::parse(bytes)?;
    for segment in image.segments() {
        let segment = segment?;
        let end = segment.virtual_address.checked_add(segment.memory_size);
        if segment.virtual_address < space::USER_START
            || end.is_none_or(|end| end > space::IMAGE_END)
        {
            return Err(LoadError::SegmentOutsideImageArea);
        }
    }
    let entry = image.entry();
    if !(space::USER_START..space::IMAGE_END).contains(&entry) {
        return Err(LoadError::SegmentOutsideImageArea);
    }
    let service = SERVICE.call_once(|| Service {
        image,
        capabilities,
    });
    for (cpu, slot) in INSTANCES.iter().enumerate().take(cpus) {
        let instance = create_instance(service, cpu)?;
        slot.call_once(|| instance);
    }
    println!(
        "cordon: service loaded: entry {entry:#x}, {cpus} instances, {} capabilities",
        service.capabilities.entries().len()
    );
    Ok(())
}

/// Builds CPU `cpu`'s address space: read-only pages shared with instance 0,
/// everything writable fresh.
fn create_instance(service: &Service, cpu: usize) -> Result<Instance, LoadError> {
    let space = AddressSpace::new(crate::arch::kernel_page_directories())?;
    let mut regions = Vec::new();
    let fresh = || memory::zeroed_frame().ok_or(space::SpaceError::OutOfFrames);
    for segment in service.image.segments() {
        let segment = segment?;
        let flags = PageFlags {
            writable: segment.writable,
            executable: segment.executable,
            uncached: false,
        };
        for page in segment_pages(&segment) {
            let shared = if cpu == 0 || segment.writable {
                None
            } else {
                instance(0).space.frame_of(page)
            };
            let frame = match shared {
                Some(frame) => frame,
                None => {
                    let frame = fresh()?;
                    copy_segment_page(&segment, page, frame);
                    frame
                }
            };
            if space.map(page, frame, flags)?.is_some() {
                return Err(LoadError::SegmentsSharePage(page));
            }
        }
        let end = segment.virtual_address + segment.memory_size;
        let region = UserRegion {
            start: segment.virtual_address,
            end,
            writable: segment.writable,
        };
        regions
            .push(region)
            .map_err(|_| LoadError::TooManyRegions)?;
    }
    let data = PageFlags {
        writable: true,
        executable: false,
        uncached: false,
    };
    for page in stack_pages() {
        space.map(page, fresh()?, data)?;
    }
    space.map(space::MESSAGE_PAGE, fresh()?, data)?;
    space.prepare(space::MAP_WINDOW)?;
    for region in [
        UserRegion {
            start: space::STACK_TOP - space::STACK_SIZE,
            end: space::STACK_TOP,
            writable: true,
        },
        UserRegion {
            start: space::MESSAGE_PAGE,
            end: space::MESSAGE_PAGE + PAGE_SIZE,
            writable: true,
        },
    ] {
        regions
            .push(region)
            .map_err(|_| LoadError::TooManyRegions)?;
    }
    Ok(Instance { space, regions })
}

/// Zeroes a frame of the current CPU's instance.
fn zero_frame(frame: u64) {
    // SAFETY: callers pass frames of this CPU's instance (identity-mapped
    // hypervisor memory) while its thread is not running.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Puts CPU `cpu`'s instance back to its loaded state: writable data re-copied
/// from the image, stack zeroed, map window emptied. The message page keeps
/// the pending exit, which the new thread receives again.
fn reset_instance(cpu: usize) {
    let instance = instance(cpu);
    let writable = get()
        .image
        .segments()
        .flatten()
        .filter(|segment| segment.writable);
    for segment in writable {
        for page in segment_pages(&segment) {
            if let Some(frame) = instance.space.frame_of(page) {
                zero_frame(frame);
                copy_segment_page(&segment, page, frame);
            }
        }
    }
    stack_pages()
        .filter_map(|page| instance.space.frame_of(page))
        .for_each(zero_frame);
    for slot in 0..MAP_SLOTS {
        let address = space::MAP_WINDOW + slot * PAGE_SIZE;
        if instance.space.unmap(address).is_ok() {
            crate::regs::invlpg(address);
        }
    }
}

/// The service thread on `cpu` faulted or exited: restart it from its image,
/// unless it already failed too often on the same exit.
pub fn restart(cpu: &mut PerCpu, why: core::fmt::Arguments) -> ! {
    cpu.restarts_in_a_row += 1;
    cpu.restarts += 1;
    if cpu.restarts_in_a_row > MAX_RESTARTS_PER_EXIT {
        crate::vm::stop(
            cpu,
            format_args!(
                "the service failed {MAX_RESTARTS_PER_EXIT} times in a row ({why}); giving up"
            ),
        );
    }
    println!(
        "cordon: service on cpu {}: {why}; restarting it (restart {})",
        cpu.index, cpu.restarts
    );
    reset_instance(cpu.index);
    start_thread(cpu)
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

/// Physical frame behind this CPU's message page.
pub fn message_frame(cpu: usize) -> u64 {
    instance(cpu)
        .space
        .frame_of(space::MESSAGE_PAGE)
        .expect("message pages are mapped at load")
}

/// Starts this CPU's service thread at the image's entry point.
pub fn start_thread(cpu: &mut PerCpu) -> ! {
    let start = ServiceStart {
        message_page: space::MESSAGE_PAGE,
        cpu: cpu.index as u64,
        map_window: space::MAP_WINDOW,
        restarts: u64::from(cpu.restarts),
    };
    cpu.user = crate::cpu::Registers::default();
    cpu.user.gprs[7] = start.message_page;
    cpu.user.gprs[6] = start.cpu;
    cpu.user.gprs[2] = start.map_window;
    cpu.user.gprs[8] = start.restarts;
    cpu.user.gprs[4] = space::STACK_TOP - 8;
    cpu.user.rip = get().image.entry();
    syscall::return_to_service(cpu)
}

/// Writes the pending exit into this CPU's message page and returns to the
/// service from its `reply_recv`.
pub fn deliver_exit(cpu: &mut PerCpu) -> ! {
    let bytes = zerocopy::IntoBytes::as_bytes(&cpu.pending);
    let frame = message_frame(cpu.index);
    // SAFETY: the message frame is the instance's, identity-mapped for the
    // core; the service may race with this write, which only harms its view.
    unsafe { window::copy_to_physical(frame, bytes) };
    cpu.user.gprs[0] = 0;
    cpu.user.gprs[2] = cpu.pending.sequence;
    syscall::return_to_service(cpu)
}

/// An exception in the service thread: the service is at fault, not the core
/// or the guest. Reports it and restarts this CPU's instance.
pub fn fault(vector: u64, error_code: u64, rip: u64) -> ! {
    // SAFETY: called once from the exception path with GS restored; no other
    // reference to this CPU's slot is live (the service was running).
    let cpu = unsafe { crate::cpu::this_cpu() };
    let cr2 = crate::regs::cr2();
    restart(
        cpu,
        format_args!(
            "service fault: exception {vector} (error code {error_code:#x}) at rip {rip:#x}, cr2 {cr2:#x}"
        ),
    )
}
