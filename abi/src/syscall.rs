//! System calls a service makes: numbers, register convention, errors, and the
//! in-memory argument block of `cmpxchg`.
//!
//! Convention: `rax` holds the [`Syscall`] number and `rdi`, `rsi`, `rdx`, `r10`,
//! `r8`, `r9` the arguments. On return `rax` holds 0 or a [`SyscallError`] and
//! `rdx` a result value. `rcx` and `r11` are clobbered (SYSCALL/SYSRET).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// `reply_recv(has_reply: bool, abi_version: packed)`: if `has_reply`,
    /// the reply in the message page answers the current exit. Returns when the
    /// next exit message is in the message page.
    ReplyRecv = 0,
    /// `map(gpa_page, rights, slot) -> address`: maps one guest-physical page
    /// into window slot `slot` of the calling CPU's map window.
    Map = 1,
    /// `unmap(slot)`.
    Unmap = 2,
    /// `cmpxchg(request: *mut CmpxchgRequest) -> swapped`.
    Cmpxchg = 3,
    /// `log(address, length)`: writes bytes of the caller's memory to the console.
    Log = 4,
    /// `init_cpu(apic_id)`: the guest sent INIT to the CPU with this local
    /// APIC ID ([`INIT_ALL_EXCLUDING_SELF`] for the "all excluding self"
    /// shorthand). The core puts that vCPU in the INIT state, waiting for
    /// SIPI, instead of the service passing the INIT to the hardware. Since
    /// ABI 1.2.
    InitCpu = 6,
    /// `exit(code)`: the service ends; the core restarts this CPU's
    /// instance from its image (and stops the VM if it keeps failing).
    Exit = 5,
}

impl Syscall {
    pub const fn from_raw(raw: u64) -> Option<Syscall> {
        match raw {
            0 => Some(Syscall::ReplyRecv),
            1 => Some(Syscall::Map),
            2 => Some(Syscall::Unmap),
            3 => Some(Syscall::Cmpxchg),
            4 => Some(Syscall::Log),
            5 => Some(Syscall::Exit),
            6 => Some(Syscall::InitCpu),
            _ => None,
        }
    }
}

/// Why the core refused a syscall or a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum SyscallError {
    UnknownSyscall = 1,
    /// An argument is malformed (misaligned page, bad width, bad slot, ...).
    BadArgument = 2,
    /// The caller holds no capability with the needed rights for the address.
    NoCapability = 3,
    /// A user pointer does not lie in the caller's own mapped memory.
    BadUserPointer = 4,
    /// The ABI major version differs from the core's.
    AbiMismatch = 5,
    /// The reply is invalid (see the core's log for the field).
    BadReply = 6,
    /// `reply_recv` with a reply but no exit is pending.
    NoPendingExit = 7,
}

impl SyscallError {
    pub const fn from_raw(raw: u64) -> Option<SyscallError> {
        match raw {
            1 => Some(SyscallError::UnknownSyscall),
            2 => Some(SyscallError::BadArgument),
            3 => Some(SyscallError::NoCapability),
            4 => Some(SyscallError::BadUserPointer),
            5 => Some(SyscallError::AbiMismatch),
            6 => Some(SyscallError::BadReply),
            7 => Some(SyscallError::NoPendingExit),
            _ => None,
        }
    }
}

/// `init_cpu` target meaning every CPU but the caller's.
pub const INIT_ALL_EXCLUDING_SELF: u64 = u64::MAX;

/// Number of window slots `map` may use on each CPU.
pub const MAP_SLOTS: u64 = 64;

/// Longest message one `log` call may write.
pub const LOG_MAX: u64 = 512;

/// Arguments and result of `cmpxchg`, in the caller's memory.
///
/// The access covers `width` bytes starting at `offset` in `pages[0]`; if it
/// runs past the end of that page, the rest lies at the start of `pages[1]`.
/// Values are little-endian and occupy the low `width` bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CmpxchgRequest {
    /// Guest-physical page addresses (4 KiB aligned); `pages[1]` must be 0
    /// unless the access splits.
    pub pages: [u64; 2],
    pub offset: u16,
    /// 1, 2, 4, 8 or 16.
    pub width: u8,
    pub reserved: [u8; 5],
    pub expected: [u8; 16],
    pub new: [u8; 16],
    /// Written by the core: the value found in memory.
    pub current: [u8; 16],
}
const _: () = assert!(size_of::<CmpxchgRequest>() == 16 + 8 + 48);

/// What a service finds in registers at its entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceStart {
    /// `rdi`: address of this CPU's message page (one page: the exit message
    /// at offset 0, the reply at [`ServiceStart::REPLY_OFFSET`]).
    pub message_page: u64,
    /// `rsi`: index of the CPU (and vCPU) this thread serves.
    pub cpu: u64,
    /// `rdx`: address of this CPU's map window (slot n at `+ n * 4096`).
    pub map_window: u64,
    /// `r8`: how many times the core has restarted this CPU's instance after
    /// it faulted or exited (0 at the first start). Since ABI 1.1.
    pub restarts: u64,
}

impl ServiceStart {
    pub const REPLY_OFFSET: u64 = 2048;
}
