//! Guest-physical memory for tests: one shared-memory region (a memfd) that any
//! number of threads reach through [`SharedGuest`], the test implementation of
//! the emulator's `Guest` trait.
//!
//! Every access is a real hardware access with the atomicity the CPU gives:
//! naturally aligned reads and writes of 1, 2, 4 or 8 bytes are single loads
//! and stores, other reads of up to 16 bytes (instruction fetches) are the
//! aligned 8-byte loads that cover them, other plain accesses are byte-wise
//! atomic, and compare-exchange
//! is one `LOCK CMPXCHG` / `LOCK CMPXCHG16B` on the backing memory. A
//! compare-exchange whose bytes continue in a second, non-adjacent frame is
//! done exactly as the Cordon core does it: both frames are mapped next to
//! each other in a per-thread two-page window (a second mapping of the same
//! memfd pages) and one locked instruction runs across the page boundary.

use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use emulator::{Guest, MemoryError};
use std::sync::atomic::AtomicUsize;

/// Size of a guest frame.
pub const FRAME_SIZE: usize = 4096;

/// A block of guest-physical memory starting at guest-physical address 0.
pub struct GuestMemory {
    fd: libc::c_int,
    mapping: Mapping,
}

/// Where the memory is mapped: at a page boundary (mmap's), its size a
/// whole number of frames.
/// [`SharedGuest`] holds a copy: reached through its reference to the
/// memory, the base and size were one load more an access (5 instructions
/// an emulated MOV).
#[derive(Clone, Copy)]
struct Mapping {
    base: *mut u8,
    size: usize,
}

// SAFETY: the region is shared memory that is only ever accessed through
// atomic operations (or locked instructions), so concurrent use from several
// threads is sound; `base` stays valid until `drop`.
unsafe impl Send for GuestMemory {}
// SAFETY: as above: all accesses are atomic.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Zeroed memory of `frames` 4 KiB frames.
    pub fn new(frames: usize) -> GuestMemory {
        let size = frames.checked_mul(FRAME_SIZE).expect("memory size");
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"cordon-guest-memory".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: fd is the memfd created above.
        let resized = unsafe { libc::ftruncate(fd, size as libc::off_t) };
        assert_eq!(resized, 0, "ftruncate failed");
        // SAFETY: a fresh shared mapping of the whole memfd; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap of guest memory failed");
        GuestMemory {
            fd,
            mapping: Mapping {
                base: base.cast(),
                size,
            },
        }
    }

    pub fn size(&self) -> u64 {
        self.mapping.size as u64
    }

    /// Reads bytes at `gpa` (any length, any alignment, may cross frames).
    #[inline]
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let ptr = self
            .mapping
            .host(gpa, buf.len())
            .ok_or(MemoryError::NoAccess)?;
        // SAFETY: ptr is gpa in the live mapping and covers buf.len() bytes.
        unsafe { atomic_read(ptr, gpa, buf) };
        Ok(())
    }

    /// Writes bytes at `gpa` (any length, any alignment, may cross frames).
    #[inline]
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let ptr = self
            .mapping
            .host(gpa, data.len())
            .ok_or(MemoryError::NoAccess)?;
        // SAFETY: ptr is gpa in the live mapping and covers data.len() bytes.
        unsafe { atomic_write(ptr, gpa, data) };
        Ok(())
    }

    pub fn read_u32(&self, gpa: u64) -> u32 {
        let mut bytes = [0; 4];
        self.read(gpa, &mut bytes).expect("read_u32 inside memory");
        u32::from_le_bytes(bytes)
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        let mut bytes = [0; 8];
        self.read(gpa, &mut bytes).expect("read_u64 inside memory");
        u64::from_le_bytes(bytes)
    }

    pub fn write_u32(&self, gpa: u64, value: u32) {
        self.write(gpa, &value.to_le_bytes())
            .expect("write_u32 inside memory");
    }

    pub fn write_u64(&self, gpa: u64, value: u64) {
        self.write(gpa, &value.to_le_bytes())
            .expect("write_u64 inside memory");
    }

    /// A copy of `len` bytes at `gpa`.
    pub fn snapshot(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.read(gpa, &mut bytes).expect("snapshot inside memory");
        bytes
    }

    /// A `Guest` for one thread, with its own two-page window.
    pub fn guest(&self) -> SharedGuest<'_> {
        SharedGuest::new(self)
    }
}

