//! Checks of vector state across emulated accesses: every XMM/YMM register
//! keeps its value through an exit the service handles (the core saves and
//! restores the guest's extended state around its own code), and SSE/AVX
//! moves between vector registers and trapped memory are emulated. The AVX
//! checks first turn AVX on through XSETBV, which the core handles.

use core::arch::asm;
use guest_support::cpu::cpuid;
use guest_support::trapped::TrappedMemory;

/// Per-byte distinct contents for YMM0-15 (32 bytes each).
fn pattern() -> [u8; 512] {
    core::array::from_fn(|n| (n as u8).wrapping_mul(7).wrapping_add(0x31))
}

/// Number of bytes that differ between two buffers.
fn mismatches(left: &[u8], right: &[u8]) -> u64 {
    left.iter().zip(right).filter(|(a, b)| a != b).count() as u64
}

/// Loads XMM0-15 from a pattern, makes one emulated store, then stores
/// XMM0-15 back; returns the number of bytes that changed.
///
/// # Safety
/// `address` is trapped memory the caller may write.
pub unsafe fn xmm_survive_exit(memory: &mut TrappedMemory, address: usize) -> u64 {
    let before = pattern();
    let mut after = [0u8; 256];
    // SAFETY: the buffers are locals of the right size; `address` per the caller.
    unsafe {
        asm!(
            "movdqu xmm0, [{src}]", "movdqu xmm1, [{src} + 16]", "movdqu xmm2, [{src} + 32]",
            "movdqu xmm3, [{src} + 48]", "movdqu xmm4, [{src} + 64]", "movdqu xmm5, [{src} + 80]",
            "movdqu xmm6, [{src} + 96]", "movdqu xmm7, [{src} + 112]", "movdqu xmm8, [{src} + 128]",
            "movdqu xmm9, [{src} + 144]", "movdqu xmm10, [{src} + 160]", "movdqu xmm11, [{src} + 176]",
            "movdqu xmm12, [{src} + 192]", "movdqu xmm13, [{src} + 208]", "movdqu xmm14, [{src} + 224]",
            "movdqu xmm15, [{src} + 240]",
            "mov dword ptr [{address}], {value:e}",
            "movdqu [{dst}], xmm0", "movdqu [{dst} + 16], xmm1", "movdqu [{dst} + 32], xmm2",
            "movdqu [{dst} + 48], xmm3", "movdqu [{dst} + 64], xmm4", "movdqu [{dst} + 80], xmm5",
            "movdqu [{dst} + 96], xmm6", "movdqu [{dst} + 112], xmm7", "movdqu [{dst} + 128], xmm8",
            "movdqu [{dst} + 144], xmm9", "movdqu [{dst} + 160], xmm10", "movdqu [{dst} + 176], xmm11",
            "movdqu [{dst} + 192], xmm12", "movdqu [{dst} + 208], xmm13", "movdqu [{dst} + 224], xmm14",
            "movdqu [{dst} + 240], xmm15",
            src = in(reg) before.as_ptr(),
            dst = in(reg) after.as_mut_ptr(),
            address = in(reg) address,
            value = in(reg) 0x5eed_u32,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
            out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
            out("xmm15") _,
            options(nostack),
        );
    }
    memory.add_counted_elsewhere(1);
    mismatches(&before[..256], &after)
}

