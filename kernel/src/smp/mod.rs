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
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
/// Local APIC ID of each CPU index (valid below `CPU_COUNT`).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The guest sent INIT to this vCPU; applied before its next VM entry.
static INIT_REQUESTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// This vCPU waits for SIPI (an INIT to it changes nothing).
static WAITING_FOR_SIPI: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
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
    for (slot, &id) in APIC_IDS.iter().zip(apic_ids) {
        slot.store(id, Ordering::SeqCst);
    }
    CPU_COUNT.store(apic_ids.len(), Ordering::SeqCst);
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
    WAITING_FOR_SIPI[index].store(true, Ordering::SeqCst);
    ONLINE[index].store(true, Ordering::Release);
    crate::service::start_thread(cpu)
}

/// Activity states (SDM Vol. 3 25.4.2).
pub const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;

/// A hardware INIT reached a vCPU (the service hands guest INITs to the
/// core instead, but firmware or another agent may still send one).
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
    enter_init_state(cpu);
    vm::resume(cpu)
}

/// `init_cpu`: the guest on this CPU sent INIT to `apic_id` (or to all
/// others). Each target vCPU that is not already waiting for SIPI is put in
/// the INIT state before its next entry; a remote one is made to leave the
/// guest with an NMI. Real INITs are not used: a CPU blocks them in VMX root
/// and wait-for-SIPI, and Bochs 2.7 never clears one it turned into an exit.
pub fn request_init(cpu: &PerCpu, apic_id: u64) -> Result<u64, abi::SyscallError> {
    let count = CPU_COUNT.load(Ordering::SeqCst).max(1);
    let all_others = apic_id == abi::syscall::INIT_ALL_EXCLUDING_SELF;
    let mut targets = 0;
    for index in 0..count {
        let id = u64::from(APIC_IDS[index].load(Ordering::SeqCst));
        let chosen = if all_others {
            index != cpu.index
        } else {
            id == apic_id
        };
        if !chosen || WAITING_FOR_SIPI[index].load(Ordering::SeqCst) {
            targets += u64::from(chosen);
            continue;
        }
        targets += 1;
        INIT_REQUESTED[index].store(true, Ordering::SeqCst);
        if index != cpu.index {
            println!(
                "cordon: cpu {}: INIT for running cpu {index}, sending it an NMI",
                cpu.index
            );
            send_nmi(id as u32);
        }
    }
    if targets == 0 && !all_others {
        return Err(abi::SyscallError::BadArgument);
    }
    Ok(targets)
}

/// Sends an NMI to `apic_id`, keeping the guest's ICR destination.
fn send_nmi(apic_id: u32) {
    const ICR_NMI: u32 = 0x400;
    // Syscalls run on the service's page tables, which do not map the local
    // APIC; the core's own tables do (the syscall path restores the service's
    // before returning to it).
    // SAFETY: the core's tables map everything the core runs on.
    unsafe { crate::regs::write_cr3(crate::arch::kernel_pml4()) };
    let guest_destination = lapic_read(ICR_HIGH);
    send_ipi(apic_id, ICR_NMI);
    lapic_write(ICR_HIGH, guest_destination);
}

/// Applies a pending INIT request before a VM entry; true if there was one.
pub fn apply_init_request(cpu: &mut PerCpu) -> bool {
    if !INIT_REQUESTED[cpu.index].swap(false, Ordering::SeqCst) {
        return false;
    }
    enter_init_state(cpu);
    true
}

/// An NMI exit: the core's own signal (an INIT request, applied on the way
/// back in), or an NMI for the guest, which gets it.
pub fn handle_nmi(cpu: &mut PerCpu) -> ! {
    const NMI_INJECTION: u64 = (1 << 31) | (2 << 8) | 2;
    if !INIT_REQUESTED[cpu.index].load(Ordering::SeqCst) {
        write(cpu, f::ENTRY_INTERRUPTION_INFO, NMI_INJECTION);
    }
    vm::resume(cpu)
}

/// Puts the vCPU in real mode with CS = `code_selector` (base selector * 16)
/// at `rip`, every other segment null, the INIT register state otherwise.
fn enter_real_mode(cpu: &mut PerCpu, code_selector: u64, code_base: u64, rip: u64) {
    const CODE16: u64 = 0x9b;
    const DATA16: u64 = 0x93;
    for segment in 0..6 {
        let (selector, base, rights) = if segment == 1 {
            (code_selector, code_base, CODE16)
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
    write(cpu, f::GUEST_RIP, rip);
}

/// Puts the vCPU in the INIT state: real mode at F000:FFF0, no blocking,
/// nothing pending, waiting for SIPI.
fn enter_init_state(cpu: &mut PerCpu) {
    println!("cordon: cpu {}: INIT, vCPU waits for SIPI", cpu.index);
    enter_real_mode(cpu, 0xf000, 0xffff_0000, 0xfff0);
    write(cpu, f::GUEST_ACTIVITY_STATE, ACTIVITY_WAIT_FOR_SIPI);
    WAITING_FOR_SIPI[cpu.index].store(true, Ordering::SeqCst);
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
    enter_real_mode(cpu, vector << 8, vector << 12, 0);
    write(cpu, f::GUEST_ACTIVITY_STATE, 0);
    cpu.started_by_sipi = true;
    WAITING_FOR_SIPI[cpu.index].store(false, Ordering::SeqCst);
    INIT_REQUESTED[cpu.index].store(false, Ordering::SeqCst);
    vm::resume(cpu)
}
