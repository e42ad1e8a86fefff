//! The native side of differential testing: runs one instruction on the host
//! CPU in a user-mode sandbox at fixed addresses and reports the registers,
//! flags, vector registers and memory it left, or the exception it raised.
//!
//! Layout (all fixed, so the emulated guest can map the same linear addresses):
//! a code page at [`CODE_BASE`] with generated entry/exit stubs and the
//! instruction at [`INSTRUCTION_ADDRESS`]; a context page after it (input and
//! output state, the host stack pointer, a scratch stack); and a data region
//! at [`DATA_BASE`]: [`WRITABLE_PAGES`] read/write pages, one read-only page,
//! one inaccessible guard page. Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) in
//! the code page are caught by a handler on an alternate stack that records
//! the trap number, error code and address (the kernel's copies of the
//! vector, error code and CR2) and redirects to a recovery stub. Faults
//! anywhere else go to the handler that was installed before ours.
//!
//! One sandbox exists per process; [`with_sandbox`] serialises its users.

use core::ptr;
use iced_x86::code_asm::*;
use std::sync::{Mutex, Once};

/// The code page: stubs and the instruction under test.
pub const CODE_BASE: u64 = 0x3100_0000;
/// Where the instruction under test starts.
pub const INSTRUCTION_ADDRESS: u64 = CODE_BASE + 0x800;
/// The context page (input/output state), right after the code page.
pub const CONTEXT_BASE: u64 = CODE_BASE + 0x1000;
/// The data region instruction operands point into.
pub const DATA_BASE: u64 = 0x3000_0000;
/// Pages at `DATA_BASE` that are readable and writable.
pub const WRITABLE_PAGES: u64 = 2;
/// Index of the read-only page in the data region.
pub const READ_ONLY_PAGE: u64 = 2;
/// Index of the inaccessible page in the data region.
pub const GUARD_PAGE: u64 = 3;
/// Pages in the data region.
pub const DATA_PAGES: u64 = 4;

const ENTRY_OFFSET: u64 = 0x000;
const COMPATIBILITY_ENTRY_OFFSET: u64 = 0xa00;
const SEGMENTED_ENTRY_OFFSET: u64 = 0xc00;
const EXIT_OFFSET: u64 = 0x400;
const FAULT_EXIT_OFFSET: u64 = 0x600;

const IN_GPRS: u64 = 0;
const IN_RFLAGS: u64 = 128;
const OUT_GPRS: u64 = 136;
const OUT_RFLAGS: u64 = 264;
const HOST_RSP: u64 = 272;
const FAULT_SIGNAL: u64 = 280;
const FAULT_TRAPNO: u64 = 288;
const FAULT_ERROR: u64 = 296;
const FAULT_ADDRESS: u64 = 304;
const FAULT_RIP: u64 = 312;
/// A far pointer (m16:32) to the instruction in the 32-bit user code segment.
const FAR_POINTER: u64 = 320;
/// ES, SS and DS (16 bits each) as the instruction left them.
const OUT_SELECTORS: u64 = 336;
const IN_YMM: u64 = 512;
const OUT_YMM: u64 = 1024;
const STACK_TOP: u64 = 4096;

/// Flags the sandbox never lets the instruction start with (TF would trap).
const FORBIDDEN_FLAGS: u64 = 1 << 8;
const CALLER_FLAGS_TO_CLEAR: i64 = (1 << 8) | (1 << 10) | (1 << 18);

/// Linux's user code segments: 64-bit and 32-bit (compatibility mode).
const USER_CS64: u16 = 0x33;
const USER_CS32: u16 = 0x23;
/// Linux's user data segment, loaded into DS and ES for compatibility mode
/// (where a null DS would fault) and reset to null afterwards.
const USER_DS: u32 = 0x2b;
const USER_SS: u16 = 0x2b;

