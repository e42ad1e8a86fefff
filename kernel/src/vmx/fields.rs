//! VMCS field encodings (SDM Vol. 3 Appendix B) and control bits the core uses.

pub const VPID: u64 = 0x0000;
pub const GUEST_ES_SELECTOR: u64 = 0x0800;
pub const HOST_ES_SELECTOR: u64 = 0x0c00;
pub const HOST_CS_SELECTOR: u64 = 0x0c02;
pub const HOST_SS_SELECTOR: u64 = 0x0c04;
pub const HOST_DS_SELECTOR: u64 = 0x0c06;
pub const HOST_FS_SELECTOR: u64 = 0x0c08;
pub const HOST_GS_SELECTOR: u64 = 0x0c0a;
pub const HOST_TR_SELECTOR: u64 = 0x0c0c;
pub const GUEST_LDTR_SELECTOR: u64 = 0x080c;
pub const GUEST_TR_SELECTOR: u64 = 0x080e;

pub const MSR_BITMAP: u64 = 0x2004;
pub const VM_EXIT_MSR_STORE_ADDR: u64 = 0x2006;
pub const VM_EXIT_MSR_LOAD_ADDR: u64 = 0x2008;
pub const VM_ENTRY_MSR_LOAD_ADDR: u64 = 0x200a;
pub const EPT_POINTER: u64 = 0x201a;
pub const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
pub const VMCS_LINK_POINTER: u64 = 0x2800;
pub const GUEST_IA32_DEBUGCTL: u64 = 0x2802;
pub const GUEST_IA32_PAT: u64 = 0x2804;
pub const GUEST_IA32_EFER: u64 = 0x2806;
pub const HOST_IA32_PAT: u64 = 0x2c00;
pub const HOST_IA32_EFER: u64 = 0x2c02;

pub const PIN_BASED_CONTROLS: u64 = 0x4000;
pub const PRIMARY_CONTROLS: u64 = 0x4002;
pub const EXCEPTION_BITMAP: u64 = 0x4004;
pub const CR3_TARGET_COUNT: u64 = 0x400a;
pub const EXIT_CONTROLS: u64 = 0x400c;
pub const EXIT_MSR_STORE_COUNT: u64 = 0x400e;
pub const EXIT_MSR_LOAD_COUNT: u64 = 0x4010;
pub const ENTRY_CONTROLS: u64 = 0x4012;
pub const ENTRY_MSR_LOAD_COUNT: u64 = 0x4014;
pub const ENTRY_INTERRUPTION_INFO: u64 = 0x4016;
pub const ENTRY_EXCEPTION_ERROR_CODE: u64 = 0x4018;
pub const SECONDARY_CONTROLS: u64 = 0x401e;

pub const VM_INSTRUCTION_ERROR: u64 = 0x4400;
pub const EXIT_REASON: u64 = 0x4402;
pub const IDT_VECTORING_INFO: u64 = 0x4408;
pub const EXIT_INSTRUCTION_LENGTH: u64 = 0x440c;

pub const GUEST_ES_LIMIT: u64 = 0x4800;
pub const GUEST_LDTR_LIMIT: u64 = 0x480c;
pub const GUEST_TR_LIMIT: u64 = 0x480e;
pub const GUEST_GDTR_LIMIT: u64 = 0x4810;
pub const GUEST_IDTR_LIMIT: u64 = 0x4812;
pub const GUEST_ES_ACCESS_RIGHTS: u64 = 0x4814;
pub const GUEST_LDTR_ACCESS_RIGHTS: u64 = 0x4820;
pub const GUEST_TR_ACCESS_RIGHTS: u64 = 0x4822;
pub const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
pub const GUEST_ACTIVITY_STATE: u64 = 0x4826;
pub const GUEST_SYSENTER_CS: u64 = 0x482a;
pub const HOST_SYSENTER_CS: u64 = 0x4c00;

pub const CR0_GUEST_HOST_MASK: u64 = 0x6000;
pub const CR4_GUEST_HOST_MASK: u64 = 0x6002;
pub const CR0_READ_SHADOW: u64 = 0x6004;
pub const CR4_READ_SHADOW: u64 = 0x6006;
pub const EXIT_QUALIFICATION: u64 = 0x6400;
pub const GUEST_LINEAR_ADDRESS: u64 = 0x640a;

pub const GUEST_CR0: u64 = 0x6800;
pub const GUEST_CR3: u64 = 0x6802;
pub const GUEST_CR4: u64 = 0x6804;
pub const GUEST_ES_BASE: u64 = 0x6806;
pub const GUEST_LDTR_BASE: u64 = 0x6812;
pub const GUEST_TR_BASE: u64 = 0x6814;
pub const GUEST_GDTR_BASE: u64 = 0x6816;
pub const GUEST_IDTR_BASE: u64 = 0x6818;
pub const GUEST_DR7: u64 = 0x681a;
pub const GUEST_RSP: u64 = 0x681c;
pub const GUEST_RIP: u64 = 0x681e;
pub const GUEST_RFLAGS: u64 = 0x6820;
pub const GUEST_PENDING_DEBUG_EXCEPTIONS: u64 = 0x6822;
pub const GUEST_SYSENTER_ESP: u64 = 0x6824;
pub const GUEST_SYSENTER_EIP: u64 = 0x6826;

pub const HOST_CR0: u64 = 0x6c00;
pub const HOST_CR3: u64 = 0x6c02;
pub const HOST_CR4: u64 = 0x6c04;
pub const HOST_FS_BASE: u64 = 0x6c06;
pub const HOST_GS_BASE: u64 = 0x6c08;
pub const HOST_TR_BASE: u64 = 0x6c0a;
pub const HOST_GDTR_BASE: u64 = 0x6c0c;
pub const HOST_IDTR_BASE: u64 = 0x6c0e;
pub const HOST_SYSENTER_ESP: u64 = 0x6c10;
pub const HOST_SYSENTER_EIP: u64 = 0x6c12;
pub const HOST_RSP: u64 = 0x6c14;
pub const HOST_RIP: u64 = 0x6c16;

/// Segment fields are laid out with a stride of 2 per segment register, in
/// the x86 encoding order (ES, CS, SS, DS, FS, GS).
pub const fn segment_field(first: u64, index: usize) -> u64 {
    first + 2 * index as u64
}

pub mod pin {
    pub const NMI_EXITING: u32 = 1 << 3;
}

pub mod primary {
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

pub mod secondary {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

pub mod exit_ctl {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_64: u32 = 1 << 9;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
}

pub mod entry_ctl {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Basic exit reasons the core handles itself.
pub mod reason {
    /// With no exception bitmap, only NMIs exit with this reason.
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const CR_ACCESS: u32 = 28;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const XSETBV: u32 = 55;
    /// Bit 31 of the exit-reason field: the VM entry failed.
    pub const ENTRY_FAILED: u32 = 1 << 31;
}
