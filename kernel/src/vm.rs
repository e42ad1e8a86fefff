//! Actions on this CPU's vCPU: resume it, advance it past an instruction the
//! core handled, inject an exception, or stop it with a full report.

use crate::cpu::{PerCpu, VcpuState};
use crate::exits::{read, write};
use crate::println;
use crate::single_step::{self, InstructionEnd};
use crate::vmx::fields as f;
use core::fmt;

const INTERRUPTIBILITY_STI_MOVSS: u64 = 0b11;
const INTERRUPTIBILITY_MOVSS: u64 = 1 << 1;
const INTERRUPTIBILITY_SMI: u64 = 1 << 2;
const INTERRUPTION_VALID: u64 = 1 << 31;
const INTERRUPTION_DELIVER_ERROR_CODE: u64 = 1 << 11;
const INTERRUPTION_HARDWARE_EXCEPTION: u64 = 3 << 8;

/// Resumes the guest with the state in `cpu` and the current VMCS.
pub fn resume(cpu: &mut PerCpu) -> ! {
    cpu.state = VcpuState::Running;
    crate::smp::apply_init_request(cpu);
    let rsp = cpu.guest.gprs[4];
    write(cpu, f::GUEST_RSP, rsp);
    // The guest never runs in SMM, so it is never blocked by SMI; some CPU
    // models (Bochs for an AP started by SIPI) still record that blocking at
    // exits, and VM entry would refuse it.
    let interruptibility = read(f::GUEST_INTERRUPTIBILITY);
    if interruptibility & INTERRUPTIBILITY_SMI != 0 {
        write(
            cpu,
            f::GUEST_INTERRUPTIBILITY,
            interruptibility & !INTERRUPTIBILITY_SMI,
        );
    }
    // SAFETY: the current VMCS is this CPU's and was set up at start; GS
    // points at `cpu` (entry points fetch it from there).
    unsafe { crate::vmx::entry::enter_guest(cpu) }
}

/// Advances RIP past the instruction that exited (the exit-instruction
/// length is valid for the instruction-caused exits the core handles) and
/// resumes. Blocking by STI or MOV SS ends with that instruction, and with
/// RFLAGS.TF set the single-step trap follows it.
pub fn skip_instruction(cpu: &mut PerCpu) -> ! {
    let rip = read(f::GUEST_RIP).wrapping_add(read(f::EXIT_INSTRUCTION_LENGTH));
    end_instruction(cpu, InstructionEnd::Retired);
    advance_to(cpu, rip);
    resume(cpu)
}

/// Sets RIP after an emulated or handled instruction and ends STI/MOV SS blocking.
pub fn advance_to(cpu: &mut PerCpu, rip: u64) {
    write(cpu, f::GUEST_RIP, rip);
    let interruptibility = read(f::GUEST_INTERRUPTIBILITY);
    if interruptibility & INTERRUPTIBILITY_STI_MOVSS != 0 {
        write(
            cpu,
            f::GUEST_INTERRUPTIBILITY,
            interruptibility & !INTERRUPTIBILITY_STI_MOVSS,
        );
    }
}

/// Sets blocking by MOV SS for the next instruction, after a MOV SS or POP
/// SS the core applied for the service. Any blocking by STI has already
/// ended (the two may not be set together), and VM entry requires the
/// pending single-step trap (BS) to match RFLAGS.TF and DEBUGCTL.BTF while
/// blocking is on: the trap of the MOV SS is delivered after the next
/// instruction, as on the real CPU.
pub fn block_by_mov_ss(cpu: &mut PerCpu) {
    let interruptibility = read(f::GUEST_INTERRUPTIBILITY) & !INTERRUPTIBILITY_STI_MOVSS;
    write(
        cpu,
        f::GUEST_INTERRUPTIBILITY,
        interruptibility | INTERRUPTIBILITY_MOVSS,
    );
    let pending = single_step::pending_while_blocked(
        read(f::GUEST_PENDING_DEBUG_EXCEPTIONS),
        read(f::GUEST_RFLAGS),
        read(f::GUEST_IA32_DEBUGCTL),
    );
    write(cpu, f::GUEST_PENDING_DEBUG_EXCEPTIONS, pending);
}

