//! Per-CPU state of the core: the save areas the assembly entry points use
//! (reached through GS), the VMX regions, and the state of this CPU's vCPU and
//! service thread.

use crate::xstate::XsaveArea;
use abi::ExitMessage;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

/// The most CPUs the core will bring up.
pub const MAX_CPUS: usize = 8;
/// Size of each CPU's kernel stack (used by VM exits and syscalls alike).
pub const KERNEL_STACK_SIZE: usize = 64 * 1024;

/// Registers saved by an assembly entry point, in x86 encoding order (the
/// RSP slot is unused for the guest, whose RSP lives in the VMCS).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Registers {
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

/// Where this CPU's vCPU stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// The service has not asked for work yet; the guest has not started.
    NotStarted,
    /// The guest runs (or is about to be resumed).
    Running,
    /// An exit was forwarded and the service has not answered yet.
    AwaitingReply,
    /// The VM was stopped; this CPU idles.
    Stopped,
}

/// Counters over all CPUs, printed when the guest finishes.
#[derive(Debug)]
pub struct Counters {
    pub exits_forwarded: AtomicU64,
    /// Forwarded exits the service answered with a retired instruction.
    pub instructions_retired: AtomicU64,
    pub exceptions_injected: AtomicU64,
    /// Forwarded exits answered with "retry" or with a partly done REP.
    pub retries: AtomicU64,
    pub refused_replies: AtomicU64,
    /// Segment registers loaded for the service (MOV/POP Sreg, LDS and kin).
    pub segment_loads: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    exits_forwarded: AtomicU64::new(0),
    instructions_retired: AtomicU64::new(0),
    exceptions_injected: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    refused_replies: AtomicU64::new(0),
    segment_loads: AtomicU64::new(0),
};

/// Adds one to a counter.
pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One CPU's state. The first fields are read by assembly at fixed offsets.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Address of this struct (GS:0), so assembly can pass it to Rust.
    pub self_ptr: u64,
    pub kernel_stack_top: u64,
    /// Scratch slot for the user RSP during SYSCALL entry.
    pub scratch: u64,
    pub xsave_ptr: u64,
    /// Non-zero when XSAVE/XRSTOR are used (else FXSAVE/FXRSTOR).
    pub use_xsave: u64,
    /// Non-zero once VMLAUNCH succeeded (then VMRESUME is used).
    pub launched: u64,
    /// Guest GPRs at the last VM exit.
    pub guest: Registers,
    /// The service thread's user registers at its last syscall.
    pub user: Registers,
    pub index: usize,
    pub vmxon_region: u64,
    pub vmcs: u64,
    /// Guest and host MSR areas (VM-exit store / VM-entry load, VM-exit load).
    pub msr_area: u64,
    pub state: VcpuState,
    /// The vCPU was just started by a SIPI and has not exited since (an INIT
    /// exit now is one the CPU held back while waiting for the SIPI).
    pub started_by_sipi: bool,
    /// Times the core restarted this CPU's service instance.
    pub restarts: u32,
    /// Restarts since the service last answered an exit.
    pub restarts_in_a_row: u32,
    pub sequence: u64,
    /// The message last forwarded, kept in core memory so a reply is checked
    /// against what the core sent, not against the shared page.
    pub pending: ExitMessage,
    pub xsave: XsaveArea,
}

#[repr(C, align(16))]
struct KernelStack(UnsafeCell<[u8; KERNEL_STACK_SIZE]>);

/// The per-CPU structures, statically allocated in the hypervisor's memory.
struct CpuSlots(UnsafeCell<[core::mem::MaybeUninit<PerCpu>; MAX_CPUS]>);
// SAFETY: each slot is only ever touched by the CPU it belongs to (after
// `init` on that CPU), with interrupts disabled.
unsafe impl Sync for CpuSlots {}
// SAFETY: as above, each stack belongs to one CPU.
unsafe impl Sync for KernelStack {}

static CPUS: CpuSlots = CpuSlots(UnsafeCell::new(
    [const { core::mem::MaybeUninit::uninit() }; MAX_CPUS],
));
static STACKS: [KernelStack; MAX_CPUS] =
    [const { KernelStack(UnsafeCell::new([0; KERNEL_STACK_SIZE])) }; MAX_CPUS];

const IA32_GS_BASE: u32 = 0xc000_0101;

/// The top of CPU `index`'s kernel stack.
pub fn kernel_stack_top(index: usize) -> u64 {
    STACKS[index].0.get() as u64 + KERNEL_STACK_SIZE as u64
}

/// Initialises CPU `index`'s slot and points GS at it. Returns the slot.
///
/// # Safety
/// Called once per CPU, on that CPU, with `index < MAX_CPUS`.
pub unsafe fn init(index: usize, use_xsave: bool) -> &'static mut PerCpu {
    assert!(index < MAX_CPUS);
    // SAFETY: slot `index` belongs to this CPU and is initialised exactly once
    // here; the all-zero pattern is valid for every field (integers, a
    // zeroable ABI struct, and VcpuState is set right after).
    let cpu = unsafe {
        let slot = &mut (*CPUS.0.get())[index];
        core::ptr::write_bytes(slot.as_mut_ptr(), 0, 1);
        slot.assume_init_mut()
    };
    cpu.state = VcpuState::NotStarted;
    cpu.self_ptr = cpu as *mut PerCpu as u64;
    cpu.kernel_stack_top = kernel_stack_top(index);
    cpu.xsave_ptr = &raw mut cpu.xsave as u64;
    cpu.use_xsave = use_xsave as u64;
    cpu.index = index;
    // SAFETY: GS base points at this CPU's slot, which lives for ever.
    unsafe { crate::regs::wrmsr(IA32_GS_BASE, cpu.self_ptr) };
    cpu
}

/// This CPU's slot, found through GS.
///
/// # Safety
/// `init` ran on this CPU, and the caller holds no other reference to the slot
/// (entry points fetch it once and pass it down).
pub unsafe fn this_cpu() -> &'static mut PerCpu {
    let pointer: u64;
    // SAFETY: GS:0 holds `self_ptr` after `init`.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) pointer, options(nostack, readonly)) };
    // SAFETY: per the caller's guarantee, this is the only live reference.
    unsafe { &mut *(pointer as *mut PerCpu) }
}
