//! Counted single-instruction accesses to trapped memory (LAPIC, VGA, trapped RAM).
//!
//! Each method is one inline-asm block holding exactly the instruction under test, so the
//! compiler can neither split, merge nor drop the access, and each adds one to the count
//! of instructions that touched trapped memory (the figure the guest reports to Cordon,
//! which compares it with the number of instructions its emulator retired). A REP string
//! instruction counts once however many elements it moves; with a zero count it touches
//! no memory and counts nothing.
//!
//! Every method is `unsafe`: the caller guarantees that the address range is mapped,
//! writable where written, and not memory Rust owns through a reference.

use core::arch::asm;

use crate::timing;

/// Performs accesses and counts the instructions that touched trapped memory.
#[derive(Debug, Default)]
pub struct TrappedMemory {
    instructions: u32,
}

/// RFLAGS bits the read-modify-write accessors report.
pub mod flags {
    /// Carry flag.
    pub const CF: u64 = 1 << 0;
    /// Zero flag.
    pub const ZF: u64 = 1 << 6;
    /// Sign flag.
    pub const SF: u64 = 1 << 7;
    /// Overflow flag.
    pub const OF: u64 = 1 << 11;
}

macro_rules! mov_access {
    ($store:ident, $load:ident, $ty:ty, $ptr:literal, $class:ident, $m:literal) => {
        /// One MOV from a register to memory.
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $store(&mut self, address: usize, value: $ty) {
            // SAFETY: the caller guarantees the address is mapped and writable.
            unsafe {
                asm!(
                    concat!("mov ", $ptr, " ptr [{a}], {v", $m, "}"),
                    a = in(reg) address,
                    v = in($class) value,
                    options(nostack, preserves_flags),
                );
            }
            self.count();
        }

        /// One MOV from memory to a register.
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $load(&mut self, address: usize) -> $ty {
            let value: $ty;
            // SAFETY: the caller guarantees the address is mapped and readable.
            unsafe {
                asm!(
                    concat!("mov {v", $m, "}, ", $ptr, " ptr [{a}]"),
                    a = in(reg) address,
                    v = out($class) value,
                    options(nostack, preserves_flags),
                );
            }
            self.count();
            value
        }
    };
}

macro_rules! extend_load {
    ($name:ident, $insn:literal, $ptr:literal, $ty:ty, $m:literal) => {
        /// One zero- or sign-extending load (the instruction named in the asm).
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $name(&mut self, address: usize) -> $ty {
            let value: $ty;
            // SAFETY: the caller guarantees the address is mapped and readable.
            unsafe {
                asm!(
                    concat!($insn, " {v", $m, "}, ", $ptr, " ptr [{a}]"),
                    a = in(reg) address,
                    v = out(reg) value,
                    options(nostack, preserves_flags),
                );
            }
            self.count();
            value
        }
    };
}

macro_rules! rmw_access {
    ($name:ident, $insn:literal, $ty:ty, $ptr:literal, $class:ident, $m:literal) => {
        /// One read-modify-write instruction with a register source; returns RFLAGS.
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $name(&mut self, address: usize, operand: $ty) -> u64 {
            let rflags: u64;
            // SAFETY: the caller guarantees the address is mapped and writable; the
            // PUSHFQ/POP pair leaves the stack as it was.
            unsafe {
                asm!(
                    concat!($insn, " ", $ptr, " ptr [{a}], {v", $m, "}"),
                    "pushfq",
                    "pop {f}",
                    a = in(reg) address,
                    v = in($class) operand,
                    f = out(reg) rflags,
                );
            }
            self.count();
            rflags
        }
    };
}

macro_rules! exchange_access {
    ($name:ident, $insn:literal, $ty:ty, $ptr:literal, $class:ident, $m:literal) => {
        /// One exchanging instruction (XCHG or LOCK XADD): returns the old memory value.
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $name(&mut self, address: usize, operand: $ty) -> $ty {
            let old: $ty;
            // SAFETY: the caller guarantees the address is mapped and writable.
            unsafe {
                asm!(
                    concat!($insn, " ", $ptr, " ptr [{a}], {v", $m, "}"),
                    a = in(reg) address,
                    v = inout($class) operand => old,
                    options(nostack),
                );
            }
            self.count();
            old
        }
    };
}

macro_rules! cmpxchg_access {
    ($name:ident, $ty:ty, $ptr:literal, $acc:tt, $class:ident, $m:literal) => {
        /// One LOCK CMPXCHG: stores `new` if memory holds `expected`. Returns whether it
        /// did (ZF) and the value memory held.
        ///
        /// # Safety
        /// See the module documentation.
        pub unsafe fn $name(&mut self, address: usize, expected: $ty, new: $ty) -> (bool, $ty) {
            let previous: $ty;
            let swapped: u8;
            // SAFETY: the caller guarantees the address is mapped and writable.
            unsafe {
                asm!(
                    concat!("lock cmpxchg ", $ptr, " ptr [{a}], {n", $m, "}"),
                    "sete {z}",
                    a = in(reg) address,
                    n = in($class) new,
                    z = out(reg_byte) swapped,
                    inout($acc) expected => previous,
                    options(nostack),
                );
            }
            self.count();
            (swapped != 0, previous)
        }
    };
}