/// The mode the instruction runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeMode {
    /// 64-bit mode (CS 0x33).
    Long,
    /// Compatibility mode: Linux's 32-bit user code segment (CS 0x23, D = 1)
    /// with DS = ES = SS = 0x2b, flat 4 GiB segments, under the same paging.
    Compatibility,
    /// Compatibility mode with DS = ES = [`LDT_DATA_SELECTOR`] and SS =
    /// [`LDT_STACK_SELECTOR`]: LDT data segments with their own base, limit,
    /// granularity, direction and rights, so segment checks run natively.
    Segmented {
        data: DataSegment,
        stack: DataSegment,
        /// Run in a 16-bit LDT code segment ([`LDT_CODE16_SELECTOR`], base
        /// [`CODE_BASE`], IP [`CODE16_IP`]) instead of Linux's 32-bit one.
        code16: bool,
    },
}

/// LDT entry 2 (RPL 3): a 16-bit code segment based at [`CODE_BASE`].
pub const LDT_CODE16_SELECTOR: u16 = 0x17;
/// Where the instruction starts in the 16-bit code segment.
pub const CODE16_IP: u64 = INSTRUCTION_ADDRESS - CODE_BASE;

/// A 32-bit (D/B = 1) DPL-3 data segment for the LDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSegment {
    pub base: u32,
    /// The 20-bit limit field.
    pub limit: u32,
    /// G: the limit counts 4 KiB pages.
    pub page_granular: bool,
    pub expand_down: bool,
    pub writable: bool,
    /// D/B: a 32-bit stack pointer for SS, a 4 GiB upper bound when expand-down.
    pub big: bool,
}

impl DataSegment {
    /// The limit in bytes, as VMX stores it.
    pub fn byte_limit(&self) -> u32 {
        if self.page_granular {
            (self.limit << 12) | 0xfff
        } else {
            self.limit
        }
    }

    /// The 4-bit descriptor type (accessed set, as Linux installs it).
    pub fn descriptor_type(&self) -> u32 {
        1 | u32::from(self.writable) << 1 | u32::from(self.expand_down) << 2
    }
}

/// LDT entry 0 (RPL 3), loaded into DS and ES in [`NativeMode::Segmented`].
pub const LDT_DATA_SELECTOR: u16 = 0x07;
/// LDT entry 1 (RPL 3), loaded into SS in [`NativeMode::Segmented`].
pub const LDT_STACK_SELECTOR: u16 = 0x0f;

/// Installs `segment` as LDT entry `entry` (Linux's `modify_ldt`).
pub fn install_ldt_entry(entry: u32, segment: DataSegment) {
    // seg_32bit (bit 0), contents (bits 1-2: 1 = expand-down data),
    // read_exec_only (bit 3), limit_in_pages (bit 4).
    let flags = u32::from(segment.big)
        | u32::from(segment.expand_down) << 1
        | u32::from(!segment.writable) << 3
        | u32::from(segment.page_granular) << 4;
    install_ldt_descriptor(entry, segment.base, segment.limit, flags);
}

/// Installs the 16-bit code segment (contents 2 = code, readable).
fn install_code16_entry() {
    install_ldt_descriptor(2, CODE_BASE as u32, 0xffff, 2 << 1);
}

/// Installs LDT entry `entry` through Linux's `modify_ldt` with `struct
/// user_desc` flags `flags` (seg_32bit 0, contents 2:1, read_exec_only 3,
/// limit_in_pages 4, seg_not_present 5, useable 6). Linux builds a DPL-3
/// descriptor with the accessed bit set; the LDT grows to `entry + 1`
/// entries if it was smaller and never shrinks.
pub fn install_ldt_descriptor(entry: u32, base: u32, limit: u32, flags: u32) {
    /// Linux's `struct user_desc`.
    #[repr(C)]
    struct UserDesc {
        entry_number: u32,
        base_addr: u32,
        limit: u32,
        flags: u32,
    }
    let descriptor = UserDesc {
        entry_number: entry,
        base_addr: base,
        limit,
        flags,
    };
    // SAFETY: modify_ldt(0x11, desc, size) reads one user_desc; it changes
    // only this process's LDT, which nothing but the sandbox uses.
    let result = unsafe {
        libc::syscall(
            libc::SYS_modify_ldt,
            0x11,
            &descriptor as *const UserDesc,
            size_of::<UserDesc>(),
        )
    };
    assert_eq!(result, 0, "modify_ldt failed");
}