/// Sets the single-step trap of the instruction at the exit, which ended as
/// `end`, in the pending debug exceptions field (VM entry delivers BS as a #DB
/// with DR6.BS set): pending after a retired instruction or iteration with
/// RFLAGS.TF set and DEBUGCTL.BTF clear, none after a fault or a retry (see
/// `single_step::pending_after`). Called before `advance_to` changes the
/// exit's interruptibility state. RFLAGS.TF is the instruction's own: no reply
/// may change it. The exit saved the guest's DEBUGCTL (the core saves and
/// loads debug controls).
pub fn end_instruction(cpu: &mut PerCpu, end: InstructionEnd) {
    let pending = read(f::GUEST_PENDING_DEBUG_EXCEPTIONS);
    let blocked = read(f::GUEST_INTERRUPTIBILITY) & INTERRUPTIBILITY_STI_MOVSS != 0;
    let after = single_step::pending_after(
        pending,
        end,
        blocked,
        read(f::GUEST_RFLAGS),
        read(f::GUEST_IA32_DEBUGCTL),
    );
    if after != pending {
        write(cpu, f::GUEST_PENDING_DEBUG_EXCEPTIONS, after);
    }
}

/// Queues hardware exception `vector` for the next VM entry.
pub fn queue_exception(cpu: &mut PerCpu, vector: u8, error_code: Option<u32>) {
    let mut info = INTERRUPTION_VALID | INTERRUPTION_HARDWARE_EXCEPTION | u64::from(vector);
    if let Some(code) = error_code {
        info |= INTERRUPTION_DELIVER_ERROR_CODE;
        write(cpu, f::ENTRY_EXCEPTION_ERROR_CODE, u64::from(code));
    }
    write(cpu, f::ENTRY_INTERRUPTION_INFO, info);
    crate::cpu::count(&crate::cpu::COUNTERS.exceptions_injected);
}

/// Injects hardware exception `vector` (RIP stays at the faulting instruction,
/// which raises no single-step trap) and resumes.
pub fn inject_exception(cpu: &mut PerCpu, vector: u8, error_code: Option<u32>) -> ! {
    end_instruction(cpu, InstructionEnd::Faulted);
    queue_exception(cpu, vector, error_code);
    resume(cpu)
}

/// Stops this CPU's VM: reports why and the guest state on the console, then
/// ends the machine once no VM is left to run.
pub fn stop(cpu: &mut PerCpu, why: fmt::Arguments) -> ! {
    cpu.state = VcpuState::Stopped;
    println!("cordon: vm stopped on cpu {}: {}", cpu.index, why);
    report_guest_state(cpu);
    crate::finish(false)
}

/// Prints the guest's registers from the VMCS and the saved GPRs.
pub fn report_guest_state(cpu: &PerCpu) {
    const NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    println!(
        "cordon: guest rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
        read(f::GUEST_RIP),
        read(f::GUEST_RSP),
        read(f::GUEST_RFLAGS),
        read(f::GUEST_CR0),
        read(f::GUEST_CR3),
        read(f::GUEST_CR4),
        read(f::GUEST_IA32_EFER)
    );
    println!(
        "cordon: guest cs={:#x} base={:#x} ar={:#x} ss={:#x} ar={:#x} activity={} interruptibility={:#x}",
        read(f::segment_field(f::GUEST_ES_SELECTOR, 1)),
        read(f::segment_field(f::GUEST_ES_BASE, 1)),
        read(f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, 1)),
        read(f::segment_field(f::GUEST_ES_SELECTOR, 2)),
        read(f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, 2)),
        read(f::GUEST_ACTIVITY_STATE),
        read(f::GUEST_INTERRUPTIBILITY)
    );
    for (chunk, names) in cpu.guest.gprs.chunks(4).zip(NAMES.chunks(4)) {
        println!(
            "cordon: guest {}={:#x} {}={:#x} {}={:#x} {}={:#x}",
            names[0], chunk[0], names[1], chunk[1], names[2], chunk[2], names[3], chunk[3]
        );
    }
}
