//! The hostile test service. At its first exit, CPU 0's thread makes every
//! malformed system call of [`hostile_service::syscalls`] and sends every
//! invalid reply of [`hostile_service::replies`], logging one line per attack:
//! `hostile: <attack>: refused <error>` (with `(expected <error>)` if the core
//! gave another error) or `hostile: <attack>: ACCEPTED`. It checks that no
//! other CPU's instance can reach its reply (see `rewrite`), logs
//! `hostile: done, N refusals` and `hostile: PASS` (or `hostile: FAIL: ...`),
//! then crashes on purpose: the core must restart it, and the restarted
//! instance (told so in `ServiceStart::restarts`) serves the guest like the
//! emulator service, with the same code.
#![no_std]
#![no_main]

#[path = "../../../../../../services/emulator/src/bin/service/exit_server.rs"]
mod exit_server;
mod rewrite;

use exit_server::ExitServer;
use hostile_service::replies::reply_attack;
use hostile_service::syscalls::{Call, SYSCALL_ATTACKS, SyscallAttack, VALID_CMPXCHG};
use hostile_service::{Tally, Verdict, judge};
use rt::abi::{CmpxchgRequest, ExitMessage, ServiceStart, Syscall, SyscallError};
use rt::log;
use rt::syscall::{self, Error};

/// A valid request in read-only memory (.rodata): the core must refuse to
/// write its result here.
static READ_ONLY_REQUEST: CmpxchgRequest = VALID_CMPXCHG;

fn main(start: ServiceStart) -> ! {
    // SAFETY: `start` is what `_start` received, and this is the only
    // ExitServer of this thread.
    let mut server = unsafe { ExitServer::new(&start, "hostile", false) };
    if start.cpu != 0 {
        rewrite::leave_marker(&start);
        let first = server.first_exit();
        server.serve(first)
    }
    if start.restarts != 0 {
        log!(
            "hostile: restarted by the core after the deliberate fault (restart {})",
            start.restarts
        );
        let pending = server.first_exit();
        server.serve(pending)
    }
    log!("hostile: cpu {}: waiting for the first exit", start.cpu);
    let pending = server.first_exit();
    let mut tally = Tally::default();
    for attack in SYSCALL_ATTACKS {
        let result = make_call(attack);
        tally.add(report(attack.name, result, attack.expected));
    }
    send_reply_attacks(&mut server, pending, &mut tally);
    let isolated = rewrite::check_isolation(&start);
    log!("hostile: done, {} refusals", tally.refused);
    if tally.passed() && isolated {
        log!("hostile: PASS");
    } else {
        log!(
            "hostile: FAIL: {} accepted, {} refused with the wrong error, instances isolated: {}",
            tally.accepted,
            tally.wrong_error,
            isolated
        );
    }
    // The exit stays pending: the restarted instance receives it again.
    crash_on_purpose()
}

/// Writes to the service's own read-only data: a page fault in ring 3, which
/// the core must answer by restarting this instance, not by going down.
fn crash_on_purpose() -> ! {
    log!("hostile: crashing on purpose (write to read-only memory)");
    let target = &READ_ONLY_REQUEST as *const CmpxchgRequest as *mut u8;
    // SAFETY: none in the Rust sense: the write faults before it happens
    // (the page is mapped read-only), which is the point.
    unsafe { target.write_volatile(1) };
    log!("hostile: FAIL: a write to read-only memory did not fault");
    syscall::exit(1)
}

/// What a refusal carries, for [`judge`].
fn refusal(error: Error) -> Option<SyscallError> {
    match error {
        Error::Refused(error) => Some(error),
        Error::Unknown(_) => None,
    }
}

/// Makes one malformed system call.
fn make_call(attack: &SyscallAttack) -> Result<(), Error> {
    match attack.call {
        Call::Raw { number, args } => {
            // SAFETY: the arguments point at no memory of ours that Rust
            // references: kernel addresses, unmapped ones, or window slots
            // the ExitServer has not used yet (it maps lazily, after this).
            let result = unsafe { syscall::raw(number, args) };
            if result.is_ok() && number == Syscall::Map as u64 {
                // Leave the window as the ExitServer expects it.
                // SAFETY: as above.
                let _ = unsafe { syscall::unmap(args[2]) };
            }
            result.map(drop)
        }
        Call::Cmpxchg(request) => {
            let mut request = request;
            syscall::cmpxchg(&mut request).map(drop)
        }
        Call::CmpxchgInReadOnlyMemory => {
            let address = &READ_ONLY_REQUEST as *const CmpxchgRequest as u64;
            // SAFETY: the request lies in our read-only segment, which the
            // core must refuse to write; if it wrongly accepted, the write
            // would land in a page no Rust code ever writes.
            unsafe { syscall::raw(Syscall::Cmpxchg as u64, [address, 0, 0, 0, 0, 0]) }.map(drop)
        }
    }
}

/// Logs the line for one attack and returns its verdict.
fn report(name: &str, result: Result<(), Error>, expected: SyscallError) -> Verdict {
    let verdict = judge(result.map_err(refusal), expected);
    match (verdict, result) {
        (Verdict::Accepted, _) | (_, Ok(())) => log!("hostile: {name}: ACCEPTED"),
        (Verdict::Refused, Err(error)) => log!("hostile: {name}: refused {error}"),
        (Verdict::WrongError { expected }, Err(error)) => {
            log!("hostile: {name}: refused {error} (expected {expected:?})")
        }
    }
    verdict
}

/// Sends every invalid reply to the pending exit; returns the exit still
/// pending afterwards (a new one if the core wrongly accepted a reply).
fn send_reply_attacks(
    server: &mut ExitServer,
    mut pending: ExitMessage,
    tally: &mut Tally,
) -> ExitMessage {
    let mut index = 0;
    while let Some(attack) = reply_attack(&pending, index) {
        let result = match server.send(&attack.reply) {
            Ok(next) => {
                pending = next;
                Ok(())
            }
            Err(error) => Err(error),
        };
        tally.add(report(attack.name, result, SyscallError::BadReply));
        index += 1;
    }
    pending
}

rt::entry!(main);
