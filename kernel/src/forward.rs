//! Forwarding an EPT violation on trapped memory to this CPU's service thread,
//! and applying the service's validated reply to the vCPU.

use crate::cpu::{COUNTERS, PerCpu, VcpuState, count};
use crate::exits::{read, write};
use crate::policy::reply_check::{ExceptionInjection, GuestUpdate, ValidatedReply};
use crate::policy::segment_check::SegmentUpdate;
use crate::single_step::InstructionEnd;
use crate::vm;
use crate::vmx::fields as f;
use crate::vmx::vmcs::{CR0_NE, CR4_VMXE};
use abi::{AbiVersion, SegmentRegister, ValidGroups};

const IDT_VECTORING_VALID: u64 = 1 << 31;
const PKRU_COMPONENT: u32 = 9;

/// Handles an EPT violation: forwards it when the address is trapped, stops
/// the VM when the guest touched memory that is hidden from it.
pub fn ept_violation(cpu: &mut PerCpu) -> ! {
    let gpa = read(f::GUEST_PHYSICAL_ADDRESS);
    if !crate::config().is_trapped(gpa) {
        vm::stop(
            cpu,
            format_args!("guest accessed hidden memory at GPA {gpa:#x}"),
        );
    }
    let vectoring = read(f::IDT_VECTORING_INFO);
    if vectoring & IDT_VECTORING_VALID != 0 {
        vm::stop(
            cpu,
            format_args!(
                "EPT violation at GPA {gpa:#x} while delivering an event ({vectoring:#x}): not emulated"
            ),
        );
    }
    cpu.sequence += 1;
    fill_message(cpu, gpa);
    cpu.state = VcpuState::AwaitingReply;
    count(&COUNTERS.exits_forwarded);
    crate::service::deliver_exit(cpu)
}

fn fill_message(cpu: &mut PerCpu, gpa: u64) {
    let xsave = cpu.use_xsave != 0;
    let guest_xcr0 = xcr0();
    let guest_pkru = if xsave { pkru(cpu, guest_xcr0) } else { 0 };
    let message = &mut cpu.pending;
    message.abi_major = AbiVersion::CURRENT.major;
    message.abi_minor = AbiVersion::CURRENT.minor;
    message.vcpu = cpu.index as u32;
    message.sequence = cpu.sequence;
    message.reason = abi::ExitReason::EptViolation as u32;
    message.qualification = read(f::EXIT_QUALIFICATION);
    message.guest_physical = gpa;
    message.guest_linear = read(f::GUEST_LINEAR_ADDRESS);
    let mut valid = ValidGroups::GPRS
        | ValidGroups::CONTROL
        | ValidGroups::SEGMENTS
        | ValidGroups::SSE
        | ValidGroups::LDTR;
    if message.qualification & abi::exit::ept_qualification::GUEST_LINEAR_VALID != 0 {
        valid |= ValidGroups::GUEST_LINEAR;
    }
    let state = &mut message.state;
    state.gprs = cpu.guest.gprs;
    state.rip = read(f::GUEST_RIP);
    state.rflags = read(f::GUEST_RFLAGS);
    state.cr0 = (read(f::GUEST_CR0) & !CR0_NE) | (read(f::CR0_READ_SHADOW) & CR0_NE);
    state.cr2 = crate::regs::cr2();
    state.cr3 = read(f::GUEST_CR3);
    state.cr4 = read(f::GUEST_CR4) & !CR4_VMXE;
    state.efer = read(f::GUEST_IA32_EFER);
    state.xcr0 = guest_xcr0;
    state.pkru = guest_pkru;
    for (n, segment) in state.segments.iter_mut().enumerate() {
        *segment = SegmentRegister {
            selector: read(f::segment_field(f::GUEST_ES_SELECTOR, n)) as u16,
            reserved0: 0,
            access_rights: read(f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, n)) as u32,
            limit: read(f::segment_field(f::GUEST_ES_LIMIT, n)) as u32,
            reserved1: 0,
            base: read(f::segment_field(f::GUEST_ES_BASE, n)),
        };
    }
    state.cpl = u32::from(state.segments[abi::Segment::Ss as usize].dpl());
    message.ldtr = SegmentRegister {
        selector: read(f::GUEST_LDTR_SELECTOR) as u16,
        reserved0: 0,
        access_rights: read(f::GUEST_LDTR_ACCESS_RIGHTS) as u32,
        limit: read(f::GUEST_LDTR_LIMIT) as u32,
        reserved1: 0,
        base: read(f::GUEST_LDTR_BASE),
    };
    let state = &mut message.state;
    state.gdtr = abi::DescriptorTable {
        limit: read(f::GUEST_GDTR_LIMIT) as u32,
        reserved: 0,
        base: read(f::GUEST_GDTR_BASE),
    };
    state.idtr = abi::DescriptorTable {
        limit: read(f::GUEST_IDTR_LIMIT) as u32,
        reserved: 0,
        base: read(f::GUEST_IDTR_BASE),
    };
    let ymm_upper = crate::ymm_upper_offset();
    if ymm_upper.is_some() && xsave {
        valid |= ValidGroups::AVX;
    }
    cpu.xsave
        .read_vectors(ymm_upper, xsave, &mut message.vectors);
    message.valid = valid;
}

