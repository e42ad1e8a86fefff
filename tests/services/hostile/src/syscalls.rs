//! Malformed system calls: `map`/`unmap` outside the capabilities or with bad
//! arguments, `cmpxchg` requests that break the request rules or point outside
//! the service's memory, `log` buffers in kernel memory or too long, unknown
//! syscall numbers and `reply_recv` with bad arguments.

use abi::syscall::{LOG_MAX, MAP_SLOTS};
use abi::{AbiVersion, CmpxchgRequest, Rights, Syscall, SyscallError};

/// A page the service may reach with every right (VGA text memory, granted
/// `vga:rwc` by the default configuration), used where only one other thing
/// must be wrong.
pub const GRANTED_PAGE: u64 = 0xb_8000;
/// The next VGA page, for split accesses.
pub const GRANTED_NEXT_PAGE: u64 = 0xb_9000;
/// The hypervisor's kernel image.
pub const HYPERVISOR_PAGE: u64 = 0x10_0000;

/// How an attack is made.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// Registers exactly as given.
    Raw { number: u64, args: [u64; 6] },
    /// `cmpxchg` with this request in the service's own writable memory.
    Cmpxchg(CmpxchgRequest),
    /// `cmpxchg` with [`VALID_CMPXCHG`] placed in the service's read-only
    /// memory (the core must not write its result there).
    CmpxchgInReadOnlyMemory,
}

/// One malformed system call and the error the core must return.
#[derive(Clone, Copy, Debug)]
pub struct SyscallAttack {
    pub name: &'static str,
    pub call: Call,
    pub expected: SyscallError,
}

/// A valid one-byte compare-exchange on [`GRANTED_PAGE`] that stores the
/// value it expects (harmless even if it were carried out).
pub const VALID_CMPXCHG: CmpxchgRequest = CmpxchgRequest {
    pages: [GRANTED_PAGE, 0],
    offset: 0,
    width: 1,
    reserved: [0; 5],
    expected: [0; 16],
    new: [0; 16],
    current: [0; 16],
};

const fn raw(syscall: Syscall, args: [u64; 6]) -> Call {
    Call::Raw {
        number: syscall as u64,
        args,
    }
}

const fn map(gpa: u64, rights: u64, slot: u64) -> Call {
    raw(Syscall::Map, [gpa, rights, slot, 0, 0, 0])
}

const fn cmpxchg(pages: [u64; 2], offset: u16, width: u8) -> Call {
    let mut request = VALID_CMPXCHG;
    request.pages = pages;
    request.offset = offset;
    request.width = width;
    Call::Cmpxchg(request)
}

const fn log(address: u64, length: u64) -> Call {
    raw(Syscall::Log, [address, length, 0, 0, 0, 0])
}

const fn attack(name: &'static str, call: Call, expected: SyscallError) -> SyscallAttack {
    SyscallAttack {
        name,
        call,
        expected,
    }
}

use SyscallError::{AbiMismatch, BadArgument, BadUserPointer, NoCapability, UnknownSyscall};

