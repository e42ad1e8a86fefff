//! The application processors: finding them in the ACPI MADT, starting them
//! with INIT-SIPI-SIPI into the trampoline, bringing each into VMX root with
//! its own vCPU (waiting for the guest's SIPI), and the guest's own AP start-up
//! (INIT and SIPI exits).

mod trampoline;

use crate::arch::BootInfo;
use crate::cpu::{MAX_CPUS, PerCpu};
use crate::exits::{read, write};
use crate::vmx::fields as f;
use crate::{acpi, println, vm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use heapless::Vec;

const LAPIC: u64 = 0xfee0_0000;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_INIT_ASSERT: u32 = 0x4500;
const ICR_STARTUP: u32 = 0x4600;
/// Spins to wait for an AP before giving up on it.
const AP_WAIT_SPINS: u64 = 200_000_000;

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The EPT pointer the APs' vCPUs use, published before they start.
static EPTP: AtomicU64 = AtomicU64::new(0);

/// The APIC IDs of all CPUs, the boot CPU first, at most [`MAX_CPUS`].
pub fn apic_ids(boot: &BootInfo) -> Vec<u32, MAX_CPUS> {
    let boot_id = u32::from(crate::arch::initial_apic_id());
    let mut ids: Vec<u32, MAX_CPUS> = Vec::new();
    let _ = ids.push(boot_id);
    for id in madt(boot).iter().filter(|&&id| id != boot_id) {
        if ids.push(*id).is_err() {
            println!("cordon: more than {MAX_CPUS} CPUs; using the first {MAX_CPUS}");
            break;
        }
    }
    ids
}

/// Reads the MADT's APIC IDs through the RSDP the loader passed.
fn madt(boot: &BootInfo) -> Vec<u32, { acpi::MAX_APIC_IDS }> {
    let multiboot = boot.multiboot();
    let root = match (multiboot.rsdp_v2_tag(), multiboot.rsdp_v1_tag()) {
        (Some(v2), _) if v2.xsdt_address() != 0 => Some((v2.xsdt_address() as u64, *b"XSDT", 8)),
        (_, Some(v1)) => Some((v1.rsdt_address() as u64, *b"RSDT", 4)),
        _ => None,
    };
    let Some((address, signature, entry_size)) = root else {
        println!("cordon: no ACPI tables; running on the boot CPU only");
        return Vec::new();
    };
    let Some(root) = physical_table(address, &signature) else {
        return Vec::new();
    };
    acpi::root_entries(root, entry_size)
        .filter_map(|table| physical_table(table, b"APIC"))
        .map(acpi::madt_apic_ids)
        .next()
        .unwrap_or_default()
}

/// An ACPI table in firmware memory, checked.
fn physical_table(address: u64, signature: &[u8; 4]) -> Option<&'static [u8]> {
    const LIMIT: u64 = 1 << 32;
    if address == 0 || address >= LIMIT - acpi::HEADER_LENGTH as u64 {
        return None;
    }
    // SAFETY: ACPI tables lie in firmware-reserved RAM below 4 GiB, which the
    // boot tables identity-map; they are read-only from here on.
    let header = unsafe { &*(address as *const [u8; acpi::HEADER_LENGTH]) };
    let length = acpi::table_length(header) as u64;
    if length > 1 << 20 || address + length > LIMIT {
        return None;
    }
    // SAFETY: as above, for the table's full length (bounded).
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, length as usize) };
    acpi::checked_table(bytes, signature).ok()
}

fn lapic_write(register: u64, value: u32) {
    // SAFETY: the local APIC page is identity-mapped uncached in the core's
    // tables; ICR writes only send IPIs.
    unsafe { ((LAPIC + register) as *mut u32).write_volatile(value) };
}

fn lapic_read(register: u64) -> u32 {
    // SAFETY: as in `lapic_write`; reads have no side effects.
    unsafe { ((LAPIC + register) as *const u32).read_volatile() }
}

fn send_ipi(apic_id: u32, command: u32) {
    lapic_write(ICR_HIGH, apic_id << 24);
    lapic_write(ICR_LOW, command);
    while lapic_read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
}

fn spin(iterations: u64) {
    for _ in 0..iterations {
        core::hint::spin_loop();
    }
}

