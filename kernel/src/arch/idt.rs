//! The interrupt descriptor table with a report handler for all 32 exception
//! vectors: each stub saves the registers, and the handler prints the vector,
//! error code, RIP, CR2 and every register on the console, then stops that CPU.
//!
//! A boot self-test can arm one expected vector (`expect_selftest_exception`);
//! when it arrives the report is still printed, and the machine then stops
//! with success.

use super::gdt::{EMERGENCY_IST_INDEX, KERNEL_CODE};
use core::arch::naked_asm;
use core::sync::atomic::{AtomicU16, Ordering};
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

/// Number of architecturally defined exception vectors.
pub const EXCEPTION_VECTORS: usize = 32;

/// One 16-byte interrupt gate.
#[derive(Clone, Copy)]
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
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (IF cleared on entry), DPL 0.
    fn interrupt(handler: u64, ist: Option<u16>) -> Gate {
        const PRESENT_INTERRUPT_GATE: u8 = 0x8e;
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            ist: ist.map_or(0, |index| (index + 1) as u8),
            type_attributes: PRESENT_INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// A full 256-entry IDT.
#[repr(C, align(16))]
pub struct InterruptTable {
    gates: [Gate; 256],
}

impl InterruptTable {
    /// A table with the exception report handler on vectors 0-31 (double fault,
    /// NMI and machine check on the emergency stack) and nothing else present.
    pub fn with_exception_reports() -> InterruptTable {
        let mut table = InterruptTable {
            gates: [Gate::MISSING; 256],
        };
        for (vector, stub) in EXCEPTION_STUBS.iter().enumerate() {
            let on_emergency_stack = matches!(vector, 2 | 8 | 18);
            let ist = on_emergency_stack.then_some(EMERGENCY_IST_INDEX);
            table.gates[vector] = Gate::interrupt(*stub as usize as u64, ist);
        }
        // NMIs reach the core only as its own "leave the guest" signal
        // (see kernel/src/smp): whatever it asked for is picked up before the
        // next VM entry, so the handler just returns.
        table.gates[NMI_VECTOR] =
            Gate::interrupt(nmi_return as *const () as u64, Some(EMERGENCY_IST_INDEX));
        table
    }

    /// Loads this table on the calling CPU.
    pub fn load(&'static self) {
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<InterruptTable>() - 1) as u16,
            base: VirtAddr::from_ptr(self),
        };
        // SAFETY: the table is `'static` and every present gate points to a
        // handler in the kernel code segment.
        unsafe { lidt(&pointer) };
    }
}

/// The registers as the stubs leave them on the stack (lowest address first).
#[repr(C)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const NO_SELFTEST: u16 = u16::MAX;
static SELFTEST_VECTOR: AtomicU16 = AtomicU16::new(NO_SELFTEST);

/// Makes the next exception with `vector` count as a passed boot self-test.
pub fn expect_selftest_exception(vector: u8) {
    SELFTEST_VECTOR.store(u16::from(vector), Ordering::SeqCst);
}

const EXCEPTION_NAMES: [&str; EXCEPTION_VECTORS] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// Called by the common stub with the saved frame; prints the report.
extern "C" fn report_exception(frame: &ExceptionFrame) -> ! {
    if frame.cs & 3 == 3 {
        // SAFETY: the exception came from ring 3 through an interrupt gate, so
        // GS still holds the service's base: swap the core's back in.
        unsafe { core::arch::asm!("swapgs", options(nomem, nostack)) };
        crate::service::fault(frame.vector, frame.error_code, frame.rip);
    }
    let name = usize::try_from(frame.vector)
        .ok()
        .and_then(|vector| EXCEPTION_NAMES.get(vector))
        .copied()
        .unwrap_or("unknown");
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let cr3 = x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64();
    let apic_id = super::cpu::initial_apic_id();
    crate::emergency_println!(
        "cordon: EXCEPTION {name} (vector {}) on cpu apic-id {apic_id}, error code {:#x}\n\
         \x20 rip {:#018x} cs {:#06x} rflags {:#010x} rsp {:#018x} ss {:#06x}\n\
         \x20 cr2 {cr2:#018x} cr3 {cr3:#018x}\n\
         \x20 rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n\
         \x20 rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n\
         \x20 r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n\
         \x20 r13 {:#018x} r14 {:#018x} r15 {:#018x}",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
    );
    let expected = SELFTEST_VECTOR.swap(NO_SELFTEST, Ordering::SeqCst);
    if u64::from(expected) == frame.vector {
        crate::emergency_println!("cordon: selftest exception report ok (vector {expected})");
        super::shutdown(true);
    }
    super::halt_forever()
}