fn xcr0() -> u64 {
    if crate::regs::cr4() & (1 << 18) == 0 {
        return 1;
    }
    let (low, high): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is valid whenever CR4.OSXSAVE is set.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high, options(nomem, nostack))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// The guest's PKRU from the XSAVE area (its register value is live in
/// hardware: VMX does not switch it).
fn pkru(cpu: &PerCpu, xcr0: u64) -> u32 {
    if xcr0 & (1 << PKRU_COMPONENT) == 0 {
        return 0;
    }
    let offset = crate::regs::cpuid(0xd, PKRU_COMPONENT)[1] as usize;
    let xstate_bv = u64::from_le_bytes(cpu.xsave.0[512..520].try_into().unwrap_or([0; 8]));
    let in_use = xstate_bv & (1 << PKRU_COMPONENT) != 0;
    match cpu.xsave.0.get(offset..offset + 4) {
        Some(bytes) if in_use => u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4])),
        _ => 0,
    }
}

/// Applies a validated reply to the pending exit and resumes the guest (or
/// stops it).
pub fn apply(cpu: &mut PerCpu, reply: ValidatedReply) -> ! {
    cpu.restarts_in_a_row = 0;
    match reply {
        ValidatedReply::Resume(update) => apply_update(cpu, &update),
        ValidatedReply::InjectException(exception) => apply_exception(cpu, exception),
        ValidatedReply::Retry => {
            count(&COUNTERS.retries);
            vm::end_instruction(cpu, InstructionEnd::Retried);
            vm::resume(cpu)
        }
        ValidatedReply::Stop => vm::stop(cpu, format_args!("the service asked to stop the VM")),
    }
}

fn apply_update(cpu: &mut PerCpu, update: &GuestUpdate) -> ! {
    if let Some(gprs) = update.gprs {
        cpu.guest.gprs = gprs;
    }
    if let Some(rflags) = update.rflags {
        write(cpu, f::GUEST_RFLAGS, rflags);
    }
    if update.vector_mask != 0 {
        let xsave = cpu.use_xsave != 0;
        cpu.xsave.write_vectors(
            crate::ymm_upper_offset(),
            xsave,
            u32::from(update.vector_mask),
            update.vectors,
        );
    }
    if let Some(segment) = &update.segment {
        load_segment(cpu, segment);
    }
    let old_rip = cpu.pending.state.rip;
    match update.rip {
        Some(rip) if rip != old_rip => {
            count(&COUNTERS.instructions_retired);
            vm::end_instruction(cpu, InstructionEnd::Retired);
            vm::advance_to(cpu, rip);
        }
        // A resume that keeps RIP retired iterations of a repeated string
        // instruction (the CPU traps after each one when TF is set).
        _ => {
            count(&COUNTERS.retries);
            vm::end_instruction(cpu, InstructionEnd::Iterated);
        }
    }
    // After advance_to ended the old STI/MOV SS blocking: a MOV SS or POP SS
    // blocks interrupts for the instruction after it (validation made sure a
    // segment load comes with a new RIP).
    if update
        .segment
        .is_some_and(|segment| segment.blocks_interrupts)
    {
        vm::block_by_mov_ss(cpu);
    }
    vm::resume(cpu)
}

/// Writes a validated segment load into the register's four VMCS fields.
fn load_segment(cpu: &mut PerCpu, segment: &SegmentUpdate) {
    let index = segment.register as usize;
    let value = &segment.value;
    write(
        cpu,
        f::segment_field(f::GUEST_ES_SELECTOR, index),
        u64::from(value.selector),
    );
    write(cpu, f::segment_field(f::GUEST_ES_BASE, index), value.base);
    write(
        cpu,
        f::segment_field(f::GUEST_ES_LIMIT, index),
        u64::from(value.limit),
    );
    write(
        cpu,
        f::segment_field(f::GUEST_ES_ACCESS_RIGHTS, index),
        u64::from(value.access_rights),
    );
    count(&COUNTERS.segment_loads);
}

fn apply_exception(cpu: &mut PerCpu, exception: ExceptionInjection) -> ! {
    if let Some(cr2) = exception.cr2 {
        // SAFETY: CR2 only matters to the guest from here on (the core takes
        // no page faults on this path); VMX does not switch CR2.
        unsafe { crate::regs::write_cr2(cr2) };
    }
    vm::inject_exception(cpu, exception.vector, exception.error_code)
}