impl Mapping {
    /// A host pointer to `len` bytes at `gpa`, if they are inside the memory.
    #[inline]
    fn host(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let end = gpa.checked_add(len as u64)?;
        if end > self.size as u64 {
            return None;
        }
        // SAFETY: gpa + len <= size, so the pointer stays inside the mapping.
        Some(unsafe { self.base.add(gpa as usize) })
    }

    /// A host pointer to `len` bytes at `gpa`, if they lie in one frame
    /// inside the memory. One bounds check: an access within a frame ends
    /// by the frame's end, and the memory is whole frames, so the start
    /// being inside it is enough (and an empty access may also sit at the
    /// very end, as for `host`). `within_one_frame` and then `host`, with
    /// its overflow check, cost 3 to 8 instructions more an access.
    #[inline]
    fn frame_host(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let size = self.size as u64;
        // Up to 8 bytes at an address clear in the bits of the length less
        // one (for 1, 2, 4 and 8 bytes: naturally aligned) cannot cross a
        // frame. Tested first: with the length known (a page-table entry),
        // it is the sized access's own alignment test, and the frame check
        // is skipped (an emulated MOV 13 instructions fewer, REP MOVSD's
        // accesses of a length not known 4 more an iteration).
        let within_word = len <= 8 && gpa & (len as u64).wrapping_sub(1) == 0;
        // No overflow: a slice is shorter than `isize::MAX` bytes.
        let in_frame = within_word || gpa % FRAME_SIZE as u64 + len as u64 <= FRAME_SIZE as u64;
        if !in_frame || !(gpa < size || (len == 0 && gpa == size)) {
            return None;
        }
        // SAFETY: gpa + len lies within gpa's frame, which is inside the
        // mapping (or len is 0 and gpa its end).
        Some(unsafe { self.base.add(gpa as usize) })
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: base/size is the mapping made in `new`; nothing borrows it
        // any more (SharedGuest borrows self).
        unsafe {
            libc::munmap(self.mapping.base.cast(), self.mapping.size);
            libc::close(self.fd);
        }
    }
}

/// How a [`SharedGuest`] was used: lets tests check, for example, that a
/// locked instruction never wrote with a plain store. Only the owning
/// [`SharedGuest`] counts (through `&mut self`), so an increment is a plain
/// add, not a locked one that would weigh on the benchmarks.
#[derive(Debug, Default)]
pub struct AccessCounts {
    pub reads: AtomicUsize,
    pub writes: AtomicUsize,
    pub compare_exchanges: AtomicUsize,
    pub split_compare_exchanges: AtomicUsize,
}

/// One thread's door to [`GuestMemory`]: implements `emulator::Guest`.
pub struct SharedGuest<'a> {
    memory: &'a GuestMemory,
    /// The memory's mapping (see [`Mapping`]).
    mapping: Mapping,
    /// Two reserved pages where a frame pair is mapped for a split access.
    window: *mut u8,
    /// The frame pair currently mapped in the window.
    window_frames: Option<[u64; 2]>,
    pub counts: AccessCounts,
}

impl<'a> SharedGuest<'a> {
    fn new(memory: &'a GuestMemory) -> SharedGuest<'a> {
        // SAFETY: reserves two inaccessible anonymous pages; the kernel picks the address.
        let window = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                2 * FRAME_SIZE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(window, libc::MAP_FAILED, "mmap of the split window failed");
        SharedGuest {
            memory,
            mapping: memory.mapping,
            window: window.cast(),
            window_frames: None,
            counts: AccessCounts::default(),
        }
    }

    pub fn memory(&self) -> &'a GuestMemory {
        self.memory
    }