/// Registers in, or out of, a native run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeState {
    /// In x86 encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15).
    pub gprs: [u64; 16],
    pub rflags: u64,
    pub ymm: [[u8; 32]; 16],
}

/// An exception the instruction raised natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeFault {
    pub signal: i32,
    /// The vector (the kernel's trap number).
    pub vector: u8,
    pub error_code: u64,
    /// The faulting address (CR2 for #PF).
    pub address: u64,
    pub rip: u64,
    /// Registers and flags at the fault.
    pub gprs: [u64; 16],
    pub rflags: u64,
}

/// What running one instruction natively came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeOutcome {
    Completed(Box<NativeState>),
    Faulted(NativeFault),
}

/// The one sandbox of this process.
pub struct Sandbox {
    read_only_contents: Vec<u8>,
}

static SANDBOX: Mutex<Option<Sandbox>> = Mutex::new(None);
static INSTALL_HANDLERS: Once = Once::new();
const CAUGHT_SIGNALS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL];
static PREVIOUS_ACTIONS: Mutex<Vec<(libc::c_int, libc::sigaction)>> = Mutex::new(Vec::new());

thread_local! {
    static ALTERNATE_STACK: Vec<u8> = install_alternate_stack();
}

/// Runs `f` with exclusive use of the process's sandbox (created on first use).
pub fn with_sandbox<R>(f: impl FnOnce(&mut Sandbox) -> R) -> R {
    let mut guard = SANDBOX
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let sandbox = guard.get_or_insert_with(Sandbox::create);
    ALTERNATE_STACK.with(|stack| assert!(!stack.is_empty()));
    f(sandbox)
}

fn context_pointer(offset: u64) -> *mut u64 {
    ptr::with_exposed_provenance_mut((CONTEXT_BASE + offset) as usize)
}

fn read_context(offset: u64) -> u64 {
    // SAFETY: the context page is mapped for the life of the process.
    unsafe { ptr::read_volatile(context_pointer(offset)) }
}

fn write_context(offset: u64, value: u64) {
    // SAFETY: the context page is mapped for the life of the process.
    unsafe { ptr::write_volatile(context_pointer(offset), value) }
}

