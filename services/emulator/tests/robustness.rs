//! Robustness: random instruction bytes and random state never make the
//! emulator panic, hang, allocate without bound or answer nonsense. Two property tests of 100,000
//! cases each (more with `CORDON_LONG_TESTS=1`): random bytes at RIP in
//! well-formed guests of every mode, and a fully random exit message over
//! memory full of random page-table-like entries.

use abi::ExitMessage;
use emulator::{Outcome, emulate};
use emulator_testkit::state::{compatibility_mode, real_mode};
use emulator_testkit::{GuestMemory, PageAttributes, PagingMode, Rng, Scene, SharedGuest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x50_0000;
const DATA_PAGES: u64 = 4;
/// One call to `emulate` taking longer than this is a hang.
const CALL_LIMIT: Duration = Duration::from_secs(2);
/// One call to `emulate` allocating more than this is unbounded allocation.
/// (The emulator itself allocates nothing; iced-x86 builds some decoder
/// tables lazily on first use, about 200 KiB at once.)
const ALLOCATION_LIMIT: usize = 1024 * 1024;
/// All calls of one property together: a few one-time table builds, but
/// not even a few bytes per call over 100,000 calls.
const TOTAL_ALLOCATION_LIMIT: usize = 4 * 1024 * 1024;

/// The system allocator, counting the bytes each thread allocates, so a
/// property can see what one call to `emulate` allocated.
struct CountingAllocator;

thread_local! {
    static ALLOCATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a
// const-initialised thread-local that never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.with(|count| count.set(count.get().saturating_add(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Bytes this thread has allocated so far.
fn allocated() -> usize {
    ALLOCATED.with(|count| count.get())
}

fn cases() -> u32 {
    if std::env::var("CORDON_LONG_TESTS").is_ok_and(|value| value == "1") {
        2_000_000
    } else {
        100_000
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// How many outcomes of each kind a property saw (retired, exception,
/// retry, unsupported, memory error), to show it reaches the emulator's
/// depths rather than only its first checks; and the bytes its calls
/// allocated in all.
#[derive(Default)]
struct Tally(RefCell<[u64; 5]>, std::cell::Cell<usize>);

impl Tally {
    fn count(&self, outcome: &Outcome, allocated: usize) {
        self.1.set(self.1.get().saturating_add(allocated));
        let index = match outcome {
            Outcome::Retired(_) => 0,
            Outcome::Exception(_) => 1,
            Outcome::Retry => 2,
            Outcome::Unsupported(_) => 3,
            Outcome::MemoryError(_) => 4,
        };
        self.0.borrow_mut()[index] += 1;
    }

    fn summary(&self) -> String {
        let [retired, exception, retry, unsupported, memory] = *self.0.borrow();
        format!(
            "{retired} retired, {exception} exceptions, {retry} retries, {unsupported} unsupported, {memory} memory errors; {} bytes allocated in all",
            self.1.get()
        )
    }

    /// Fails if the calls together allocated more than a few one-time
    /// table builds.
    fn assert_bounded_allocation(&self) {
        assert!(
            self.1.get() <= TOTAL_ALLOCATION_LIMIT,
            "emulate allocated {} bytes over the run",
            self.1.get()
        );
    }
}

/// Checks what an outcome says is possible at all.
fn check(
    outcome: &Outcome,
    elapsed: Duration,
    allocated: usize,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    tally.count(outcome, allocated);
    prop_assert!(elapsed < CALL_LIMIT, "emulate took {elapsed:?}");
    prop_assert!(
        allocated <= ALLOCATION_LIMIT,
        "emulate allocated {allocated} bytes"
    );
    match outcome {
        Outcome::Exception(exception) => {
            prop_assert!(exception.vector < 32, "vector {}", exception.vector);
            prop_assert_eq!(exception.cr2.is_some(), exception.vector == 14);
        }
        Outcome::Unsupported(unsupported) => prop_assert!(unsupported.length <= 15),
        Outcome::Retired(_) | Outcome::Retry | Outcome::MemoryError(_) => {}
    }
    Ok(())
}

/// Well-formed guests: 64-bit (CPL 0 and 3), compatibility mode, 32-bit
/// protected mode with 32-bit and PAE paging, and real mode, each with a
/// code page and data pages mapped.
struct Guests {
    scenes: Vec<Scene>,
    real_mode_memory: GuestMemory,
}

fn scene(mode: PagingMode) -> Scene {
    let mut scene = Scene::new(mode, 64);
    scene.map_new(CODE, PageAttributes::USER_RWX);
    for page in 0..DATA_PAGES {
        let attributes = if page == 2 {
            PageAttributes::USER_RO
        } else {
            PageAttributes::USER_RW
        };
        scene.map_new(DATA + page * 0x1000, attributes);
    }
    scene
}

fn guests() -> Guests {
    Guests {
        scenes: vec![
            scene(PagingMode::Level4),
            scene(PagingMode::Bits32),
            scene(PagingMode::Pae),
        ],
        real_mode_memory: GuestMemory::new(32),
    }
}

/// A register value: an edge value, or an address in (or near) the data pages.
fn register(rng: &mut Rng) -> u64 {
    if rng.chance(1, 2) {
        DATA + rng.below(DATA_PAGES * 0x1000 + 0x100) - 0x80
    } else {
        rng.operand()
    }
}

fn well_formed_exit(guests: &Guests, rng: &mut Rng, bytes: &[u8; 15]) -> (usize, ExitMessage) {
    let choice = rng.below(6) as usize;
    let mut exit = match choice {
        0 | 1 => {
            let scene = &guests.scenes[0];
            scene.write_linear(CODE + 0x100, bytes);
            (0, scene.exit(if choice == 0 { 0 } else { 3 }, CODE + 0x100))
        }
        2 => {
            let scene = &guests.scenes[0];
            scene.write_linear(CODE + 0x100, bytes);
            (0, compatibility_mode(scene.tables.cr3(), 3, CODE + 0x100))
        }
        3 | 4 => {
            let scene = &guests.scenes[choice - 2];
            scene.write_linear(CODE + 0x100, bytes);
            (choice - 2, scene.exit(rng.pick(&[0, 3]), CODE + 0x100))
        }
        _ => {
            // Real mode: CS = 0x1000 (base 0x10000), IP = 0x100.
            guests
                .real_mode_memory
                .write(0x10100, bytes)
                .expect("real-mode code");
            (3, real_mode(0x1000, 0x1800, 0x100))
        }
    };
    for value in exit.1.state.gprs.iter_mut() {
        *value = register(rng);
    }
    exit.1.state.rflags = 0x2 | (rng.next_u64() & 0x4_0ed5);
    for ymm in exit.1.vectors.ymm.iter_mut() {
        rng.fill(ymm);
    }
    exit
}

#[test]
fn random_instructions_in_well_formed_guests_never_panic() {
    let guests = guests();
    let shared: Vec<RefCell<SharedGuest<'_>>> = guests
        .scenes
        .iter()
        .map(|scene| RefCell::new(scene.memory.guest()))
        .chain([RefCell::new(guests.real_mode_memory.guest())])
        .collect();
    let strategy = (any::<u64>(), proptest::array::uniform15(any::<u8>()));
    let tally = Tally::default();
    let started = Instant::now();
    runner()
        .run(&strategy, |(seed, bytes)| {
            let mut rng = Rng::new(seed);
            let (memory, exit) = well_formed_exit(&guests, &mut rng, &bytes);
            let mut guest = shared[memory].borrow_mut();
            let (start, before) = (Instant::now(), allocated());
            let outcome = emulate(&mut *guest, &exit);
            let (elapsed, bytes) = (start.elapsed(), allocated() - before);
            check(&outcome, elapsed, bytes, &tally)
        })
        .expect("random instructions in well-formed guests");
    println!(
        "robustness: {} well-formed-guest cases in {:?}: {}",
        cases(),
        started.elapsed(),
        tally.summary()
    );
    tally.assert_bounded_allocation();
}

/// Memory whose every 8 bytes look like a page-table entry pointing back
/// into it (with random flag bits), so random CR3 values lead to deep walks.
fn entry_soup(frames: usize) -> GuestMemory {
    let memory = GuestMemory::new(frames);
    let mut rng = Rng::new(0x50_0b);
    let mut bytes = vec![0u8; frames * 4096];
    for entry in bytes.chunks_mut(8) {
        let mut value = (rng.below(frames as u64) << 12) | (rng.next_u64() & 0xfff);
        if rng.chance(1, 8) {
            value |= rng.next_u64() & 0xfff0_0000_0000_0000;
        }
        entry.copy_from_slice(&value.to_le_bytes());
    }
    memory.write(0, &bytes).expect("soup");
    memory
}

#[test]
fn random_exit_messages_over_random_memory_never_panic() {
    const FRAMES: usize = 16;
    let memory = entry_soup(FRAMES);
    let guest = RefCell::new(memory.guest());
    let tally = Tally::default();
    let started = Instant::now();
    runner()
        .run(&any::<u64>(), |seed| {
            let mut rng = Rng::new(seed);
            let mut raw = vec![0u8; size_of::<ExitMessage>()];
            rng.fill(&mut raw);
            let mut exit = ExitMessage::read_from_bytes(&raw).expect("exact size");
            // Mostly keep addresses inside the memory so walks and fetches
            // get somewhere; sometimes leave them wild.
            if rng.chance(3, 4) {
                exit.state.cr3 = rng.below(FRAMES as u64) << 12 | (exit.state.cr3 & 0xfff);
                exit.state.rip &= 0xffff;
                for segment in exit.state.segments.iter_mut() {
                    segment.base &= 0xffff;
                }
            }
            if rng.chance(1, 2) {
                exit.abi_major = abi::AbiVersion::CURRENT.major;
                exit.reason = abi::ExitReason::EptViolation as u32;
            }
            let (start, before) = (Instant::now(), allocated());
            let outcome = emulate(&mut *guest.borrow_mut(), &exit);
            let (elapsed, bytes) = (start.elapsed(), allocated() - before);
            check(&outcome, elapsed, bytes, &tally)
        })
        .expect("random exit messages");
    println!(
        "robustness: {} random-state cases in {:?}: {}",
        cases(),
        started.elapsed(),
        tally.summary()
    );
    tally.assert_bounded_allocation();
}
