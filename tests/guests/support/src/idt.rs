//! The guests' 64-bit IDT for the 32 exception vectors: each exception is recorded
//! (vector, error code, RIP, CR2); a probe that expects a fault resumes after it, any
//! other exception goes to the handler the guest installed.

use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, Once};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, Segment};
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;

/// Exception vector numbers guests test for.
pub mod vector {
    /// #DB, debug.
    pub const DEBUG: u8 = 1;
    /// #UD, invalid opcode.
    pub const INVALID_OPCODE: u8 = 6;
    /// #NP, segment not present.
    pub const SEGMENT_NOT_PRESENT: u8 = 11;
    /// #SS, stack-segment fault.
    pub const STACK_SEGMENT: u8 = 12;
    /// #GP, general protection.
    pub const GENERAL_PROTECTION: u8 = 13;
    /// #PF, page fault.
    pub const PAGE_FAULT: u8 = 14;
}

/// What the CPU reported for one exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionRecord {
    /// Exception vector (0..32).
    pub vector: u8,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// RIP of the faulting instruction.
    pub rip: u64,
    /// CR2 when the handler ran (the faulting linear address for #PF).
    pub cr2: u64,
}

/// Called for an exception no probe expected; must not return.
pub type UnexpectedExceptionHandler = fn(&ExceptionRecord) -> !;

/// Where an armed probe resumes (0: no probe armed).
static RESUME_RIP: AtomicU64 = AtomicU64::new(0);
/// The last exception a probe caught.
static CAUGHT: Mutex<Option<ExceptionRecord>> = Mutex::new(None);
static UNEXPECTED: Once<UnexpectedExceptionHandler> = Once::new();
static IDT: Once<ExceptionTable> = Once::new();

const EXCEPTION_VECTORS: usize = 32;
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    fn interrupt(handler: u64, selector: u16) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist: 0,
            type_attributes: INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct ExceptionTable([Gate; EXCEPTION_VECTORS]);

/// The start of what the stubs and the CPU pushed (the CPU's CS, RFLAGS, RSP, SS follow).
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
}

/// Builds the IDT (once) and loads it on this CPU; `on_unexpected` gets every exception
/// that no probe expected.
pub fn install(on_unexpected: UnexpectedExceptionHandler) {
    UNEXPECTED.call_once(|| on_unexpected);
    let selector = CS::get_reg().0;
    let table = IDT.call_once(|| {
        let mut gates = [Gate::default(); EXCEPTION_VECTORS];
        for (gate, stub) in gates.iter_mut().zip(STUBS) {
            *gate = Gate::interrupt(stub as usize as u64, selector);
        }
        ExceptionTable(gates)
    });
    let pointer = DescriptorTablePointer {
        limit: (size_of::<ExceptionTable>() - 1) as u16,
        base: VirtAddr::from_ptr(table),
    };
    // SAFETY: the table is a static with valid gates to the stubs below, which stay
    // mapped for the guest's life.
    unsafe { lidt(&pointer) };
}

/// Loads one byte at `address`, catching an exception instead of dying of it.
///
/// # Safety
/// Needs [`install`] first; a successful load must be harmless (no side effects the
/// caller did not intend), and only one CPU may probe at a time.
pub unsafe fn probe_load_u8(address: usize) -> Result<u8, ExceptionRecord> {
    *CAUGHT.lock() = None;
    let value: u64;
    // SAFETY: the load is the caller's; if it faults, the handler resumes at label 2
    // with registers as they were (the MOVZX has not written `v`, zeroed before it).
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [{resume}], {t}",
            "xor {v:e}, {v:e}",
            "movzx {v:e}, byte ptr [{a}]",
            "2:",
            "mov qword ptr [{resume}], 0",
            resume = in(reg) RESUME_RIP.as_ptr(),
            a = in(reg) address,
            t = out(reg) _,
            v = out(reg) value,
            options(nostack, preserves_flags),
        );
    }
    match CAUGHT.lock().take() {
        Some(record) => Err(record),
        None => Ok(value as u8),
    }
}

/// One `movsq` from `source` to `destination` (DF clear), catching an exception
/// instead of dying of it; guests aim it at trapped memory so that the instruction's
/// first access (the read) exits to the emulator and the second one is the emulator's
/// to check.
///
/// # Safety
/// Needs [`install`] first; a successful copy must be harmless, and only one CPU may
/// probe at a time.
pub unsafe fn probe_movsq(destination: u64, source: u64) -> Result<(), ExceptionRecord> {
    *CAUGHT.lock() = None;
    // SAFETY: the copy is the caller's; if it faults, the handler resumes at label 2
    // with registers as they were at the fault.
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [{resume}], {t}",
            "movsq",
            "2:",
            "mov qword ptr [{resume}], 0",
            resume = in(reg) RESUME_RIP.as_ptr(),
            t = out(reg) _,
            inout("rdi") destination => _,
            inout("rsi") source => _,
            options(nostack, preserves_flags),
        );
    }
    match CAUGHT.lock().take() {
        Some(record) => Err(record),
        None => Ok(()),
    }
}

