//! The system calls (see `abi::syscall` for the contract): `rax` = number,
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`; on return `rax` = 0 or a
//! [`SyscallError`], `rdx` = the value.

use abi::syscall::LOG_MAX;
use abi::{CmpxchgRequest, Syscall, SyscallError};
use core::arch::asm;
use core::fmt;

/// A refused system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The core refused with this error.
    Refused(SyscallError),
    /// The core returned a code this runtime does not know.
    Unknown(u64),
}

impl Error {
    fn from_raw(raw: u64) -> Error {
        SyscallError::from_raw(raw).map_or(Error::Unknown(raw), Error::Refused)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(error) => write!(f, "{error:?}"),
            Error::Unknown(code) => write!(f, "unknown error {code}"),
        }
    }
}

/// Makes system call `number` with `args`; the value in `rdx` on success.
///
/// # Safety
/// The core may write memory the arguments point to (`cmpxchg` writes its
/// request; `reply_recv` and `map` change what the message page and the map
/// window hold): no Rust reference may be live to any memory the call writes.
pub unsafe fn raw(number: u64, args: [u64; 6]) -> Result<u64, Error> {
    let status: u64;
    let value: u64;
    // SAFETY: SYSCALL enters the core, which returns with SYSRET to the next
    // instruction; it clobbers rcx and r11 and, conservatively, every argument
    // register. Memory effects are covered by the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => value,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            inlateout("r9") args[5] => _,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    match status {
        0 => Ok(value),
        code => Err(Error::from_raw(code)),
    }
}

/// `reply_recv(has_reply, abi_version)`: answers the pending exit (if
/// `has_reply`) with the reply in the message page and waits for the next.
pub fn reply_recv(has_reply: bool, abi_version: u64) -> Result<(), Error> {
    // SAFETY: the core writes only the message page, which the runtime reads
    // with volatile copies and never references.
    unsafe {
        raw(
            Syscall::ReplyRecv as u64,
            [has_reply as u64, abi_version, 0, 0, 0, 0],
        )
    }
    .map(drop)
}

/// `map(gpa_page, rights, slot)`: maps a guest-physical page into window
/// slot `slot`; returns the address the core reports.
///
/// # Safety
/// No Rust reference into window slot `slot` may be live.
pub unsafe fn map(gpa_page: u64, rights: u64, slot: u64) -> Result<u64, Error> {
    // SAFETY: the caller guarantees nothing references the slot.
    unsafe { raw(Syscall::Map as u64, [gpa_page, rights, slot, 0, 0, 0]) }
}

/// `unmap(slot)`.
///
/// # Safety
/// No Rust reference into window slot `slot` may be live.
pub unsafe fn unmap(slot: u64) -> Result<(), Error> {
    // SAFETY: the caller guarantees nothing references the slot.
    unsafe { raw(Syscall::Unmap as u64, [slot, 0, 0, 0, 0, 0]) }.map(drop)
}

/// `cmpxchg(request)`: the core performs the compare-exchange and writes the
/// value it found into `request.current`; returns whether it stored.
pub fn cmpxchg(request: &mut CmpxchgRequest) -> Result<bool, Error> {
    let address = request as *mut CmpxchgRequest as u64;
    // SAFETY: the core writes only `*request`, which we borrow mutably.
    unsafe { raw(Syscall::Cmpxchg as u64, [address, 0, 0, 0, 0, 0]) }.map(|swapped| swapped != 0)
}

/// `log(address, length)` for `bytes`, in chunks of at most `LOG_MAX`.
pub fn log(bytes: &[u8]) -> Result<(), Error> {
    for chunk in bytes.chunks(LOG_MAX as usize) {
        // SAFETY: the core only reads the chunk.
        unsafe {
            raw(
                Syscall::Log as u64,
                [chunk.as_ptr() as u64, chunk.len() as u64, 0, 0, 0, 0],
            )
        }?;
    }
    Ok(())
}

/// `init_cpu(apic_id)`: asks the core to put the vCPU with this local APIC
/// ID (or every other one, with `abi::syscall::INIT_ALL_EXCLUDING_SELF`) in
/// the INIT state.
pub fn init_cpu(apic_id: u64) -> Result<(), Error> {
    // SAFETY: the core writes no memory of ours for `init_cpu`.
    unsafe { raw(Syscall::InitCpu as u64, [apic_id, 0, 0, 0, 0, 0]) }.map(drop)
}

/// `exit(code)`: ends the service.
pub fn exit(code: u64) -> ! {
    // SAFETY: the core writes no memory of ours for `exit`.
    let _ = unsafe { raw(Syscall::Exit as u64, [code, 0, 0, 0, 0, 0]) };
    // The core does not return from `exit`; if it ever did, stay put.
    loop {
        core::hint::spin_loop();
    }
}