    /// Maps frames `first` and `second` (guest-physical page addresses) at
    /// the window and returns its address.
    fn map_window(&mut self, first: u64, second: u64) -> Result<*mut u8, MemoryError> {
        if self.window_frames == Some([first, second]) {
            return Ok(self.window);
        }
        for (slot, frame) in [first, second].into_iter().enumerate() {
            if !frame.is_multiple_of(FRAME_SIZE as u64)
                || self.mapping.host(frame, FRAME_SIZE).is_none()
            {
                return Err(MemoryError::NoAccess);
            }
            // SAFETY: replaces one page of our own reserved window with a
            // shared mapping of a frame of the memfd (inside its size).
            let mapped = unsafe {
                libc::mmap(
                    self.window.add(slot * FRAME_SIZE).cast(),
                    FRAME_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    self.memory.fd,
                    frame as libc::off_t,
                )
            };
            if mapped == libc::MAP_FAILED {
                self.window_frames = None;
                return Err(MemoryError::Failed);
            }
        }
        self.window_frames = Some([first, second]);
        Ok(self.window)
    }

    /// Where a compare-exchange at `offset` in frame `pages[0]` that runs
    /// into frame `pages[1]` is made: the window, with the two frames
    /// mapped in it. Cold and out of line: inlined, its mapping calls made
    /// every compare-exchange save and restore six registers.
    #[cold]
    #[inline(never)]
    fn split_window(&mut self, pages: [u64; 2], offset: u16) -> Result<*mut u8, MemoryError> {
        *self.counts.split_compare_exchanges.get_mut() += 1;
        let window = self.map_window(pages[0], pages[1])?;
        // SAFETY: offset < 4096, and a compare-exchange is at most 16
        // bytes: inside the window.
        Ok(unsafe { window.add(usize::from(offset)) })
    }
}

impl Drop for SharedGuest<'_> {
    fn drop(&mut self) {
        // SAFETY: the window is the two-page mapping made in `new`.
        unsafe { libc::munmap(self.window.cast(), 2 * FRAME_SIZE) };
    }
}

impl Guest for SharedGuest<'_> {
    #[inline]
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        *self.counts.reads.get_mut() += 1;
        let ptr = (self.mapping)
            .frame_host(gpa, buf.len())
            .ok_or(MemoryError::NoAccess)?;
        // SAFETY: ptr is gpa in the live mapping and covers buf.len() bytes.
        unsafe { atomic_read(ptr, gpa, buf) };
        Ok(())
    }

    #[inline]
    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        *self.counts.writes.get_mut() += 1;
        let ptr = (self.mapping)
            .frame_host(gpa, data.len())
            .ok_or(MemoryError::NoAccess)?;
        // SAFETY: ptr is gpa in the live mapping and covers data.len() bytes.
        unsafe { atomic_write(ptr, gpa, data) };
        Ok(())
    }

    // Inline: called across the crates (through the GOT), its nine
    // arguments were moved into place, three of them through the stack
    // (13 instructions a locked XADD).
    #[inline]
    fn compare_exchange(
        &mut self,
        pages: [u64; 2],
        offset: u16,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Result<bool, MemoryError> {
        *self.counts.compare_exchanges.get_mut() += 1;
        let width = expected.len();
        if !matches!(width, 1 | 2 | 4 | 8 | 16)
            || new.len() != width
            || current.len() != width
            || usize::from(offset) >= FRAME_SIZE
            || !pages[0].is_multiple_of(FRAME_SIZE as u64)
        {
            return Err(MemoryError::NoAccess);
        }
        let ptr = if usize::from(offset) + width <= FRAME_SIZE {
            // Within the first frame: one bounds check (see `frame_host`).
            let gpa = pages[0] + u64::from(offset);
            (self.mapping)
                .frame_host(gpa, width)
                .ok_or(MemoryError::NoAccess)?
        } else {
            self.split_window(pages, offset)?
        };
        // CMPXCHG16B faults on a misaligned operand; the CPU offers no
        // misaligned 16-byte atomic, and neither does this test guest.
        if width == 16 && !(ptr as usize).is_multiple_of(16) {
            return Err(MemoryError::Failed);
        }
        // SAFETY: ptr covers `width` bytes of live shared memory (the
        // mapping or the window that maps two of its frames).
        Ok(unsafe { locked_compare_exchange(ptr, expected, new, current) })
    }
}