/// Calls `function` (System V: RDI, RSI, RDX = `arguments`, returns RAX), catching an
/// exception instead of dying of it: after a fault the stack is put back as it was
/// before the call. `function` may be code at any mapped linear address (an alias, a
/// page the probe expects not to be executable); it must keep R12 and R13.
///
/// # Safety
/// Needs [`install`] first; `function` must be callable with these arguments and do
/// nothing the caller did not intend, and only one CPU may probe at a time.
pub unsafe fn probe_call(function: u64, arguments: [u64; 3]) -> Result<u64, ExceptionRecord> {
    *CAUGHT.lock() = None;
    let result: u64;
    // SAFETY: the call is the caller's; R12 keeps the stack pointer and R13 the resume
    // slot across it (callee-saved, and the exception handler restores every register
    // it uses), so label 2 is reached with the stack as it was either way.
    unsafe {
        asm!(
            "lea r11, [rip + 2f]",
            "mov qword ptr [r13], r11",
            "mov r12, rsp",
            "and rsp, -16",
            "call {f}",
            "2:",
            "mov rsp, r12",
            "mov qword ptr [r13], 0",
            f = in(reg) function,
            out("r11") _,
            in("r13") RESUME_RIP.as_ptr(),
            out("r12") _,
            in("rdi") arguments[0],
            in("rsi") arguments[1],
            in("rdx") arguments[2],
            lateout("rax") result,
            clobber_abi("C"),
        );
    }
    match CAUGHT.lock().take() {
        Some(record) => Err(record),
        None => Ok(result),
    }
}

/// Called by the common stub with the exception frame on the stack.
extern "C" fn exception_dispatch(frame: *mut ExceptionFrame) {
    // SAFETY: the common stub passes a pointer to the frame on this stack; it is valid
    // and exclusively ours until we return.
    let state = unsafe { &mut *frame };
    let record = ExceptionRecord {
        vector: state.vector as u8,
        error_code: state.error_code,
        rip: state.rip,
        cr2: Cr2::read_raw(),
    };
    let resume = RESUME_RIP.swap(0, Ordering::SeqCst);
    if resume != 0 {
        *CAUGHT.lock() = Some(record);
        state.rip = resume;
        return;
    }
    match UNEXPECTED.get() {
        Some(handler) => handler(&record),
        None => crate::cpu::halt_forever(),
    }
}

/// Saves the caller-saved registers and the SSE state (the Rust handler may use both),
/// calls `exception_dispatch`, restores and returns past the vector and error code.
#[unsafe(naked)]
unsafe extern "C" fn exception_common() {
    naked_asm!(
        "push rax",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        // CPU frame (aligned) + 2 stub words + 9 registers: RSP is 16-byte aligned here.
        "lea rdi, [rsp + 72]",
        "sub rsp, 512",
        "fxsave [rsp]",
        "cld",
        "call {dispatch}",
        "fxrstor [rsp]",
        "add rsp, 512",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym exception_dispatch,
    );
}

macro_rules! exception_stub {
    ($name:ident, $vector:literal, error_code) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!(
                concat!("push ", $vector),
                "jmp {common}",
                common = sym exception_common,
            );
        }
    };
    ($name:ident, $vector:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!(
                "push 0",
                concat!("push ", $vector),
                "jmp {common}",
                common = sym exception_common,
            );
        }
    };
}

exception_stub!(stub_0, 0);
exception_stub!(stub_1, 1);
exception_stub!(stub_2, 2);
exception_stub!(stub_3, 3);
exception_stub!(stub_4, 4);
exception_stub!(stub_5, 5);
exception_stub!(stub_6, 6);
exception_stub!(stub_7, 7);
exception_stub!(stub_8, 8, error_code);
exception_stub!(stub_9, 9);
exception_stub!(stub_10, 10, error_code);
exception_stub!(stub_11, 11, error_code);
exception_stub!(stub_12, 12, error_code);
exception_stub!(stub_13, 13, error_code);
exception_stub!(stub_14, 14, error_code);
exception_stub!(stub_15, 15);
exception_stub!(stub_16, 16);
exception_stub!(stub_17, 17, error_code);
exception_stub!(stub_18, 18);
exception_stub!(stub_19, 19);
exception_stub!(stub_20, 20);
exception_stub!(stub_21, 21, error_code);
exception_stub!(stub_22, 22);
exception_stub!(stub_23, 23);
exception_stub!(stub_24, 24);
exception_stub!(stub_25, 25);
exception_stub!(stub_26, 26);
exception_stub!(stub_27, 27);
exception_stub!(stub_28, 28);
exception_stub!(stub_29, 29, error_code);
exception_stub!(stub_30, 30, error_code);
exception_stub!(stub_31, 31);

type Stub = unsafe extern "C" fn();

static STUBS: [Stub; EXCEPTION_VECTORS] = [
    stub_0, stub_1, stub_2, stub_3, stub_4, stub_5, stub_6, stub_7, stub_8, stub_9, stub_10,
    stub_11, stub_12, stub_13, stub_14, stub_15, stub_16, stub_17, stub_18, stub_19, stub_20,
    stub_21, stub_22, stub_23, stub_24, stub_25, stub_26, stub_27, stub_28, stub_29, stub_30,
    stub_31,
];