const R: u64 = Rights::READ;
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Every malformed system call the hostile service makes.
pub const SYSCALL_ATTACKS: &[SyscallAttack] = &[
    attack(
        "map outside capabilities (GPA 0xf0000000)",
        map(0xf000_0000, R, 0),
        NoCapability,
    ),
    attack(
        "map past the LAPIC page (GPA 0xfee01000)",
        map(0xfee0_1000, R, 0),
        NoCapability,
    ),
    attack(
        "map above guest RAM (GPA 0x40000000)",
        map(0x4000_0000, R, 0),
        NoCapability,
    ),
    attack(
        "map of hypervisor memory (GPA 0x100000)",
        map(HYPERVISOR_PAGE, R, 0),
        NoCapability,
    ),
    attack(
        "map of hypervisor memory (GPA 0x1fff000)",
        map(0x1ff_f000, R, 0),
        NoCapability,
    ),
    attack(
        "map with a bad slot",
        map(GRANTED_PAGE, R, MAP_SLOTS),
        BadArgument,
    ),
    attack(
        "map with slot 2^63",
        map(GRANTED_PAGE, R, 1 << 63),
        BadArgument,
    ),
    attack(
        "map of an unaligned GPA",
        map(GRANTED_PAGE + 4, R, 0),
        BadArgument,
    ),
    attack("map with no rights", map(GRANTED_PAGE, 0, 0), BadArgument),
    attack(
        "map with unknown rights",
        map(GRANTED_PAGE, 1 << 5, 0),
        BadArgument,
    ),
    attack(
        "unmap with a bad slot",
        raw(Syscall::Unmap, [MAP_SLOTS, 0, 0, 0, 0, 0]),
        BadArgument,
    ),
    attack(
        "cmpxchg with width 3",
        cmpxchg([GRANTED_PAGE, 0], 0, 3),
        BadArgument,
    ),
    attack(
        "cmpxchg with width 0",
        cmpxchg([GRANTED_PAGE, 0], 0, 0),
        BadArgument,
    ),
    attack(
        "cmpxchg with width 32",
        cmpxchg([GRANTED_PAGE, 0], 0, 32),
        BadArgument,
    ),
    attack(
        "cmpxchg with offset 4096",
        cmpxchg([GRANTED_PAGE, 0], 4096, 1),
        BadArgument,
    ),
    attack(
        "cmpxchg with offset 0xffff",
        cmpxchg([GRANTED_PAGE, 0], 0xffff, 1),
        BadArgument,
    ),
    attack(
        "cmpxchg with an unaligned first page",
        cmpxchg([GRANTED_PAGE + 0x10, 0], 0, 4),
        BadArgument,
    ),
    attack(
        "cmpxchg with an unaligned page pair",
        cmpxchg([GRANTED_PAGE, GRANTED_NEXT_PAGE + 8], 0xffc, 8),
        BadArgument,
    ),
    attack(
        "cmpxchg split with pages[1]=0",
        cmpxchg([GRANTED_PAGE, 0], 0xffc, 8),
        BadArgument,
    ),
    attack(
        "cmpxchg not split with pages[1] set",
        cmpxchg([GRANTED_PAGE, GRANTED_NEXT_PAGE], 0, 8),
        BadArgument,
    ),
    attack(
        "cmpxchg16b not 16-byte aligned",
        cmpxchg([GRANTED_PAGE, 0], 8, 16),
        BadArgument,
    ),
    attack(
        "cmpxchg with reserved bytes set",
        Call::Cmpxchg(CmpxchgRequest {
            reserved: [0, 0, 1, 0, 0],
            ..VALID_CMPXCHG
        }),
        BadArgument,
    ),
    attack(
        "cmpxchg on hypervisor memory",
        cmpxchg([HYPERVISOR_PAGE, 0], 0, 8),
        NoCapability,
    ),
    attack(
        "cmpxchg split into hypervisor memory",
        cmpxchg([GRANTED_PAGE, HYPERVISOR_PAGE], 0xffc, 8),
        NoCapability,
    ),
    attack(
        "cmpxchg outside capabilities",
        cmpxchg([0xf000_0000, 0], 0, 4),
        NoCapability,
    ),
    attack(
        "cmpxchg request pointer in kernel memory",
        raw(Syscall::Cmpxchg, [HYPERVISOR_PAGE, 0, 0, 0, 0, 0]),
        BadUserPointer,
    ),
    attack(
        "cmpxchg request pointer in the kernel half",
        raw(Syscall::Cmpxchg, [KERNEL_HALF, 0, 0, 0, 0, 0]),
        BadUserPointer,
    ),
    attack(
        "cmpxchg request pointer wrapping past 2^64",
        raw(Syscall::Cmpxchg, [u64::MAX - 8, 0, 0, 0, 0, 0]),
        BadUserPointer,
    ),
    attack(
        "cmpxchg request in read-only memory",
        Call::CmpxchgInReadOnlyMemory,
        BadUserPointer,
    ),
    attack(
        "log pointer into kernel memory",
        log(HYPERVISOR_PAGE, 16),
        BadUserPointer,
    ),
    attack(
        "log pointer into the kernel half",
        log(KERNEL_HALF, 16),
        BadUserPointer,
    ),
    attack(
        "log pointer wrapping past 2^64",
        log(u64::MAX - 8, 16),
        BadUserPointer,
    ),
    attack(
        "log with huge length",
        log(0x4000_0000, u64::MAX),
        BadArgument,
    ),
    attack(
        "log one byte over LOG_MAX",
        log(0x4000_0000, LOG_MAX + 1),
        BadArgument,
    ),
    attack(
        "unknown syscall number 7",
        Call::Raw {
            number: 7,
            args: [0; 6],
        },
        UnknownSyscall,
    ),
    attack(
        "unknown syscall number 2^64-1",
        Call::Raw {
            number: u64::MAX,
            args: [0; 6],
        },
        UnknownSyscall,
    ),
    attack(
        "reply_recv with wrong ABI major",
        raw(
            Syscall::ReplyRecv,
            [
                1,
                AbiVersion {
                    major: AbiVersion::CURRENT.major + 1,
                    minor: 0,
                }
                .pack(),
                0,
                0,
                0,
                0,
            ],
        ),
        AbiMismatch,
    ),
    attack(
        "reply_recv with a version above 32 bits",
        raw(Syscall::ReplyRecv, [1, 1 << 40, 0, 0, 0, 0]),
        AbiMismatch,
    ),
    attack(
        "reply_recv with has_reply=2",
        raw(
            Syscall::ReplyRecv,
            [2, AbiVersion::CURRENT.pack(), 0, 0, 0, 0],
        ),
        BadArgument,
    ),
];
