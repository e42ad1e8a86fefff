//! The guest's VMCALL interface: a test guest reports that it is done and how
//! many instructions it made that touched trapped memory.

use crate::cpu::PerCpu;
use crate::println;

/// `vmcall` with EAX = 1: EBX = 0 pass / 1 fail, ECX = the guest's count of
/// emulated instructions.
const DONE: u64 = 1;

pub fn handle(cpu: &mut PerCpu) -> ! {
    let [rax, rcx, _, rbx] = [
        cpu.guest.gprs[0],
        cpu.guest.gprs[1],
        cpu.guest.gprs[2],
        cpu.guest.gprs[3],
    ];
    if rax & 0xffff_ffff != DONE {
        // Unknown hypercalls fail like VMCALL outside VMX: #UD.
        crate::vm::inject_exception(cpu, 6, None);
    }
    let guest_passed = rbx & 0xffff_ffff == 0;
    let guest_count = rcx & 0xffff_ffff;
    let counters = &crate::cpu::COUNTERS;
    let read = |counter: &core::sync::atomic::AtomicU64| {
        counter.load(core::sync::atomic::Ordering::Relaxed)
    };
    println!(
        "cordon: guest done on cpu {}: guest says {}, guest-emulated={} service-retired={} exits-forwarded={} exceptions-injected={} retries={} refused-replies={} segment-loads={}",
        cpu.index,
        if guest_passed { "pass" } else { "fail" },
        guest_count,
        read(&counters.instructions_retired),
        read(&counters.exits_forwarded),
        read(&counters.exceptions_injected),
        read(&counters.retries),
        read(&counters.refused_replies),
        read(&counters.segment_loads),
    );
    let all_through_service = guest_count == read(&counters.instructions_retired);
    println!(
        "cordon: every trapped access went through the service: {}",
        if all_through_service { "yes" } else { "NO" }
    );
    crate::finish(guest_passed && all_through_service)
}
