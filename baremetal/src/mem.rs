//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for freestanding binaries.
//!
//! Written with string instructions in inline assembly, so LLVM cannot recognise
//! the loops and turn them into calls to the very functions being defined.

use core::arch::asm;

/// Copies `len` bytes from `src` to `dest`; the ranges must not overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; DF is clear per the SysV ABI.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Copies `len` bytes from `src` to `dest`; the ranges may overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    let overlaps_forward = (dest as usize).wrapping_sub(src as usize) < len;
    if !overlaps_forward {
        // SAFETY: a forward copy never reads a byte it already wrote here.
        return unsafe { memcpy(dest, src, len) };
    }
    // dest lies inside (src, src + len): copy backwards from the last byte.
    // SAFETY: the caller guarantees both ranges; DF is restored before returning.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") len => _,
            inout("rdi") dest.wrapping_add(len).wrapping_sub(1) => _,
            inout("rsi") src.wrapping_add(len).wrapping_sub(1) => _,
            options(nostack)
        );
    }
    dest
}

/// Fills `len` bytes at `dest` with the low byte of `value`.
///
/// # Safety
/// `dest` must be writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, len: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; DF is clear per the SysV ABI.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") len => _,
            inout("rdi") dest => _,
            in("al") value as u8,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Compares `len` bytes; returns the difference of the first unequal pair.
///
/// # Safety
/// Both ranges must be readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(left: *const u8, right: *const u8, len: usize) -> i32 {
    if len == 0 {
        return 0;
    }
    let left_end: *const u8;
    let right_end: *const u8;
    // SAFETY: the caller guarantees both ranges; `repe cmpsb` reads at most `len`
    // bytes of each and DF is clear per the SysV ABI.
    unsafe {
        asm!(
            "repe cmpsb",
            inout("rcx") len => _,
            inout("rsi") left => left_end,
            inout("rdi") right => right_end,
            options(nostack, readonly)
        );
    }
    // After the loop both pointers are one past the last compared pair.
    // SAFETY: at least one pair was compared, so the bytes before both ends are in range.
    let (a, b) = unsafe { (*left_end.wrapping_sub(1), *right_end.wrapping_sub(1)) };
    i32::from(a) - i32::from(b)
}

/// Returns zero when the ranges are equal, non-zero otherwise.
///
/// # Safety
/// Both ranges must be readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(left: *const u8, right: *const u8, len: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(left, right, len) }
}