const NMI_VECTOR: usize = 2;

/// The host's NMI handler: returns (which also ends NMI blocking).
#[unsafe(naked)]
extern "C" fn nmi_return() {
    naked_asm!("iretq");
}

/// Saves the general registers below the vector and error code the stub pushed,
/// and calls the report with a pointer to them (16-byte aligned stack).
#[unsafe(naked)]
extern "C" fn exception_common() {
    naked_asm!(
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {report}",
        "ud2",
        report = sym report_exception,
    );
}

/// An entry stub: pushes a zero error code where the CPU does not, then the
/// vector, and jumps to the common part.
macro_rules! exception_stub {
    ($name:ident, $vector:literal, cpu_pushes_error_code) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(concat!("push ", $vector), "jmp {common}", common = sym exception_common);
        }
    };
    ($name:ident, $vector:literal) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                "push 0",
                concat!("push ", $vector),
                "jmp {common}",
                common = sym exception_common
            );
        }
    };
}

exception_stub!(exception_0, 0);
exception_stub!(exception_1, 1);
exception_stub!(exception_2, 2);
exception_stub!(exception_3, 3);
exception_stub!(exception_4, 4);
exception_stub!(exception_5, 5);
exception_stub!(exception_6, 6);
exception_stub!(exception_7, 7);
exception_stub!(exception_8, 8, cpu_pushes_error_code);
exception_stub!(exception_9, 9);
exception_stub!(exception_10, 10, cpu_pushes_error_code);
exception_stub!(exception_11, 11, cpu_pushes_error_code);
exception_stub!(exception_12, 12, cpu_pushes_error_code);
exception_stub!(exception_13, 13, cpu_pushes_error_code);
exception_stub!(exception_14, 14, cpu_pushes_error_code);
exception_stub!(exception_15, 15);
exception_stub!(exception_16, 16);
exception_stub!(exception_17, 17, cpu_pushes_error_code);
exception_stub!(exception_18, 18);
exception_stub!(exception_19, 19);
exception_stub!(exception_20, 20);
exception_stub!(exception_21, 21, cpu_pushes_error_code);
exception_stub!(exception_22, 22);
exception_stub!(exception_23, 23);
exception_stub!(exception_24, 24);
exception_stub!(exception_25, 25);
exception_stub!(exception_26, 26);
exception_stub!(exception_27, 27);
exception_stub!(exception_28, 28);
exception_stub!(exception_29, 29, cpu_pushes_error_code);
exception_stub!(exception_30, 30, cpu_pushes_error_code);
exception_stub!(exception_31, 31);

const EXCEPTION_STUBS: [extern "C" fn(); EXCEPTION_VECTORS] = [
    exception_0,
    exception_1,
    exception_2,
    exception_3,
    exception_4,
    exception_5,
    exception_6,
    exception_7,
    exception_8,
    exception_9,
    exception_10,
    exception_11,
    exception_12,
    exception_13,
    exception_14,
    exception_15,
    exception_16,
    exception_17,
    exception_18,
    exception_19,
    exception_20,
    exception_21,
    exception_22,
    exception_23,
    exception_24,
    exception_25,
    exception_26,
    exception_27,
    exception_28,
    exception_29,
    exception_30,
    exception_31,
];
