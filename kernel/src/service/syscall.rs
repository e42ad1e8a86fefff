//! The SYSCALL entry from ring 3, the way back (SYSRET), and the system calls
//! themselves, each checked against the service's regions and capabilities.

use super::{space, window};
use crate::cpu::{PerCpu, Registers, VcpuState};
use crate::policy::cmpxchg_check::check_cmpxchg;
use crate::policy::reply_check::validate_reply;
use crate::policy::user_range::{UserAccess, check_user_range};
use crate::{println, regs};
use abi::syscall::{LOG_MAX, MAP_SLOTS};
use abi::{
    AbiVersion, CmpxchgRequest, PAGE_SIZE, Reply, Rights, ServiceStart, Syscall, SyscallError,
};
use core::arch::naked_asm;
use core::mem::offset_of;
use zerocopy::{FromZeros, IntoBytes};

const IA32_EFER: u32 = 0xc000_0080;
const IA32_STAR: u32 = 0xc000_0081;
const IA32_LSTAR: u32 = 0xc000_0082;
const IA32_FMASK: u32 = 0xc000_0084;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
const EFER_SCE: u64 = 1;
/// Flags cleared on SYSCALL: TF, IF, DF, IOPL, NT, AC.
const SYSCALL_FLAG_MASK: u64 = 0x4_7700;
/// RFLAGS the service runs with: interrupts stay off in ring 3 (the guest
/// owns the interrupt controller; the core takes no interrupts).
const USER_RFLAGS: u64 = 0x2;

const USER: usize = offset_of!(PerCpu, user) + offset_of!(Registers, gprs);
const USER_RIP: usize = offset_of!(PerCpu, user) + offset_of!(Registers, rip);
const USER_RFLAGS_SLOT: usize = offset_of!(PerCpu, user) + offset_of!(Registers, rflags);

/// Enables SYSCALL/SYSRET on this CPU.
///
/// # Safety
/// The GDT has the layout `arch::gdt` describes.
pub unsafe fn init() {
    // SAFETY: these MSRs exist in long mode; the values match the GDT and the
    // entry point below.
    unsafe {
        regs::wrmsr(IA32_STAR, crate::arch::gdt::SYSCALL_STAR);
        regs::wrmsr(IA32_LSTAR, syscall_entry as *const () as usize as u64);
        regs::wrmsr(IA32_FMASK, SYSCALL_FLAG_MASK);
        regs::wrmsr(IA32_KERNEL_GS_BASE, 0);
        regs::wrmsr(IA32_EFER, regs::rdmsr(IA32_EFER) | EFER_SCE);
    }
}

/// SYSCALL lands here: user RIP in RCX, RFLAGS in R11, still on the user stack.
#[unsafe(naked)]
extern "C" fn syscall_entry() -> ! {
    naked_asm!(
        "swapgs",
        "mov gs:[{scratch}], rsp",
        "mov rsp, gs:[{stack}]",
        "mov gs:[{u} + 0*8], rax",
        "mov gs:[{u} + 2*8], rdx",
        "mov gs:[{u} + 3*8], rbx",
        "mov gs:[{u} + 5*8], rbp",
        "mov gs:[{u} + 6*8], rsi",
        "mov gs:[{u} + 7*8], rdi",
        "mov gs:[{u} + 8*8], r8",
        "mov gs:[{u} + 9*8], r9",
        "mov gs:[{u} + 10*8], r10",
        "mov gs:[{u} + 12*8], r12",
        "mov gs:[{u} + 13*8], r13",
        "mov gs:[{u} + 14*8], r14",
        "mov gs:[{u} + 15*8], r15",
        "mov gs:[{rip}], rcx",
        "mov gs:[{rflags}], r11",
        "mov rax, gs:[{scratch}]",
        "mov gs:[{u} + 4*8], rax",
        "mov rdi, gs:[0]",
        "xor ebp, ebp",
        "call {dispatch}",
        "ud2",
        scratch = const offset_of!(PerCpu, scratch),
        stack = const offset_of!(PerCpu, kernel_stack_top),
        u = const USER,
        rip = const USER_RIP,
        rflags = const USER_RFLAGS_SLOT,
        dispatch = sym dispatch,
    )
}

/// Returns to the service thread with the registers in `cpu.user` (RCX and
/// R11 are consumed by SYSRET, as the syscall convention allows).
pub fn return_to_service(cpu: &mut PerCpu) -> ! {
    let root = super::instance(cpu.index).space.root;
    if regs::cr3() != root {
        // SAFETY: the service space maps the kernel's first gigabyte, where
        // all core code, data and stacks live, exactly as the core's own tables.
        unsafe { regs::write_cr3(root) };
    }
    cpu.user.rflags = USER_RFLAGS;
    // SAFETY: `cpu.user.rip` is the RIP saved by SYSCALL or the checked entry
    // point, both canonical user addresses, so SYSRET cannot fault in ring 0.
    unsafe { sysret(cpu) }
}