fn map_fixed(address: u64, len: u64, protection: libc::c_int) {
    // SAFETY: maps fresh anonymous memory at an address nothing else uses
    // (MAP_FIXED_NOREPLACE refuses to replace an existing mapping).
    let mapped = unsafe {
        libc::mmap(
            ptr::with_exposed_provenance_mut(address as usize),
            len as usize,
            protection,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(
        mapped as u64, address,
        "sandbox: cannot map {len:#x} bytes at {address:#x}"
    );
}

fn protect(address: u64, len: u64, protection: libc::c_int) {
    // SAFETY: changes the protection of sandbox pages mapped by `map_fixed`.
    let result = unsafe {
        libc::mprotect(
            ptr::with_exposed_provenance_mut(address as usize),
            len as usize,
            protection,
        )
    };
    assert_eq!(result, 0, "sandbox: mprotect failed");
}

impl Sandbox {
    fn create() -> Sandbox {
        map_fixed(
            CODE_BASE,
            0x1000,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        );
        map_fixed(CONTEXT_BASE, 0x1000, libc::PROT_READ | libc::PROT_WRITE);
        map_fixed(
            DATA_BASE,
            DATA_PAGES * 0x1000,
            libc::PROT_READ | libc::PROT_WRITE,
        );
        let mut read_only_contents = vec![0; 0x1000];
        crate::Rng::new(0x0c0d_e0ff).fill(&mut read_only_contents);
        let read_only = DATA_BASE + READ_ONLY_PAGE * 0x1000;
        // SAFETY: the data region was just mapped read/write.
        unsafe {
            ptr::copy_nonoverlapping(
                read_only_contents.as_ptr(),
                ptr::with_exposed_provenance_mut(read_only as usize),
                0x1000,
            )
        };
        protect(read_only, 0x1000, libc::PROT_READ);
        protect(DATA_BASE + GUARD_PAGE * 0x1000, 0x1000, libc::PROT_NONE);
        write_stubs();
        INSTALL_HANDLERS.call_once(install_handlers);
        Sandbox { read_only_contents }
    }

    /// The fixed contents of the read-only data page.
    pub fn read_only_contents(&self) -> &[u8] {
        &self.read_only_contents
    }

    /// Overwrites the writable data pages with `contents`
    /// (`WRITABLE_PAGES * 4096` bytes).
    pub fn set_writable_data(&mut self, contents: &[u8]) {
        assert_eq!(contents.len() as u64, WRITABLE_PAGES * 0x1000);
        // SAFETY: the writable data pages are mapped read/write and no
        // reference to them exists.
        unsafe {
            ptr::copy_nonoverlapping(
                contents.as_ptr(),
                ptr::with_exposed_provenance_mut(DATA_BASE as usize),
                contents.len(),
            )
        };
    }

    /// The current contents of the writable data pages.
    pub fn writable_data(&self) -> Vec<u8> {
        let mut contents = vec![0; (WRITABLE_PAGES * 0x1000) as usize];
        // SAFETY: the writable data pages are mapped and readable.
        unsafe {
            ptr::copy_nonoverlapping(
                ptr::with_exposed_provenance(DATA_BASE as usize),
                contents.as_mut_ptr(),
                contents.len(),
            )
        };
        contents
    }

    /// ES, SS and DS as the last run's instruction left them (meaningful
    /// when it completed; the sandbox restores the host's afterwards).
    pub fn data_selectors(&self) -> [u16; 3] {
        let selectors = read_context(OUT_SELECTORS);
        [
            selectors as u16,
            (selectors >> 16) as u16,
            (selectors >> 32) as u16,
        ]
    }

    /// Runs `instruction` (at most 15 bytes) once at [`INSTRUCTION_ADDRESS`]
    /// from `input`. TF in the input flags is ignored.
    pub fn run(&mut self, instruction: &[u8], input: &NativeState) -> NativeOutcome {
        self.run_in(NativeMode::Long, instruction, input)
    }

    /// Runs `instruction` as [`Sandbox::run`] does, in `mode`. In
    /// compatibility mode the upper halves of the GPRs afterwards are what
    /// the CPU left (the SDM leaves them undefined).
    pub fn run_in(
        &mut self,
        mode: NativeMode,
        instruction: &[u8],
        input: &NativeState,
    ) -> NativeOutcome {
        assert!(instruction.len() <= 15, "instruction longer than 15 bytes");
        let mut code = instruction.to_vec();
        let entry = match mode {
            NativeMode::Long => {
                let after = INSTRUCTION_ADDRESS + instruction.len() as u64 + 5;
                let back = (CODE_BASE + EXIT_OFFSET).wrapping_sub(after) as i32;
                code.push(0xe9);
                code.extend_from_slice(&back.to_le_bytes());
                ENTRY_OFFSET
            }
            NativeMode::Compatibility | NativeMode::Segmented { .. } => {
                let mut target = INSTRUCTION_ADDRESS | u64::from(USER_CS32) << 32;
                if let NativeMode::Segmented {
                    data,
                    stack,
                    code16,
                } = mode
                {
                    install_ldt_entry(0, data);
                    install_ldt_entry(1, stack);
                    if code16 {
                        install_code16_entry();
                        target = CODE16_IP | u64::from(LDT_CODE16_SELECTOR) << 32;
                        // The 32-bit offset of the far jump back needs 66h.
                        code.push(0x66);
                    }
                }
                // jmp far 0x33:exit (EA ptr16:32), back to 64-bit mode.
                code.push(0xea);
                code.extend_from_slice(&((CODE_BASE + EXIT_OFFSET) as u32).to_le_bytes());
                code.extend_from_slice(&USER_CS64.to_le_bytes());
                write_context(FAR_POINTER, target);
                if mode == NativeMode::Compatibility {
                    COMPATIBILITY_ENTRY_OFFSET
                } else {
                    SEGMENTED_ENTRY_OFFSET
                }
            }
        };
        // SAFETY: the code page is mapped writable and executable; the
        // instruction slot (0x800..0x814) lies inside it.
        unsafe {
            ptr::copy_nonoverlapping(
                code.as_ptr(),
                ptr::with_exposed_provenance_mut(INSTRUCTION_ADDRESS as usize),
                code.len(),
            )
        };
        for (index, value) in input.gprs.iter().enumerate() {
            write_context(IN_GPRS + 8 * index as u64, *value);
        }
        write_context(IN_RFLAGS, (input.rflags & !FORBIDDEN_FLAGS) | 2);
        for (index, ymm) in input.ymm.iter().enumerate() {
            for (half, chunk) in ymm.chunks(8).enumerate() {
                let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                write_context(IN_YMM + 32 * index as u64 + 8 * half as u64, value);
            }
        }
        write_context(FAULT_SIGNAL, 0);
        write_context(OUT_SELECTORS, 0);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: the entry stub is a sysv64 function without arguments: it
        // saves the callee-saved registers and the stack pointer, runs the
        // instruction on its own register state, and returns (directly, or
        // through the fault stub) with callee-saved registers, the stack
        // pointer and DF/AC/TF restored; it clobbers only caller-saved
        // registers, the sandbox pages and what the instruction itself
        // writes (operands point into the sandbox data region).
        unsafe {
            let entry: extern "sysv64" fn() =
                core::mem::transmute(ptr::with_exposed_provenance::<u8>(
                    (CODE_BASE + entry) as usize,
                ));
            entry();
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let mut gprs = [0; 16];
        for (index, value) in gprs.iter_mut().enumerate() {
            *value = read_context(OUT_GPRS + 8 * index as u64);
        }
        let rflags = read_context(OUT_RFLAGS);
        let signal = read_context(FAULT_SIGNAL);
        if signal != 0 {
            return NativeOutcome::Faulted(NativeFault {
                signal: signal as i32,
                vector: read_context(FAULT_TRAPNO) as u8,
                error_code: read_context(FAULT_ERROR),
                address: read_context(FAULT_ADDRESS),
                rip: read_context(FAULT_RIP),
                gprs,
                rflags,
            });
        }
        let mut ymm = [[0u8; 32]; 16];
        for (index, register) in ymm.iter_mut().enumerate() {
            for half in 0..4 {
                let value = read_context(OUT_YMM + 32 * index as u64 + 8 * half as u64);
                register[8 * half..8 * half + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        NativeOutcome::Completed(Box::new(NativeState { gprs, rflags, ymm }))
    }
}

const GPRS: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];
const YMMS: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const CALLEE_SAVED: [AsmRegister64; 6] = [rbx, rbp, r12, r13, r14, r15];

fn context(offset: u64) -> AsmMemoryOperand {
    qword_ptr(CONTEXT_BASE + offset)
}

/// Assembles the entry, exit and fault-exit stubs into the code page.
fn write_stubs() {
    let assembled = assemble_stubs().expect("assembling the sandbox stubs");
    for (offset, bytes) in assembled {
        assert!(bytes.len() as u64 <= 0x200, "stub too long");
        // SAFETY: the code page is mapped writable; each stub fits its slot.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                ptr::with_exposed_provenance_mut((CODE_BASE + offset) as usize),
                bytes.len(),
            )
        };
    }
}

fn assemble_stubs() -> Result<Vec<(u64, Vec<u8>)>, IcedError> {
    let entry = entry_stub(NativeMode::Long)?;
    let compatibility_entry = entry_stub(NativeMode::Compatibility)?;
    let flat = DataSegment {
        base: 0,
        limit: 0xf_ffff,
        page_granular: true,
        expand_down: false,
        writable: true,
        big: true,
    };
    let segmented_entry = entry_stub(NativeMode::Segmented {
        data: flat,
        stack: flat,
        code16: false,
    })?;

    // Exit: save GPRs and the data selectors (MOV and LEA leave the flags
    // alone), then the flags and vectors, reset the flags for the host and
    // return to it.
    let mut exit = CodeAssembler::new(64)?;
    for (index, register) in GPRS.iter().enumerate() {
        exit.mov(context(OUT_GPRS + 8 * index as u64), *register)?;
    }
    for (index, selector) in [es, ss, ds].into_iter().enumerate() {
        exit.mov(
            word_ptr(CONTEXT_BASE + OUT_SELECTORS + 2 * index as u64),
            selector,
        )?;
    }
    exit.mov(rsp, CONTEXT_BASE + STACK_TOP)?;
    exit.pushfq()?;
    exit.pop(rax)?;
    exit.mov(context(OUT_RFLAGS), rax)?;
    for (index, register) in YMMS.iter().enumerate() {
        exit.vmovdqu(
            ymmword_ptr(CONTEXT_BASE + OUT_YMM + 32 * index as u64),
            *register,
        )?;
    }
    exit.push(0x202)?;
    exit.popfq()?;
    return_to_host(&mut exit)?;

    // Fault exit: the signal handler already recorded the state and cleared
    // DF/AC/TF in the flags it resumes with.
    let mut fault_exit = CodeAssembler::new(64)?;
    return_to_host(&mut fault_exit)?;

    Ok(vec![
        (ENTRY_OFFSET, entry),
        (COMPATIBILITY_ENTRY_OFFSET, compatibility_entry),
        (SEGMENTED_ENTRY_OFFSET, segmented_entry),
        (EXIT_OFFSET, exit.assemble(CODE_BASE + EXIT_OFFSET)?),
        (
            FAULT_EXIT_OFFSET,
            fault_exit.assemble(CODE_BASE + FAULT_EXIT_OFFSET)?,
        ),
    ])
}

/// Entry: save the host, load flags, vectors and GPRs, jump to the
/// instruction (far, into the 32-bit code segment, for compatibility mode).
fn entry_stub(mode: NativeMode) -> Result<Vec<u8>, IcedError> {
    let mut entry = CodeAssembler::new(64)?;
    for register in CALLEE_SAVED {
        entry.push(register)?;
    }
    entry.mov(context(HOST_RSP), rsp)?;
    entry.mov(rsp, CONTEXT_BASE + STACK_TOP)?;
    entry.push(context(IN_RFLAGS))?;
    entry.popfq()?;
    for (index, register) in YMMS.iter().enumerate() {
        entry.vmovdqu(
            *register,
            ymmword_ptr(CONTEXT_BASE + IN_YMM + 32 * index as u64),
        )?;
    }
    match mode {
        NativeMode::Long => {}
        NativeMode::Compatibility => {
            entry.mov(eax, USER_DS)?;
            entry.mov(ds, ax)?;
            entry.mov(es, ax)?;
        }
        NativeMode::Segmented { .. } => {
            entry.mov(eax, u32::from(LDT_DATA_SELECTOR))?;
            entry.mov(ds, ax)?;
            entry.mov(es, ax)?;
            entry.mov(eax, u32::from(LDT_STACK_SELECTOR))?;
            entry.mov(ss, ax)?;
        }
    }
    for (index, register) in GPRS.iter().enumerate() {
        if *register != rsp {
            entry.mov(*register, context(IN_GPRS + 8 * index as u64))?;
        }
    }
    entry.mov(rsp, context(IN_GPRS + 8 * 4))?;
    match mode {
        NativeMode::Long => entry.jmp(INSTRUCTION_ADDRESS)?,
        NativeMode::Compatibility | NativeMode::Segmented { .. } => {
            entry.jmp(fword_ptr(CONTEXT_BASE + FAR_POINTER))?
        }
    }
    let offset = match mode {
        NativeMode::Long => ENTRY_OFFSET,
        NativeMode::Compatibility => COMPATIBILITY_ENTRY_OFFSET,
        NativeMode::Segmented { .. } => SEGMENTED_ENTRY_OFFSET,
    };
    entry.assemble(CODE_BASE + offset)
}

fn return_to_host(code: &mut CodeAssembler) -> Result<(), IcedError> {
    code.vzeroupper()?;
    // Linux's user SS, and null DS and ES again (compatibility mode loaded
    // others).
    code.mov(eax, u32::from(USER_SS))?;
    code.mov(ss, ax)?;
    code.xor(eax, eax)?;
    code.mov(ds, ax)?;
    code.mov(es, ax)?;
    code.mov(rsp, context(HOST_RSP))?;
    for register in CALLEE_SAVED.iter().rev() {
        code.pop(*register)?;
    }
    code.ret()
}

fn install_alternate_stack() -> Vec<u8> {
    let stack = vec![0u8; 256 * 1024];
    let descriptor = libc::stack_t {
        ss_sp: stack.as_ptr() as *mut libc::c_void,
        ss_flags: 0,
        ss_size: stack.len(),
    };
    // SAFETY: the stack lives as long as this thread (thread-local); it is
    // only used by signal handlers running on this thread.
    let result = unsafe { libc::sigaltstack(&descriptor, ptr::null_mut()) };
    assert_eq!(result, 0, "sigaltstack failed");
    stack
}

fn install_handlers() {
    let mut previous = PREVIOUS_ACTIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for signal in CAUGHT_SIGNALS {
        // SAFETY: an all-zero sigaction is a valid starting value.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = sandbox_fault_handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: zeroed storage for the old action.
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: installs a handler that is async-signal-safe for faults in
        // the sandbox and hands any other fault back (see the handler).
        let result = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, &mut old)
        };
        assert_eq!(result, 0, "sigaction failed");
        previous.push((signal, old));
    }
}

extern "C" fn sandbox_fault_handler(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // The kernel clears DF and TF for a handler but not AC: with the
    // instruction's AC = 1 (and CR0.AM, set by Linux), any misaligned access
    // the compiler emits here would raise #AC. Clear it before anything else.
    // SAFETY: only changes RFLAGS.AC of this thread; the stack use is
    // balanced.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "and qword ptr [rsp], {mask}",
            "popfq",
            mask = in(reg) !(1u64 << 18),
        )
    };
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers.
    let context = unsafe { &mut *(context as *mut libc::ucontext_t) };
    let registers = &mut context.uc_mcontext.gregs;
    let rip = registers[libc::REG_RIP as usize] as u64;
    let code_selector = registers[libc::REG_CSGSFS as usize] as u16;
    let in_code16 = code_selector == LDT_CODE16_SELECTOR && rip < 0x1000;
    if !(CODE_BASE..CODE_BASE + 0x1000).contains(&rip) && !in_code16 {
        // Not ours: restore the previous action and return, so the fault
        // recurs and reaches it. `try_lock`: never block in a handler.
        if let Ok(previous) = PREVIOUS_ACTIONS.try_lock() {
            for (caught, old) in previous.iter() {
                if *caught == signal {
                    // SAFETY: reinstalls the action that was there before.
                    unsafe { libc::sigaction(signal, old, ptr::null_mut()) };
                }
            }
        }
        return;
    }
    const ORDER: [libc::c_int; 16] = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RBX,
        libc::REG_RSP,
        libc::REG_RBP,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
    ];
    for (index, register) in ORDER.iter().enumerate() {
        write_context(
            OUT_GPRS + 8 * index as u64,
            registers[*register as usize] as u64,
        );
    }
    write_context(OUT_RFLAGS, registers[libc::REG_EFL as usize] as u64);
    write_context(FAULT_TRAPNO, registers[libc::REG_TRAPNO as usize] as u64);
    write_context(FAULT_ERROR, registers[libc::REG_ERR as usize] as u64);
    // SAFETY: info is valid for SA_SIGINFO handlers; si_addr is defined for
    // the four fault signals caught here.
    write_context(FAULT_ADDRESS, unsafe { (*info).si_addr() } as u64);
    write_context(FAULT_RIP, rip);
    write_context(FAULT_SIGNAL, signal as u64);
    registers[libc::REG_RIP as usize] = (CODE_BASE + FAULT_EXIT_OFFSET) as i64;
    // Resume in 64-bit mode even if the instruction ran in compatibility
    // mode (CS is the low 16 bits of the CS/GS/FS word).
    let segments = &mut registers[libc::REG_CSGSFS as usize];
    *segments = (*segments & !0xffff) | i64::from(USER_CS64);
    registers[libc::REG_RSP as usize] = (CONTEXT_BASE + STACK_TOP) as i64;
    registers[libc::REG_EFL as usize] &= !CALLER_FLAGS_TO_CLEAR;
}

