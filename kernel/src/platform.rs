//! Bring-up of the core on the boot CPU, in order: configuration, memory
//! layout, the service, the guest image, the EPT, VMX; and the facts about
//! the machine the rest of the core looks up afterwards.

use crate::arch::frames::{HYPERVISOR_REGION_END, HYPERVISOR_REGION_START};
use crate::arch::{BootInfo, MemoryKind};
use crate::ept::{self, GuestLayout};
use crate::policy::PhysRange;
use crate::policy::capability::CapabilityTable;
use crate::policy::cmdline::{Config, X2apic};
use crate::vmx::vmcs::{self, GuestStart};
use crate::{cpu, guest, memory, println, regs, service, vmx};
use core::ops::Range;
use heapless::Vec;
use spin::Once;

/// Memory-map entries the core keeps (the error message names this number).
const MAX_REGIONS: usize = 32;

/// What the core knows about the machine after boot.
pub struct Platform {
    pub config: Config,
    /// The firmware memory map: (range, available).
    pub firmware_map: Vec<(PhysRange, bool), MAX_REGIONS>,
    /// RAM the guest owns: available memory minus the hypervisor region.
    pub guest_ram: Vec<PhysRange, MAX_REGIONS>,
    /// Memory mapped write-back (RAM and the BIOS areas below 1 MiB).
    pub write_back: Vec<Range<u64>, MAX_REGIONS>,
    /// The hypervisor's own memory, hidden from the guest.
    pub hypervisor: PhysRange,
    /// Offset of the YMM upper halves in the XSAVE area, when AVX is usable.
    pub ymm_upper: Option<usize>,
}

static PLATFORM: Once<Platform> = Once::new();

pub fn platform() -> &'static Platform {
    PLATFORM
        .get()
        .expect("the platform is set up before any VM exit")
}

pub fn config() -> &'static Config {
    &platform().config
}

impl Config {
    pub fn is_trapped(&self, gpa: u64) -> bool {
        self.traps.iter().any(|trap| trap.contains(gpa))
    }

    pub fn hide_x2apic(&self) -> bool {
        self.x2apic == X2apic::Hide
    }
}

/// Whether `gpa` is RAM (mapped write-back) rather than a device.
pub fn is_ram(gpa: u64) -> bool {
    platform()
        .write_back
        .iter()
        .any(|range| range.contains(&gpa))
}

pub fn ymm_upper_offset() -> Option<usize> {
    platform().ymm_upper
}

/// Ends the run: every VM is done or stopped.
pub fn finish(success: bool) -> ! {
    crate::arch::shutdown(success)
}

/// Stops during bring-up with a reason.
fn fail(why: core::fmt::Arguments) -> ! {
    println!("cordon: FATAL {why}");
    finish(false)
}

