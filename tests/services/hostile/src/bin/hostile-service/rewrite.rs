//! The cross-CPU attack, as far as it can be expressed: the issue's "reply
//! rewritten by another CPU after it was issued". Each CPU's service instance
//! has its own message page and shares no writable memory with the others,
//! so another CPU's thread has no address at which to reach CPU 0's reply.
//! This module checks that: every other CPU's thread writes a marker at the
//! end of the message page at the same address, and CPU 0 must not see any of
//! them in its own page. (The core still copies a reply once before checking
//! it, so even a shared page could not change a reply after validation.)

use rt::abi::ServiceStart;
use rt::log;

/// Offset of the marker in the message page: past the exit message and the
/// reply, in bytes the ABI leaves unused.
const MARKER_OFFSET: u64 = 4096 - 8;
/// The marker a thread on CPU `n` writes: this value plus `n`.
const MARKER_BASE: u64 = 0xc0de_0000_0000_0000;

fn marker_slot(start: &ServiceStart) -> *mut u64 {
    (start.message_page + MARKER_OFFSET) as *mut u64
}

/// On a CPU other than 0: writes this CPU's marker into its message page.
pub fn leave_marker(start: &ServiceStart) {
    // SAFETY: the slot lies in this thread's message page, which the core
    // maps writable for it and never reads at this offset.
    unsafe { marker_slot(start).write_volatile(MARKER_BASE + start.cpu) };
}

/// On CPU 0: checks that no other CPU's marker shows in CPU 0's page.
/// Returns whether the instances were isolated.
pub fn check_isolation(start: &ServiceStart) -> bool {
    // SAFETY: as in `leave_marker`, for CPU 0's own page.
    let seen = unsafe { marker_slot(start).read_volatile() };
    let isolated = seen & 0xffff_0000_0000_0000 != MARKER_BASE;
    if isolated {
        log!(
            "hostile: reply rewritten by another CPU: impossible: no other instance's write reaches this message page"
        );
    } else {
        log!(
            "hostile: reply rewritten by another CPU: cpu {} wrote into cpu 0's message page",
            seen & 0xff
        );
    }
    isolated
}
