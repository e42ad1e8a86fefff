//! The cross-CPU attack: while CPU 0 answers its pending exit with a valid
//! reply, the service thread of another CPU keeps toggling one byte of that
//! reply in CPU 0's message page (RFLAGS bit 3, reserved), so the reply
//! changes under the core while it reads it. Because only that byte differs,
//! every copy the core can take is either the valid reply or one with a
//! reserved RFLAGS bit: a core that copies once and validates the copy
//! refuses the second kind (`RFLAGS reserved bit set`) and applies the first
//! intact; a core that read the page twice could apply the bad bit, which VM
//! entry rejects, and the guest would not finish.

use crate::exit_server::ExitServer;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use hostile_service::replies::valid_resume;
use hostile_service::{Tally, Verdict};
use rt::abi::{ExitMessage, Reply, ServiceStart, SyscallError};
use rt::log;
use rt::syscall::Error;

const IDLE: u32 = 0;
const ARMED: u32 = 1;
const DONE: u32 = 2;

/// The bit the rewriter toggles: RFLAGS bit 3 (reserved) in the low byte.
const RFLAGS_RESERVED_BIT3: u8 = 1 << 3;
/// How long CPU 0 waits for the rewriter's first toggle (spin iterations).
const PARTNER_WAIT_SPINS: u64 = 1 << 22;
/// Replies CPU 0 sends while the rewriter is active.
const RACED_SENDS: u32 = 64;

/// Set by a service thread on a CPU other than 0 when it is ready.
static PARTNER_PRESENT: AtomicU32 = AtomicU32::new(0);
static STATE: AtomicU32 = AtomicU32::new(IDLE);
/// Address of the byte to toggle (in CPU 0's message page).
static TARGET: AtomicU64 = AtomicU64::new(0);
/// Toggles made so far.
static TOGGLES: AtomicU64 = AtomicU64::new(0);
/// Set by the rewriter when it has seen `DONE` and stopped touching the page.
static STOPPED: AtomicU32 = AtomicU32::new(0);

/// On a CPU other than 0: toggles the target byte while CPU 0 is racing;
/// returns once CPU 0 is done (the thread then serves its own CPU).
pub fn serve_as_rewriter() {
    PARTNER_PRESENT.store(1, Ordering::Release);
    loop {
        match STATE.load(Ordering::Acquire) {
            ARMED => {
                let target = TARGET.load(Ordering::Acquire) as *mut u8;
                // SAFETY: `target` lies in CPU 0's message page, mapped
                // writable in this (shared) service address space; its bytes
                // are plain data that CPU 0 only ever copies with volatile
                // accesses, and racing with it is the point of the attack.
                let byte = unsafe { AtomicU8::from_ptr(target) };
                byte.fetch_xor(RFLAGS_RESERVED_BIT3, Ordering::Relaxed);
                TOGGLES.fetch_add(1, Ordering::Relaxed);
            }
            DONE => {
                STOPPED.store(1, Ordering::Release);
                return;
            }
            _ => core::hint::spin_loop(),
        }
    }
}

/// On CPU 0: answers the pending exit again and again with a valid no-op
/// `Resume` (the guest re-executes the instruction and exits again) while the
/// other CPU rewrites the reply, logs one line, and returns the exit pending
/// afterwards. A failure goes into `tally`.
pub fn race(
    server: &mut ExitServer,
    start: &ServiceStart,
    mut pending: ExitMessage,
    tally: &mut Tally,
) -> ExitMessage {
    const NAME: &str = "reply rewritten by another CPU";
    if PARTNER_PRESENT.load(Ordering::Acquire) == 0 {
        STATE.store(DONE, Ordering::Release);
        log!("hostile: {NAME}: skipped (no second CPU)");
        return pending;
    }
    let target = start.message_page + ServiceStart::REPLY_OFFSET + offset_of!(Reply, rflags) as u64;
    TARGET.store(target, Ordering::Release);
    STATE.store(ARMED, Ordering::Release);
    let mut spins = 0;
    while TOGGLES.load(Ordering::Relaxed) == 0 && spins < PARTNER_WAIT_SPINS {
        core::hint::spin_loop();
        spins += 1;
    }
    let (mut refused, mut accepted, mut failed) = (0u32, 0u32, false);
    for _ in 0..RACED_SENDS {
        match server.send(&valid_resume(&pending)) {
            Ok(next) => {
                pending = next;
                accepted += 1;
            }
            Err(Error::Refused(SyscallError::BadReply)) => refused += 1,
            Err(error) => {
                log!("hostile: {NAME}: unexpected error {error}");
                failed = true;
                break;
            }
        }
    }
    STATE.store(DONE, Ordering::Release);
    while STOPPED.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    let toggles = TOGGLES.load(Ordering::Relaxed);
    log!(
        "hostile: {NAME}: {refused} copies refused, {accepted} intact replies accepted ({toggles} rewrites)"
    );
    if failed {
        tally.add(Verdict::WrongError {
            expected: SyscallError::BadReply,
        });
    }
    pending
}