/// Reads with the atomicity the CPU gives a plain load of that size.
///
/// # Safety
/// `ptr` must be valid for `buf.len()` bytes and be `gpa` in the mapping,
/// whose start at a page boundary gives it `gpa`'s alignment.
#[inline]
unsafe fn atomic_read(ptr: *mut u8, gpa: u64, buf: &mut [u8]) {
    // Consulted for the power-of-two sizes only, where it is this mask test
    // (a `%` by the length is a division, slower than the access).
    let aligned = gpa & (buf.len() as u64).wrapping_sub(1) == 0;
    // SAFETY: (all arms) ptr is valid for buf.len() bytes and, in the sized
    // arms, aligned to the size (as gpa is), as `from_ptr` requires. The
    // covering reads' words lie inside the mapping, whose start and end
    // are page-aligned.
    unsafe {
        match buf.len() {
            // An instruction fetch of 9 to 16 bytes (the emulator's
            // common 15-byte fetch reaches here with its length known and
            // folds to this arm; measured, the arm's place in the match no
            // longer matters).
            9..=16 => read_covering(ptr, buf),
            2 if aligned => buf.copy_from_slice(
                &AtomicU16::from_ptr(ptr.cast())
                    .load(Ordering::Acquire)
                    .to_le_bytes(),
            ),
            4 if aligned => buf.copy_from_slice(
                &AtomicU32::from_ptr(ptr.cast())
                    .load(Ordering::Acquire)
                    .to_le_bytes(),
            ),
            8 if aligned => buf.copy_from_slice(
                &AtomicU64::from_ptr(ptr.cast())
                    .load(Ordering::Acquire)
                    .to_le_bytes(),
            ),
            3..=8 => read_covering(ptr, buf),
            _ => read_bytes(ptr, buf),
        }
    }
}

/// Reads byte by byte. Cold, out of line: inlined, its loop made the
/// sized reads save and restore a register (REP MOVSD 4 KiB 5 instructions
/// an iteration, with `write_bytes`).
///
/// # Safety
/// `ptr` must be valid for `buf.len()` bytes.
#[cold]
unsafe fn read_bytes(ptr: *mut u8, buf: &mut [u8]) {
    for (index, byte) in buf.iter_mut().enumerate() {
        // SAFETY: inside the caller's bytes.
        *byte = unsafe { AtomicU8::from_ptr(ptr.add(index)).load(Ordering::Acquire) };
    }
}

/// Reads the 3 to 16 bytes at `ptr` as the aligned 8-byte words that cover
/// them, each with one load, as the CPU's fetch does, shifted into place in
/// registers.
///
/// # Safety
/// The aligned words that cover `buf.len()` bytes at `ptr` must be valid.
#[inline]
unsafe fn read_covering(ptr: *mut u8, buf: &mut [u8]) {
    let head = ptr.addr() % 8;
    let end = head + buf.len();
    let first_word = ptr.wrapping_sub(head).cast::<u64>();
    // SAFETY: the caller's, for each word that covers part of buf.
    let word =
        |index| unsafe { AtomicU64::from_ptr(first_word.add(index)).load(Ordering::Acquire) };
    let first = word(0);
    let second = if end > 8 { word(1) } else { 0 };
    let third = if end > 16 { word(2) } else { 0 };
    // Each half shifted by fewer than 64 bits (one SHRD): the three words
    // shifted as one, with a case of its own for a misaligned start, cost
    // 3 instructions more a fetch (more when misaligned).
    let shift = head * 8;
    let low = ((u128::from(second) << 64 | u128::from(first)) >> shift) as u64;
    let high = ((u128::from(third) << 64 | u128::from(second)) >> shift) as u64;
    store_bytes(buf, u128::from(high) << 64 | u128::from(low));
}