impl TrappedMemory {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self { instructions: 0 }
    }

    /// Number of instructions so far that touched trapped memory.
    pub fn instructions(&self) -> u32 {
        self.instructions
    }

    /// Adds instructions counted elsewhere (for example by a 32-bit phase in assembly).
    pub fn add_counted_elsewhere(&mut self, instructions: u32) {
        self.instructions = self.instructions.saturating_add(instructions);
    }

    fn count(&mut self) {
        self.add_counted_elsewhere(1);
    }

    mov_access!(store_u8, load_u8, u8, "byte", reg_byte, "");
    mov_access!(store_u16, load_u16, u16, "word", reg, ":x");
    mov_access!(store_u32, load_u32, u32, "dword", reg, ":e");
    mov_access!(store_u64, load_u64, u64, "qword", reg, ":r");

    extend_load!(movzx_u8_to_u16, "movzx", "byte", u16, ":x");
    extend_load!(movzx_u8_to_u32, "movzx", "byte", u32, ":e");
    extend_load!(movzx_u8_to_u64, "movzx", "byte", u64, ":r");
    extend_load!(movzx_u16_to_u32, "movzx", "word", u32, ":e");
    extend_load!(movzx_u16_to_u64, "movzx", "word", u64, ":r");
    extend_load!(movsx_i8_to_i16, "movsx", "byte", i16, ":x");
    extend_load!(movsx_i8_to_i32, "movsx", "byte", i32, ":e");
    extend_load!(movsx_i8_to_i64, "movsx", "byte", i64, ":r");
    extend_load!(movsx_i16_to_i32, "movsx", "word", i32, ":e");
    extend_load!(movsx_i16_to_i64, "movsx", "word", i64, ":r");
    extend_load!(movsxd_i32_to_i64, "movsxd", "dword", i64, ":r");

    rmw_access!(add_u8, "add", u8, "byte", reg_byte, "");
    rmw_access!(add_u16, "add", u16, "word", reg, ":x");
    rmw_access!(add_u32, "add", u32, "dword", reg, ":e");
    rmw_access!(add_u64, "add", u64, "qword", reg, ":r");
    rmw_access!(or_u8, "or", u8, "byte", reg_byte, "");
    rmw_access!(or_u32, "or", u32, "dword", reg, ":e");
    rmw_access!(or_u64, "or", u64, "qword", reg, ":r");
    rmw_access!(and_u16, "and", u16, "word", reg, ":x");
    rmw_access!(and_u32, "and", u32, "dword", reg, ":e");
    rmw_access!(and_u64, "and", u64, "qword", reg, ":r");

    exchange_access!(xchg_u8, "xchg", u8, "byte", reg_byte, "");
    exchange_access!(xchg_u32, "xchg", u32, "dword", reg, ":e");
    exchange_access!(xchg_u64, "xchg", u64, "qword", reg, ":r");
    exchange_access!(lock_xadd_u16, "lock xadd", u16, "word", reg, ":x");
    exchange_access!(lock_xadd_u32, "lock xadd", u32, "dword", reg, ":e");
    exchange_access!(lock_xadd_u64, "lock xadd", u64, "qword", reg, ":r");

    cmpxchg_access!(lock_cmpxchg_u8, u8, "byte", "al", reg_byte, "");
    cmpxchg_access!(lock_cmpxchg_u32, u32, "dword", "eax", reg, ":e");
    cmpxchg_access!(lock_cmpxchg_u64, u64, "qword", "rax", reg, ":r");

    /// One `rep stosb`: fills `count` bytes at `destination` with `value`.
    ///
    /// # Safety
    /// See the module documentation.
    pub unsafe fn rep_stosb(&mut self, destination: usize, value: u8, count: usize) {
        // SAFETY: the caller guarantees the range is mapped and writable; DF is clear
        // (Rust ABI).
        unsafe {
            asm!(
                "rep stosb",
                inout("rdi") destination => _,
                inout("rcx") count => _,
                in("al") value,
                options(nostack, preserves_flags),
            );
        }
        self.count_string(count);
    }

    /// One `rep stosq`: fills `count` quadwords at `destination` with `value`.
    ///
    /// # Safety
    /// See the module documentation.
    pub unsafe fn rep_stosq(&mut self, destination: usize, value: u64, count: usize) {
        // SAFETY: as for `rep_stosb`.
        unsafe {
            asm!(
                "rep stosq",
                inout("rdi") destination => _,
                inout("rcx") count => _,
                in("rax") value,
                options(nostack, preserves_flags),
            );
        }
        self.count_string(count);
    }

    /// One `rep movsb`: copies `count` bytes from `source` to `destination`.
    ///
    /// # Safety
    /// See the module documentation; the ranges must not overlap.
    pub unsafe fn rep_movsb(&mut self, destination: usize, source: usize, count: usize) {
        // SAFETY: the caller guarantees both ranges are mapped (destination writable)
        // and disjoint; DF is clear (Rust ABI).
        unsafe {
            asm!(
                "rep movsb",
                inout("rdi") destination => _,
                inout("rsi") source => _,
                inout("rcx") count => _,
                options(nostack, preserves_flags),
            );
        }
        self.count_string(count);
    }

    /// One MOV store of `value` to `address`, timed with fenced RDTSC; returns the ticks.
    ///
    /// # Safety
    /// See the module documentation.
    pub unsafe fn timed_store_u32(&mut self, address: usize, value: u32) -> u64 {
        // SAFETY: forwarded from the caller.
        let ticks = unsafe { timing::timed_store_u32(address, value) };
        self.count();
        ticks
    }

    fn count_string(&mut self, count: usize) {
        if count != 0 {
            self.count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The accessors run here on ordinary memory: the instructions are the same ones the
    // guests aim at trapped memory.
    #[test]
    fn moves_and_extensions_read_back_and_count() {
        let mut buffer = [0u64; 4];
        let base = buffer.as_mut_ptr() as usize;
        let mut memory = TrappedMemory::new();
        // SAFETY: `base` points at 32 writable bytes of `buffer`, used only through these
        // accessors while they run.
        unsafe {
            memory.store_u64(base, 0x8877_6655_4433_2211);
            assert_eq!(memory.load_u64(base), 0x8877_6655_4433_2211);
            memory.store_u8(base + 8, 0xf1);
            memory.store_u8(base + 9, 0x80);
            assert_eq!(memory.load_u16(base + 8), 0x80f1);
            assert_eq!(memory.movzx_u8_to_u64(base + 8), 0xf1);
            assert_eq!(memory.movzx_u16_to_u32(base + 8), 0x80f1);
            assert_eq!(memory.movsx_i8_to_i64(base + 8), -15);
            assert_eq!(memory.movsx_i16_to_i32(base + 8), 0x80f1u16 as i16 as i32);
            memory.store_u32(base + 16, 0x8000_0000);
            assert_eq!(memory.movsxd_i32_to_i64(base + 16), -0x8000_0000);
        }
        assert_eq!(memory.instructions(), 11);
    }

    #[test]
    fn read_modify_writes_report_flags() {
        let mut cell = 0xf0u64;
        let address = &mut cell as *mut u64 as usize;
        let mut memory = TrappedMemory::new();
        // SAFETY: `address` is `cell`, not otherwise used while the accessors run.
        unsafe {
            let rflags = memory.add_u8(address, 0x20);
            assert_eq!(memory.load_u8(address), 0x10);
            assert_ne!(rflags & flags::CF, 0);
            let rflags = memory.and_u16(address, 0);
            assert_ne!(rflags & flags::ZF, 0);
            assert_eq!(memory.xchg_u64(address, 7), 0);
            assert_eq!(memory.lock_xadd_u32(address, 5), 7);
            assert_eq!(memory.lock_cmpxchg_u64(address, 12, 40), (true, 12));
            assert_eq!(memory.lock_cmpxchg_u64(address, 12, 50), (false, 40));
        }
        assert_eq!(memory.instructions(), 7);
    }

    #[test]
    fn string_instructions_count_once_and_not_when_empty() {
        let mut source = [0u8; 32];
        let mut destination = [0u8; 32];
        for (index, byte) in source.iter_mut().enumerate() {
            *byte = index as u8;
        }
        let mut memory = TrappedMemory::new();
        // SAFETY: both arrays are 32 bytes, disjoint and unused while the accessors run.
        unsafe {
            memory.rep_movsb(
                destination.as_mut_ptr() as usize,
                source.as_ptr() as usize,
                32,
            );
            memory.rep_stosb(source.as_mut_ptr() as usize, 0xaa, 0);
        }
        assert_eq!(destination, source);
        assert_eq!(memory.instructions(), 1);
        // SAFETY: as above.
        unsafe { memory.rep_stosq(destination.as_mut_ptr() as usize, u64::MAX, 2) };
        assert_eq!(&destination[..16], &[0xff; 16]);
        assert_eq!(destination[16], 16);
        assert_eq!(memory.instructions(), 2);
    }
}
