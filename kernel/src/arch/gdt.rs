//! Per-CPU global descriptor table and task-state segment.
//!
//! Selector layout (fixed, SYSCALL/SYSRET-compatible): 0x08 kernel code, 0x10
//! kernel data, 0x18 user data, 0x20 user code (64-bit), 0x28 the TSS. SYSRET
//! takes SS = STAR[63:48] + 8 and CS = STAR[63:48] + 16, so STAR[63:48] = 0x10;
//! SYSCALL takes CS = STAR[47:32] = 0x08 and SS = 0x10.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Kernel code selector (ring 0, 64-bit).
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DATA: u16 = 0x10;
/// User data/stack selector with RPL 3.
pub const USER_DATA: u16 = 0x18 | 3;
/// User code selector (64-bit) with RPL 3.
pub const USER_CODE: u16 = 0x20 | 3;
/// Task-state segment selector.
pub const TSS: u16 = 0x28;
/// The value for the STAR MSR that matches this layout.
pub const SYSCALL_STAR: u64 = ((KERNEL_DATA as u64) << 48) | ((KERNEL_CODE as u64) << 32);

/// The interrupt stack table slot used for double faults, NMIs and machine
/// checks, so they are reported even when the current stack is unusable.
pub const EMERGENCY_IST_INDEX: u16 = 0;
/// Size of each CPU's emergency stack.
pub const EMERGENCY_STACK_SIZE: usize = 16 * 1024;

/// One CPU's descriptor tables and its emergency stack. Must live for ever
/// (`'static`) once loaded: the CPU keeps pointers into it.
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    emergency_stack: EmergencyStack,
}

#[repr(C, align(16))]
struct EmergencyStack([u8; EMERGENCY_STACK_SIZE]);

impl CpuTables {
    /// Empty tables; `load` fills them in.
    pub const fn new() -> CpuTables {
        CpuTables {
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
            emergency_stack: EmergencyStack([0; EMERGENCY_STACK_SIZE]),
        }
    }

    /// Builds the GDT and TSS and loads them on the calling CPU: GDTR, all
    /// segment registers and the task register. Returns the TSS so the caller can
    /// set the ring-0 stack (`privilege_stack_table[0]`) used when an interrupt
    /// arrives in ring 3.
    pub fn load(&'static mut self) -> &'static mut TaskStateSegment {
        let CpuTables {
            gdt,
            tss,
            emergency_stack,
        } = self;
        let stack_top = VirtAddr::from_ptr(emergency_stack.0.as_ptr_range().end);
        tss.interrupt_stack_table[usize::from(EMERGENCY_IST_INDEX)] = stack_top;

        *gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // SAFETY: the TSS lives as long as the GDT (both are in this `'static`
        // value) and is never moved.
        let tss_selector =
            gdt.append(unsafe { Descriptor::tss_segment_unchecked(&raw const *tss) });
        debug_assert_eq!(
            [code.0, data.0, user_data.0, user_code.0, tss_selector.0],
            [KERNEL_CODE, KERNEL_DATA, USER_DATA, USER_CODE, TSS]
        );
        let gdt: &'static GlobalDescriptorTable = gdt;
        gdt.load();

        // SAFETY: the selectors name the descriptors just loaded; the TSS
        // descriptor is available (not busy) because this GDT is fresh.
        unsafe {
            CS::set_reg(SegmentSelector(KERNEL_CODE));
            SS::set_reg(SegmentSelector(KERNEL_DATA));
            DS::set_reg(SegmentSelector(KERNEL_DATA));
            ES::set_reg(SegmentSelector(KERNEL_DATA));
            FS::set_reg(SegmentSelector(0));
            GS::set_reg(SegmentSelector(0));
            load_tss(SegmentSelector(TSS));
        }
        tss
    }
}

impl Default for CpuTables {
    fn default() -> CpuTables {
        CpuTables::new()
    }
}