/// Brings the core up on the boot CPU and starts the guest.
pub fn start(boot: crate::arch::BootInfo) -> ! {
    let config = match Config::parse(boot.command_line()) {
        Ok(config) => config,
        Err(error) => fail(format_args!("{error}")),
    };
    if let Err(why) = vmx::check_support() {
        println!("cordon: {why}");
        finish(false);
    }
    let hypervisor = PhysRange {
        start: HYPERVISOR_REGION_START,
        end: HYPERVISOR_REGION_END,
    };
    for module in boot.modules() {
        if module.range.start < hypervisor.start || module.range.end > hypervisor.end {
            fail(format_args!(
                "module `{}` at {:#x?} lies outside the hypervisor region",
                module.name, module.range
            ));
        }
    }
    let ymm_upper = enable_xsave();
    let platform = match describe_memory(&boot, config, hypervisor, ymm_upper) {
        Ok(platform) => PLATFORM.call_once(|| platform),
        Err(why) => fail(format_args!("{why}")),
    };
    println!(
        "cordon: {} trapped ranges, x2APIC {}, guest RAM {:#x?}",
        platform.config.traps.len(),
        if platform.config.hide_x2apic() {
            "hidden"
        } else {
            "shown"
        },
        platform.guest_ram.as_slice()
    );

    let apic_ids = crate::smp::apic_ids(&boot);
    let service_module = boot
        .module("service")
        .unwrap_or_else(|| fail(format_args!("no `service` module")));
    let guest_module = boot
        .module("guest")
        .unwrap_or_else(|| fail(format_args!("no `guest` module")));
    let (service_image, guest_image) = (service_module.contents(), guest_module.contents());
    let mut guest_command_line: heapless::String<256> = heapless::String::new();
    let arguments = guest_module
        .name
        .split_once(' ')
        .map_or("", |(_, rest)| rest);
    if guest_command_line.push_str(arguments).is_err() {
        fail(format_args!(
            "the guest command line is longer than 256 bytes"
        ));
    }
    let BootInfo {
        frames,
        boot_cpu_tss,
        ..
    } = boot;
    memory::init(frames);
    if service::window::init().is_none() {
        fail(format_args!("out of frames for the cmpxchg windows"));
    }

    let capabilities = CapabilityTable::new(&platform.config, &platform.guest_ram, hypervisor)
        .unwrap_or_else(|error| fail(format_args!("{}", error.describe())));
    if let Err(error) = service::load(service_image, capabilities, apic_ids.len()) {
        fail(format_args!("cannot load the service: {error}"));
    }
    let entry = guest::load(guest_image, &guest_command_line)
        .unwrap_or_else(|error| fail(format_args!("cannot load the guest: {error}")));

    let mut not_present: Vec<Range<u64>, 24> = Vec::new();
    let hidden = core::iter::once(hypervisor).chain(platform.config.traps.iter().copied());
    for range in hidden {
        if not_present.push(range.start..range.end).is_err() {
            fail(format_args!("too many trapped ranges"));
        }
    }
    let top = platform
        .guest_ram
        .iter()
        .map(|ram| ram.end)
        .max()
        .unwrap_or(0);
    let layout = GuestLayout {
        ram: &platform.write_back,
        not_present: &not_present,
        limit: top.max(1 << 32),
    };
    let eptp = ept::build(&layout, &mut memory::EptFrames)
        .unwrap_or_else(|error| fail(format_args!("cannot build the EPT: {error:?}")));

    let cpus = crate::smp::start_aps(&apic_ids, eptp);
    println!("cordon: {cpus} of {} CPUs online", apic_ids.len());
    let cpu = bring_up_cpu_with_tss(0, boot_cpu_tss);
    prepare_vcpu(cpu, eptp, Some(entry));
    println!(
        "cordon: guest entry {:#x}, starting the service on cpu 0",
        entry.rip
    );
    service::start_thread(cpu)
}

/// Per-CPU descriptor tables of the APs (the boot CPU's come from early boot).
static AP_TABLES: [crate::arch::take_once::TakeOnce<crate::arch::gdt::CpuTables>; cpu::MAX_CPUS] =
    [const { crate::arch::take_once::TakeOnce::new(crate::arch::gdt::CpuTables::new()) };
        cpu::MAX_CPUS];

/// Brings an AP to where the boot CPU is after early boot plus the core's
/// per-CPU state: descriptor tables, exceptions, extended state, SYSCALL, VMX.
pub fn bring_up_cpu(index: usize) -> &'static mut cpu::PerCpu {
    let Some(tables) = AP_TABLES.get(index).and_then(|slot| slot.take()) else {
        fail(format_args!(
            "cpu {index} brought up twice or beyond MAX_CPUS"
        ));
    };
    let tss = tables.load();
    crate::arch::load_exception_table();
    enable_xsave();
    bring_up_cpu_with_tss(index, tss)
}