/// Stores the low `buf.len()` (3 to 16) bytes of `value` into `buf` with
/// plain 8-byte (or 1-byte) stores, which the decoder's byte loads forward
/// from. A `copy_from_slice` of this variable length is a memcpy call
/// (measured about 1 ns slower per fetch).
#[inline]
fn store_bytes(buf: &mut [u8], value: u128) {
    let len = buf.len();
    match (buf.first_chunk_mut::<8>(), len.checked_sub(8)) {
        (Some(head), Some(tail_start)) if len <= 16 => {
            // Two 8-byte stores, overlapping when there are fewer than 16,
            // both taken from registers.
            *head = (value as u64).to_le_bytes();
            let tail = (value >> (tail_start * 8)) as u64;
            if let Some(last) = buf.last_chunk_mut::<8>() {
                *last = tail.to_le_bytes();
            }
        }
        // Four bytes as one u32: byte by byte, the aligned read's u32 and
        // this one met as pieces, rejoined by 5 instructions on every 4-byte
        // read's path (load MOV 6 instructions, REP MOVSD 10 an iteration).
        _ if len == 4 => {
            if let Some(word) = buf.first_chunk_mut::<4>() {
                *word = (value as u32).to_le_bytes();
            }
        }
        _ => {
            for (byte, source) in buf.iter_mut().zip(value.to_le_bytes()) {
                *byte = source;
            }
        }
    }
}

/// Writes with the atomicity the CPU gives a plain store of that size.
///
/// # Safety
/// As for `atomic_read`.
#[inline]
unsafe fn atomic_write(ptr: *mut u8, gpa: u64, data: &[u8]) {
    // As in `atomic_read`.
    let aligned = gpa & (data.len() as u64).wrapping_sub(1) == 0;
    // SAFETY: (all arms) ptr is valid for data.len() bytes and, in the sized
    // arms, aligned to the size (as gpa is), as `from_ptr` requires.
    unsafe {
        match data.len() {
            2 if aligned => AtomicU16::from_ptr(ptr.cast())
                .store(u16::from_le_bytes([data[0], data[1]]), Ordering::Release),
            4 if aligned => AtomicU32::from_ptr(ptr.cast()).store(
                u32::from_le_bytes(data.try_into().expect("4 bytes")),
                Ordering::Release,
            ),
            8 if aligned => AtomicU64::from_ptr(ptr.cast()).store(
                u64::from_le_bytes(data.try_into().expect("8 bytes")),
                Ordering::Release,
            ),
            _ => write_bytes(ptr, data),
        }
    }
}

/// Writes byte by byte; cold, as `read_bytes` is.
///
/// # Safety
/// `ptr` must be valid for `data.len()` bytes.
#[cold]
unsafe fn write_bytes(ptr: *mut u8, data: &[u8]) {
    for (index, byte) in data.iter().enumerate() {
        // SAFETY: inside the caller's bytes.
        unsafe { AtomicU8::from_ptr(ptr.add(index)).store(*byte, Ordering::Release) };
    }
}

/// One locked compare-exchange of `expected.len()` (1, 2, 4, 8 or 16) bytes
/// at `ptr`, which may be misaligned (except for 16) and may cross a page.
/// The width is matched once, each arm a compare-exchange of its own:
/// matched again for each operand, the result and the instruction, it
/// cost 25 instructions a locked XADD. Always inline (its one caller is
/// `compare_exchange`): called, its seven arguments were moved into place
/// (one through the stack) and the caller kept a frame for the call (18
/// instructions a locked XADD).
///
/// # Safety
/// `ptr` must be valid for `expected.len()` bytes; 16-aligned for 16.
#[inline(always)]
unsafe fn locked_compare_exchange(
    ptr: *mut u8,
    expected: &[u8],
    new: &[u8],
    current: &mut [u8],
) -> bool {
    // SAFETY: (all arms) the caller's, for the width.
    unsafe {
        match expected.len() {
            1 => compare_exchange_width::<1>(ptr, expected, new, current),
            2 => compare_exchange_width::<2>(ptr, expected, new, current),
            4 => compare_exchange_width::<4>(ptr, expected, new, current),
            8 => compare_exchange_width::<8>(ptr, expected, new, current),
            _ => compare_exchange_width::<16>(ptr, expected, new, current),
        }
    }
}

