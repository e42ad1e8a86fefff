//! Mode switches for guests that run code in 32-bit protected mode after long mode
//! (see `modes.s`): a call into a 32-bit function with paging off, and back.

core::arch::global_asm!(include_str!("modes.s"), options(att_syntax));

unsafe extern "C" {
    fn guest_call_protected32(function: u32, argument: u32) -> u32;
}

/// Calls the 32-bit `function` (a `.code32` routine, see `modes.s` for its contract)
/// in protected mode with paging off, EAX = `argument`; returns its EAX.
///
/// # Safety
/// `function` must follow the contract in `modes.s`: it runs with the 64-bit IDT
/// useless (no exception may happen), returns with paging off and DS/ES/SS = 0x10, and
/// touches only memory the caller lets it; the current stack must lie below 4 GiB.
pub unsafe fn call_protected32(function: u32, argument: u32) -> u32 {
    // SAFETY: forwarded from the caller; the routine restores long mode on guest_pml4
    // and the callee-saved registers.
    unsafe { guest_call_protected32(function, argument) }
}