/// `movdqu xmm1, [address]` then `movdqu [address + 16], xmm1`: both
/// emulated. Returns (bytes loaded wrong, bytes stored wrong).
///
/// # Safety
/// `address..address + 32` is trapped memory the caller may write.
pub unsafe fn movdqu_round_trip(memory: &mut TrappedMemory, address: usize) -> (u64, u64) {
    let data = pattern();
    let (low, high) = (
        u64::from_le_bytes(data[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(data[8..16].try_into().unwrap_or_default()),
    );
    let mut loaded = [0u8; 16];
    // SAFETY: per the caller; `loaded` is a local.
    unsafe {
        memory.store_u64(address, low);
        memory.store_u64(address + 8, high);
        asm!(
            "movdqu xmm1, [{address}]",
            "movdqu [{loaded}], xmm1",
            "movdqu [{address} + 16], xmm1",
            address = in(reg) address,
            loaded = in(reg) loaded.as_mut_ptr(),
            out("xmm1") _,
            options(nostack),
        );
        memory.add_counted_elsewhere(2);
        let stored = [memory.load_u64(address + 16), memory.load_u64(address + 24)];
        let mut stored_bytes = [0u8; 16];
        stored_bytes[..8].copy_from_slice(&stored[0].to_le_bytes());
        stored_bytes[8..].copy_from_slice(&stored[1].to_le_bytes());
        (
            mismatches(&data[..16], &loaded),
            mismatches(&data[..16], &stored_bytes),
        )
    }
}

/// Turns AVX on (CR4.OSXSAVE, then XCR0 = x87 | SSE | AVX through XSETBV).
/// Returns false when the CPU has no AVX.
pub fn enable_avx() -> bool {
    let leaf = cpuid(1, 0);
    if leaf.ecx & (1 << 26) == 0 || leaf.ecx & (1 << 28) == 0 {
        return false;
    }
    // SAFETY: CPUID reports XSAVE and AVX, so OSXSAVE may be set and XCR0 = 7
    // is valid; nothing else depends on the old values.
    unsafe {
        asm!(
            "mov {cr4}, cr4",
            "or {cr4}, {osxsave}",
            "mov cr4, {cr4}",
            "xsetbv",
            cr4 = out(reg) _,
            osxsave = const 1u64 << 18,
            in("ecx") 0,
            in("eax") 7,
            in("edx") 0,
            options(nostack),
        );
    }
    true
}

/// Loads YMM0-15, makes one emulated `vmovdqu ymm3, [address]` (which must
/// change YMM3 only), and checks every register afterwards. Returns (bytes
/// of YMM3 wrong, bytes of the other registers changed).
///
/// # Safety
/// AVX is enabled; `address..address + 32` is trapped memory the caller may write.
pub unsafe fn ymm_load_and_survive(memory: &mut TrappedMemory, address: usize) -> (u64, u64) {
    let before = pattern();
    let loaded: [u8; 32] = core::array::from_fn(|n| 0xa0 ^ n as u8);
    let mut after = [0u8; 512];
    // SAFETY: per the caller; the buffers are locals.
    unsafe {
        for (n, chunk) in loaded.chunks(8).enumerate() {
            memory.store_u64(
                address + 8 * n,
                u64::from_le_bytes(chunk.try_into().unwrap_or_default()),
            );
        }
        asm!(
            "vmovdqu ymm0, [{src}]", "vmovdqu ymm1, [{src} + 32]", "vmovdqu ymm2, [{src} + 64]",
            "vmovdqu ymm3, [{src} + 96]", "vmovdqu ymm4, [{src} + 128]", "vmovdqu ymm5, [{src} + 160]",
            "vmovdqu ymm6, [{src} + 192]", "vmovdqu ymm7, [{src} + 224]", "vmovdqu ymm8, [{src} + 256]",
            "vmovdqu ymm9, [{src} + 288]", "vmovdqu ymm10, [{src} + 320]", "vmovdqu ymm11, [{src} + 352]",
            "vmovdqu ymm12, [{src} + 384]", "vmovdqu ymm13, [{src} + 416]", "vmovdqu ymm14, [{src} + 448]",
            "vmovdqu ymm15, [{src} + 480]",
            "vmovdqu ymm3, [{address}]",
            "vmovdqu [{dst}], ymm0", "vmovdqu [{dst} + 32], ymm1", "vmovdqu [{dst} + 64], ymm2",
            "vmovdqu [{dst} + 96], ymm3", "vmovdqu [{dst} + 128], ymm4", "vmovdqu [{dst} + 160], ymm5",
            "vmovdqu [{dst} + 192], ymm6", "vmovdqu [{dst} + 224], ymm7", "vmovdqu [{dst} + 256], ymm8",
            "vmovdqu [{dst} + 288], ymm9", "vmovdqu [{dst} + 320], ymm10", "vmovdqu [{dst} + 352], ymm11",
            "vmovdqu [{dst} + 384], ymm12", "vmovdqu [{dst} + 416], ymm13", "vmovdqu [{dst} + 448], ymm14",
            "vmovdqu [{dst} + 480], ymm15",
            "vzeroupper",
            src = in(reg) before.as_ptr(),
            dst = in(reg) after.as_mut_ptr(),
            address = in(reg) address,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
            out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
            out("xmm15") _,
            options(nostack),
        );
    }
    memory.add_counted_elsewhere(1);
    let ymm3_wrong = mismatches(&loaded, &after[96..128]);
    let others_changed =
        mismatches(&before[..96], &after[..96]) + mismatches(&before[128..], &after[128..]);
    (ymm3_wrong, others_changed)
}