/// [`locked_compare_exchange`] of `N` (1, 2, 4, 8 or 16) bytes: `expected`,
/// `new` and `current` are that long.
///
/// # Safety
/// As for [`locked_compare_exchange`], with `N` bytes.
#[inline(always)]
unsafe fn compare_exchange_width<const N: usize>(
    ptr: *mut u8,
    expected: &[u8],
    new: &[u8],
    current: &mut [u8],
) -> bool {
    let (Some(expected), Some(new), Some(current)) = (
        expected.first_chunk::<N>(),
        new.first_chunk::<N>(),
        current.first_chunk_mut::<N>(),
    ) else {
        return false;
    };
    let (expected_lo, expected_hi) = words(expected);
    let (new_lo, new_hi) = words(new);
    let stored: u8;
    let mut found_lo = expected_lo;
    let mut found_hi = expected_hi;
    // SAFETY: (all arms) ptr is valid for the width (caller); each arm is a
    // single locked instruction on it and touches no other memory. rbx is
    // reserved by LLVM, so CMPXCHG16B saves and restores it around the use;
    // there the pointer and the result are pinned to rsi and dil, because a
    // `reg` operand may be given rbx itself (fat LTO did), which the swap
    // and the restore would overwrite.
    unsafe {
        match N {
            1 => core::arch::asm!(
                "lock cmpxchg byte ptr [{ptr}], {new}",
                "sete {stored}",
                ptr = in(reg) ptr,
                new = in(reg_byte) new_lo as u8,
                stored = out(reg_byte) stored,
                inout("rax") found_lo,
                options(nostack),
            ),
            2 => core::arch::asm!(
                "lock cmpxchg word ptr [{ptr}], {new:x}",
                "sete {stored}",
                ptr = in(reg) ptr,
                new = in(reg) new_lo,
                stored = out(reg_byte) stored,
                inout("rax") found_lo,
                options(nostack),
            ),
            4 => core::arch::asm!(
                "lock cmpxchg dword ptr [{ptr}], {new:e}",
                "sete {stored}",
                ptr = in(reg) ptr,
                new = in(reg) new_lo,
                stored = out(reg_byte) stored,
                inout("rax") found_lo,
                options(nostack),
            ),
            8 => core::arch::asm!(
                "lock cmpxchg qword ptr [{ptr}], {new}",
                "sete {stored}",
                ptr = in(reg) ptr,
                new = in(reg) new_lo,
                stored = out(reg_byte) stored,
                inout("rax") found_lo,
                options(nostack),
            ),
            _ => core::arch::asm!(
                "xchg {new_lo}, rbx",
                "lock cmpxchg16b xmmword ptr [rsi]",
                "sete dil",
                "mov rbx, {new_lo}",
                in("rsi") ptr,
                new_lo = inout(reg) new_lo => _,
                out("dil") stored,
                in("rcx") new_hi,
                inout("rax") found_lo,
                inout("rdx") found_hi,
                options(nostack),
            ),
        }
    }
    put_words(current, found_lo, found_hi);
    stored != 0
}

/// `bytes` (1, 2, 4, 8 or 16 of them) as the low and high words of a
/// little-endian value, each taken with one load of its width: copied
/// through zeroed 16-byte buffers, the operands and the result were three
/// `memcpy` calls (50 instructions a locked XADD).
#[inline(always)]
fn words(bytes: &[u8]) -> (u64, u64) {
    let low = match bytes.len() {
        1 => bytes.first().copied().map(u64::from),
        2 => bytes
            .first_chunk()
            .copied()
            .map(u16::from_le_bytes)
            .map(u64::from),
        4 => bytes
            .first_chunk()
            .copied()
            .map(u32::from_le_bytes)
            .map(u64::from),
        _ => bytes.first_chunk().copied().map(u64::from_le_bytes),
    };
    let high = match bytes.len() {
        16 => bytes.last_chunk().copied().map(u64::from_le_bytes),
        _ => None,
    };
    (low.unwrap_or(0), high.unwrap_or(0))
}

/// Stores the low `out.len()` (1, 2, 4, 8 or 16) bytes of the value whose
/// words are `low` and `high`, each part with one store (see `words`).
#[inline(always)]
fn put_words(out: &mut [u8], low: u64, high: u64) {
    match out.len() {
        1 => out.copy_from_slice(&[low as u8]),
        2 => out.copy_from_slice(&(low as u16).to_le_bytes()),
        4 => out.copy_from_slice(&(low as u32).to_le_bytes()),
        8 => out.copy_from_slice(&low.to_le_bytes()),
        _ => {
            if let Some(first) = out.first_chunk_mut() {
                *first = low.to_le_bytes();
            }
            if let Some(last) = out.last_chunk_mut() {
                *last = high.to_le_bytes();
            }
        }
    }
}