/// The host's segment selectors (ES, CS, SS, DS, FS, GS), which `MOV m16,
/// Sreg` stores; the emulated guest gets the same.
pub fn host_selectors() -> [u16; 6] {
    let mut selectors = [0u16; 6];
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {es:x}, es",
            "mov {cs:x}, cs",
            "mov {ss:x}, ss",
            "mov {ds:x}, ds",
            "mov {fs:x}, fs",
            "mov {gs:x}, gs",
            es = out(reg) selectors[0],
            cs = out(reg) selectors[1],
            ss = out(reg) selectors[2],
            ds = out(reg) selectors[3],
            fs = out(reg) selectors[4],
            gs = out(reg) selectors[5],
            options(nomem, nostack, preserves_flags),
        )
    };
    selectors
}

/// The host's XCR0 (which state components XSAVE-enabled code may use).
pub fn host_xcr0() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is allowed at CPL 3 when CR4.OSXSAVE is
    // set, which the sandbox's use of AVX already requires.
    unsafe {
        core::arch::asm!(
            "xgetbv",
            in("ecx") 0,
            out("eax") low,
            out("edx") high,
            options(nomem, nostack, preserves_flags),
        )
    };
    u64::from(high) << 32 | u64::from(low)
}

/// This thread's FS and GS bases (FS holds the thread's TLS block), which
/// FS:/GS:-prefixed operands add natively; the emulated guest gets the same.
pub fn host_segment_bases() -> (u64, u64) {
    const ARCH_GET_FS: libc::c_long = 0x1003;
    const ARCH_GET_GS: libc::c_long = 0x1004;
    let mut bases = [0u64; 2];
    for (base, code) in bases.iter_mut().zip([ARCH_GET_FS, ARCH_GET_GS]) {
        // SAFETY: arch_prctl(ARCH_GET_FS/GS) writes one u64 to the pointer.
        let result = unsafe { libc::syscall(libc::SYS_arch_prctl, code, base as *mut u64) };
        assert_eq!(result, 0, "arch_prctl failed");
    }
    (bases[0], bases[1])
}