fn bring_up_cpu_with_tss(
    index: usize,
    tss: &'static mut x86_64::structures::tss::TaskStateSegment,
) -> &'static mut cpu::PerCpu {
    // SAFETY: each CPU initialises its own slot once, on itself.
    let cpu = unsafe { cpu::init(index, xsave_supported()) };
    service::window::protect_supervisor();
    // Exceptions in the service thread arrive on the kernel stack.
    tss.privilege_stack_table[0] = x86_64::VirtAddr::new(cpu.kernel_stack_top);
    // SAFETY: the GDT has the layout the syscall MSRs assume.
    unsafe { service::syscall::init() };
    let frame =
        || memory::zeroed_frame().unwrap_or_else(|| fail(format_args!("out of frames for VMX")));
    cpu.vmxon_region = frame();
    cpu.vmcs = frame();
    cpu.msr_area = frame();
    // SAFETY: support was checked and the region is a fresh zeroed frame.
    if let Err(why) = unsafe { vmx::enable(cpu.vmxon_region) } {
        fail(format_args!("cpu {index}: {why}"));
    }
    cpu
}

/// Creates the CPU's vCPU: started at the guest's entry (boot CPU) or
/// waiting for the guest's SIPI (APs).
pub fn prepare_vcpu(cpu: &mut cpu::PerCpu, eptp: u64, entry: Option<guest::GuestEntry>) {
    let msr_bitmap =
        memory::zeroed_frame().unwrap_or_else(|| fail(format_args!("out of frames for VMX")));
    let start = GuestStart {
        rip: entry.map_or(0, |entry| entry.rip),
        rax: entry.map_or(0, |entry| entry.rax),
        rbx: entry.map_or(0, |entry| entry.rbx),
        eptp,
        vpid: cpu.index as u16 + 1,
        wait_for_sipi: entry.is_none(),
    };
    // SAFETY: VMX is on and the frames are fresh and reserved for this CPU.
    if let Err(error) = unsafe { vmcs::setup(cpu, msr_bitmap, &start) } {
        fail(format_args!(
            "cpu {}: cannot set up the VMCS: {error}",
            cpu.index
        ));
    }
    if let Err(error) = vmx::insn::invept_single(eptp) {
        println!("cordon: INVEPT failed ({error:?}); continuing with a fresh EPT");
    }
    cpu.guest.gprs[0] = start.rax;
    cpu.guest.gprs[3] = start.rbx;
}

fn xsave_supported() -> bool {
    regs::cpuid(1, 0)[2] & (1 << 26) != 0
}

/// Turns on XSAVE (so guest AVX state can be saved) and returns the offset of
/// the YMM upper halves when AVX is available.
fn enable_xsave() -> Option<usize> {
    if !xsave_supported() {
        return None;
    }
    // SAFETY: CPUID reports XSAVE, so CR4.OSXSAVE may be set; XCR0 gets x87
    // and SSE, plus AVX when the CPU supports it (all valid combinations).
    unsafe {
        regs::write_cr4(regs::cr4() | (1 << 18));
        let supported = regs::cpuid(0xd, 0)[0];
        let xcr0 = 0b11 | (supported & 0b100);
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0, in("edx") 0);
    }
    crate::xstate::ymm_upper_offset()
}

/// The error for a memory map with more regions than the core keeps.
fn too_large<T>(_: T) -> &'static str {
    "the firmware memory map has more regions than the core keeps (32)"
}

fn describe_memory(
    boot: &BootInfo,
    config: Config,
    hypervisor: PhysRange,
    ymm_upper: Option<usize>,
) -> Result<Platform, &'static str> {
    let mut platform = Platform {
        config,
        firmware_map: Vec::new(),
        guest_ram: Vec::new(),
        write_back: Vec::new(),
        hypervisor,
        ymm_upper,
    };
    // Below 1 MiB everything but the legacy video hole is RAM or ROM.
    platform.write_back.push(0..0xa_0000).map_err(too_large)?;
    platform
        .write_back
        .push(0xc_0000..0x10_0000)
        .map_err(too_large)?;
    for region in boot.memory_map() {
        let Some(range) = PhysRange::new(region.range.start, region.range.end) else {
            continue;
        };
        let available = region.kind == MemoryKind::Available;
        platform
            .firmware_map
            .push((range, available))
            .map_err(too_large)?;
        if available {
            platform
                .write_back
                .push(range.start..range.end)
                .map_err(too_large)?;
            for piece in range.subtract(&hypervisor).into_iter().flatten() {
                platform.guest_ram.push(piece).map_err(too_large)?;
            }
        }
    }
    Ok(platform)
}