/// Starts every AP in `apic_ids[1..]`; each comes up in VMX root with its
/// vCPU waiting for the guest's SIPI and its service thread started.
/// Returns how many CPUs are online, the boot CPU included.
pub fn start_aps(apic_ids: &[u32], eptp: u64) -> usize {
    EPTP.store(eptp, Ordering::SeqCst);
    // SAFETY: page 0x7000 is guest RAM the guest image does not use and that
    // nobody touches until the guest starts, after all APs are up.
    unsafe {
        trampoline::install(
            crate::arch::kernel_pml4(),
            ap_entry as *const () as usize as u64,
        )
    };
    let mut online = 1;
    for (index, &apic_id) in apic_ids.iter().enumerate().skip(1) {
        // SAFETY: the previous AP has reported in, so none reads the fields.
        unsafe { trampoline::prepare(crate::cpu::kernel_stack_top(index), index as u64) };
        send_ipi(apic_id, ICR_INIT_ASSERT);
        spin(100_000);
        for _ in 0..2 {
            send_ipi(apic_id, ICR_STARTUP | (trampoline::BASE >> 12) as u32);
            spin(20_000);
        }
        let mut waited = 0;
        while !ONLINE[index].load(Ordering::Acquire) && waited < AP_WAIT_SPINS {
            core::hint::spin_loop();
            waited += 1;
        }
        if !ONLINE[index].load(Ordering::Acquire) {
            println!(
                "cordon: cpu {index} (apic id {apic_id}) did not start; continuing without it"
            );
            break;
        }
        online += 1;
    }
    online
}

/// First Rust code on an AP, on its kernel stack with the core's page tables.
extern "C" fn ap_entry(index: usize) -> ! {
    let cpu = crate::platform::bring_up_cpu(index);
    println!(
        "cordon: cpu {index} up (apic id {}), vCPU waiting for SIPI",
        crate::arch::initial_apic_id()
    );
    crate::platform::prepare_vcpu(cpu, EPTP.load(Ordering::SeqCst), None);
    ONLINE[index].store(true, Ordering::Release);
    crate::service::start_thread(cpu)
}

/// Activity states (SDM Vol. 3 25.4.2).
pub const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;

/// An INIT reached a vCPU: like the real CPU, it takes the INIT state (real
/// mode, no blocking of any kind, nothing pending) and waits for a SIPI.
pub fn handle_init(cpu: &mut PerCpu) -> ! {
    if core::mem::take(&mut cpu.started_by_sipi) && read(f::GUEST_RIP) == 0 {
        // The CPU blocks INIT in wait-for-SIPI and delivers it right after
        // the SIPI start (an INIT de-assert IPI, or a second INIT): the vCPU
        // was already in the INIT state then, so it has nothing to do.
        println!(
            "cordon: cpu {}: INIT held back during wait-for-SIPI, dropped",
            cpu.index
        );
        vm::resume(cpu)
    }
    println!("cordon: cpu {}: INIT, vCPU waits for SIPI", cpu.index);
    const CODE16: u64 = 0x9b;
    const DATA16: u64 = 0x93;
    for segment in 0..6 {
        let (selector, base, rights) = if segment == 1 {
            (0xf000, 0xffff_0000, CODE16)
        } else {
            (0, 0, DATA16)
        };
        write(
            cpu,
            f::segment_field(f::GUEST_ES_SELECTOR, segment),
            selector,
        );
        write(cpu, f::segment_field(f::GUEST_ES_BASE, segment), base);
        write(cpu, f::segment_field(f::GUEST_ES_LIMIT, segment), 0xffff);
        write(
            cpu,
            f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, segment),
            rights,
        );
    }
    crate::vmx::vmcs::reset_to_real_mode(cpu);
    cpu.guest.gprs = [0; 16];
    write(cpu, f::GUEST_RIP, 0xfff0);
    write(cpu, f::GUEST_ACTIVITY_STATE, ACTIVITY_WAIT_FOR_SIPI);
    vm::resume(cpu)
}

/// A SIPI reached a vCPU waiting for one: it starts in real mode at the
/// vector's page, as a real AP does.
pub fn handle_sipi(cpu: &mut PerCpu) -> ! {
    let vector = read(f::EXIT_QUALIFICATION) & 0xff;
    println!(
        "cordon: cpu {}: SIPI, vCPU starts at {:#x}",
        cpu.index,
        vector << 12
    );
    const CODE16: u64 = 0x9b;
    const DATA16: u64 = 0x93;
    for segment in 0..6 {
        let (selector, base, rights) = if segment == 1 {
            (vector << 8, vector << 12, CODE16)
        } else {
            (0, 0, DATA16)
        };
        write(
            cpu,
            f::segment_field(f::GUEST_ES_SELECTOR, segment),
            selector,
        );
        write(cpu, f::segment_field(f::GUEST_ES_BASE, segment), base);
        write(cpu, f::segment_field(f::GUEST_ES_LIMIT, segment), 0xffff);
        write(
            cpu,
            f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, segment),
            rights,
        );
    }
    crate::vmx::vmcs::reset_to_real_mode(cpu);
    cpu.guest.gprs = [0; 16];
    // EDX holds the processor signature after INIT, as CPUID leaf 1 EAX.
    cpu.guest.gprs[2] = u64::from(crate::regs::cpuid(1, 0)[0]);
    write(cpu, f::GUEST_RIP, 0);
    write(cpu, f::GUEST_ACTIVITY_STATE, 0);
    cpu.started_by_sipi = true;
    vm::resume(cpu)
}