#[unsafe(naked)]
unsafe extern "C" fn sysret(cpu: &mut PerCpu) -> ! {
    naked_asm!(
        "mov rax, gs:[{u} + 0*8]",
        "mov rdx, gs:[{u} + 2*8]",
        "mov rbx, gs:[{u} + 3*8]",
        "mov rbp, gs:[{u} + 5*8]",
        "mov rsi, gs:[{u} + 6*8]",
        "mov rdi, gs:[{u} + 7*8]",
        "mov r8, gs:[{u} + 8*8]",
        "mov r9, gs:[{u} + 9*8]",
        "mov r10, gs:[{u} + 10*8]",
        "mov r12, gs:[{u} + 12*8]",
        "mov r13, gs:[{u} + 13*8]",
        "mov r14, gs:[{u} + 14*8]",
        "mov r15, gs:[{u} + 15*8]",
        "mov rcx, gs:[{rip}]",
        "mov r11, gs:[{rflags}]",
        "mov rsp, gs:[{u} + 4*8]",
        "swapgs",
        "sysretq",
        u = const USER,
        rip = const USER_RIP,
        rflags = const USER_RFLAGS_SLOT,
    )
}

/// Sets the syscall results and returns to the service.
fn finish(cpu: &mut PerCpu, result: Result<u64, SyscallError>) -> ! {
    let (status, value) = match result {
        Ok(value) => (0, value),
        Err(error) => (error as u64, 0),
    };
    cpu.user.gprs[0] = status;
    cpu.user.gprs[2] = value;
    return_to_service(cpu)
}

extern "C" fn dispatch(cpu: &mut PerCpu) -> ! {
    let [rax, rdi, rsi, rdx] = [
        cpu.user.gprs[0],
        cpu.user.gprs[7],
        cpu.user.gprs[6],
        cpu.user.gprs[2],
    ];
    let result = match Syscall::from_raw(rax) {
        Some(Syscall::ReplyRecv) => reply_recv(cpu, rdi, rsi),
        Some(Syscall::Map) => map(cpu, rdi, rsi, rdx),
        Some(Syscall::Unmap) => unmap(cpu, rdi),
        Some(Syscall::Cmpxchg) => cmpxchg(cpu, rdi),
        Some(Syscall::Log) => log(cpu, rdi, rsi),
        Some(Syscall::InitCpu) => crate::smp::request_init(cpu, rdi),
        Some(Syscall::Exit) => {
            super::restart(cpu, format_args!("the service exited with code {rdi}"));
        }
        None => {
            println!("cordon: service refused: unknown syscall {rax}");
            Err(SyscallError::UnknownSyscall)
        }
    };
    finish(cpu, result)
}

fn refuse(what: &str, error: SyscallError) -> Result<u64, SyscallError> {
    println!("cordon: service refused: {what} ({error:?})");
    Err(error)
}

/// `reply_recv(has_reply, version)`: answers the pending exit (if
/// `has_reply`), then waits for the next one. Without a pending exit on the
/// first call, it starts the guest; with one, it hands the pending exit over
/// again (a restarted service picks up where the old one stopped).
fn reply_recv(cpu: &mut PerCpu, has_reply: u64, version: u64) -> Result<u64, SyscallError> {
    match AbiVersion::unpack(version) {
        Some(version) if version.compatible_with(AbiVersion::CURRENT) => {}
        _ => {
            return refuse(
                "reply_recv with an incompatible ABI version",
                SyscallError::AbiMismatch,
            );
        }
    }
    match (has_reply, cpu.state) {
        (0, VcpuState::NotStarted) => crate::vm::resume(cpu),
        (0, VcpuState::AwaitingReply) => super::deliver_exit(cpu),
        (1, VcpuState::AwaitingReply) => {
            let mut reply = Reply::new_zeroed();
            let frame = super::message_frame(cpu.index);
            // SAFETY: the message frame belongs to this CPU's thread and is
            // mapped for the core; the service may change it concurrently,
            // which is why the reply is copied once and then checked.
            unsafe {
                window::copy_bytes(
                    frame + ServiceStart::REPLY_OFFSET,
                    reply.as_mut_bytes().as_mut_ptr() as u64,
                    size_of::<Reply>() as u64,
                )
            };
            match validate_reply(&reply, &cpu.pending) {
                Ok(validated) => crate::forward::apply(cpu, validated),
                Err(error) => {
                    crate::cpu::count(&crate::cpu::COUNTERS.refused_replies);
                    println!("cordon: service reply refused: {}", error.describe());
                    Err(SyscallError::BadReply)
                }
            }
        }
        (1, _) => refuse(
            "reply_recv with a reply but no pending exit",
            SyscallError::NoPendingExit,
        ),
        _ => refuse(
            "reply_recv with a bad has_reply argument",
            SyscallError::BadArgument,
        ),
    }
}

