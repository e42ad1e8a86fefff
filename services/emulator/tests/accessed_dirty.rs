//! Accessed and dirty bits under concurrency: while one thread's emulated
//! stores set A and D in the page-table entry, another thread (playing the
//! guest OS) keeps changing the same entry with its own compare-exchange: it
//! counts in the entry's ignored bits 52..58 and clears A and D. The
//! emulator must update the entry with compare-exchange and retry on a
//! race, never write back a stale copy: every count must survive.

use emulator::Guest;
use emulator_testkit::drive::retire;
use emulator_testkit::paging::pte;
use emulator_testkit::{NonAtomicGuest, PageAttributes, PagingMode, Scene, SharedGuest};
use std::sync::atomic::{AtomicBool, Ordering};

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x50_0000;
const RBX: usize = 3;
const COUNTER_SHIFT: u32 = 52;
const COUNTER_MASK: u64 = 0x7f << COUNTER_SHIFT;

fn stores() -> u64 {
    if std::env::var("CORDON_LONG_TESTS").is_ok_and(|value| value == "1") {
        1_000_000
    } else {
        100_000
    }
}

/// What one run saw: the counter left in the entry, and how many updates
/// the OS thread made (and how many of them cleared A and D).
struct Run {
    count: u64,
    counted: u64,
    cleared: u64,
}

/// One thread does `stores` emulated stores through a guest from
/// `make_guest` while another updates the entry.
fn run<'a, G: Guest>(
    scene: &'a mut Scene,
    stores: u64,
    make_guest: impl Fn(SharedGuest<'a>) -> G + Sync,
) -> Run {
    scene.map_new(CODE, PageAttributes::USER_RWX);
    scene.map_new(DATA, PageAttributes::USER_RW);
    scene.write_linear(CODE, &[0x89, 0x03]); // mov [rbx], eax
    let entry = scene
        .tables
        .leaf_address(&scene.memory, &mut scene.frames, DATA);
    let scene: &'a Scene = scene;
    let page = entry & !0xfff;
    let offset = (entry & 0xfff) as u16;
    let done = AtomicBool::new(false);
    let (counted, cleared) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut guest = make_guest(scene.memory.guest());
            let mut exit = scene.exit(3, CODE);
            for store in 0..stores {
                exit.state.gprs[RBX] = DATA + (store % 1024) * 4;
                retire(&mut guest, &exit, 1_000_000)
                    .unwrap_or_else(|outcome| panic!("store {store}: {outcome:?}"));
            }
            done.store(true, Ordering::Release);
        });
        let os = scope.spawn(|| {
            let mut guest = scene.memory.guest();
            let (mut counted, mut cleared) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let old = scene.memory.read_u64(entry);
                let count = ((old & COUNTER_MASK) >> COUNTER_SHIFT) + 1;
                let mut new = (old & !COUNTER_MASK) | ((count << COUNTER_SHIFT) & COUNTER_MASK);
                let clear = counted % 4 == 0;
                if clear {
                    new &= !(pte::ACCESSED | pte::DIRTY);
                }
                let mut current = [0u8; 8];
                let stored = guest
                    .compare_exchange(
                        [page, 0],
                        offset,
                        &old.to_le_bytes(),
                        &new.to_le_bytes(),
                        &mut current,
                    )
                    .expect("entry inside memory");
                if stored {
                    counted += 1;
                    cleared += u64::from(clear);
                }
                std::hint::spin_loop();
            }
            (counted, cleared)
        });
        os.join().expect("os thread")
    });
    let value = scene.memory.read_u64(entry);
    Run {
        count: (value & COUNTER_MASK) >> COUNTER_SHIFT,
        counted,
        cleared,
    }
}

#[test]
fn accessed_and_dirty_updates_never_undo_a_concurrent_change_to_the_entry() {
    let mut scene = Scene::new(PagingMode::Level4, 64);
    let stores = stores();
    let result = run(&mut scene, stores, |guest| guest);
    println!(
        "accessed/dirty: {stores} emulated stores against {} entry updates ({} clearing A and D)",
        result.counted, result.cleared
    );
    assert!(
        result.counted > 0,
        "the OS thread never got to update the entry"
    );
    assert_eq!(
        result.count,
        result.counted & 0x7f,
        "an entry update was lost: the emulator wrote back a stale entry"
    );
}

/// The negative control: with a non-atomic compare-exchange under the
/// emulator, updates of the entry must get lost.
#[test]
fn a_non_atomic_compare_exchange_loses_entry_updates() {
    let lost = (0..20).any(|_| {
        let mut scene = Scene::new(PagingMode::Level4, 64);
        let result = run(&mut scene, 20_000, NonAtomicGuest);
        result.count != result.counted & 0x7f
    });
    assert!(
        lost,
        "the experiment did not notice a non-atomic compare-exchange"
    );
}