/// `map(gpa_page, rights, slot)`: maps a guest page into this CPU's window.
fn map(cpu: &mut PerCpu, gpa: u64, rights: u64, slot: u64) -> Result<u64, SyscallError> {
    if slot >= MAP_SLOTS {
        return refuse(
            "map with a slot outside the window",
            SyscallError::BadArgument,
        );
    }
    if rights == 0
        || rights & !(Rights::READ | Rights::WRITE) != 0
        || !gpa.is_multiple_of(PAGE_SIZE)
    {
        return refuse(
            "map with bad rights or an unaligned page",
            SyscallError::BadArgument,
        );
    }
    if let Err(error) = super::get().capabilities.check_page(gpa, rights) {
        println!("cordon: service refused: map of GPA {gpa:#x} without capability ({error:?})");
        return Err(error);
    }
    let address = space::MAP_WINDOW + slot * PAGE_SIZE;
    let flags = space::PageFlags {
        writable: rights & Rights::WRITE != 0,
        executable: false,
        uncached: !crate::is_ram(gpa),
    };
    super::instance(cpu.index)
        .space
        .map(address, gpa, flags)
        .map_err(|_| SyscallError::BadArgument)?;
    regs::invlpg(address);
    Ok(address)
}

/// `unmap(slot)`.
fn unmap(cpu: &mut PerCpu, slot: u64) -> Result<u64, SyscallError> {
    if slot >= MAP_SLOTS {
        return refuse(
            "unmap with a slot outside the window",
            SyscallError::BadArgument,
        );
    }
    let address = space::MAP_WINDOW + slot * PAGE_SIZE;
    super::instance(cpu.index)
        .space
        .unmap(address)
        .map_err(|_| SyscallError::BadArgument)?;
    regs::invlpg(address);
    Ok(0)
}

/// `cmpxchg(request)`: one atomic compare-exchange over one or two guest pages.
fn cmpxchg(cpu: &mut PerCpu, request_address: u64) -> Result<u64, SyscallError> {
    let length = size_of::<CmpxchgRequest>() as u64;
    if let Err(error) = check_user_range(
        &super::instance(cpu.index).regions,
        request_address,
        length,
        UserAccess::Write,
    ) {
        return refuse("cmpxchg request outside the service's memory", error);
    }
    let mut request = CmpxchgRequest::new_zeroed();
    // SAFETY: the range was checked to lie in the service's writable memory,
    // which is mapped in the current (service) address space.
    unsafe {
        window::copy_user(
            request_address,
            request.as_mut_bytes().as_mut_ptr() as u64,
            length,
        )
    };
    let checked = match check_cmpxchg(&request) {
        Ok(checked) => checked,
        Err(error) => {
            println!("cordon: service refused: {}", error.describe());
            return Err(error.syscall_error());
        }
    };
    for (start, len) in checked.touched().into_iter().flatten() {
        let page = start & !(PAGE_SIZE - 1);
        if let Err(error) = super::get()
            .capabilities
            .check(page, PAGE_SIZE, Rights::CMPXCHG)
        {
            println!(
                "cordon: service refused: cmpxchg on GPA {start:#x}+{len} without capability ({error:?})"
            );
            return Err(error);
        }
    }
    let (swapped, current) = window::compare_exchange(cpu.index, &checked);
    let current_offset = offset_of!(CmpxchgRequest, current) as u64;
    // SAFETY: as above: the request lies in checked, writable service memory.
    unsafe {
        window::copy_user(
            current.as_ptr() as u64,
            request_address + current_offset,
            16,
        )
    };
    Ok(u64::from(swapped))
}

/// `log(address, length)`: prints service text on the console.
fn log(cpu: &mut PerCpu, address: u64, length: u64) -> Result<u64, SyscallError> {
    if length > LOG_MAX {
        return refuse("log longer than LOG_MAX", SyscallError::BadArgument);
    }
    if let Err(error) = check_user_range(
        &super::instance(cpu.index).regions,
        address,
        length,
        UserAccess::Read,
    ) {
        return refuse("log buffer outside the service's memory", error);
    }
    let mut buffer = [0u8; LOG_MAX as usize];
    // SAFETY: the range was checked to lie in the service's readable memory.
    unsafe { window::copy_user(address, buffer.as_mut_ptr() as u64, length) };
    let text = &mut buffer[..length as usize];
    for byte in text.iter_mut() {
        if !(byte.is_ascii_graphic() || *byte == b' ') {
            *byte = b'.';
        }
    }
    let text = core::str::from_utf8(text).unwrap_or("");
    println!("service[{}]: {}", cpu.index, text.trim_end_matches('.'));
    Ok(length)
}
