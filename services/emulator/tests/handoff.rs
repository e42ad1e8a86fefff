//! The handoff experiment (the project's background notes; KVM gets it wrong,
//! kernel bugzilla 216867) on host threads against real shared memory through
//! the `Guest` trait: thread 0 waits until an emulated `mov eax, [X]` reads 0,
//! then does an emulated `mov dword [X], 1` and counts; threads 1 and 2 do
//! emulated `xchg [X], eax` with EAX = 0 and count each 1 they take. If XCHG
//! is atomic, every 1 is taken exactly once: counter0 == counter1 + counter2.

use abi::ExitMessage;
use emulator_testkit::drive::retire;
use emulator_testkit::{PageAttributes, PagingMode, Scene, SharedGuest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CODE: u64 = 0x40_0000;
const LOAD: u64 = CODE; // mov eax, [rbx]
const STORE: u64 = CODE + 0x10; // mov dword [rbx], 1
const EXCHANGE: u64 = CODE + 0x20; // xchg [rbx], eax
const X: u64 = 0x50_0040;
const RAX: usize = 0;
const RBX: usize = 3;
/// Retries of one instruction that mean the emulator is stuck.
const RETRY_LIMIT: usize = 1_000_000;
/// The whole experiment must end by then, or it fails.
const DEADLINE: Duration = Duration::from_secs(240);

fn handoffs() -> u64 {
    if std::env::var("CORDON_LONG_TESTS").is_ok_and(|value| value == "1") {
        1_000_000
    } else {
        100_000
    }
}

fn scene() -> Scene {
    let mut scene = Scene::new(PagingMode::Level4, 32);
    scene.map_new(CODE, PageAttributes::USER_RWX);
    scene.map_new(X, PageAttributes::USER_RW);
    scene.write_linear(LOAD, &[0x8b, 0x03]);
    scene.write_linear(STORE, &[0xc7, 0x03, 0x01, 0x00, 0x00, 0x00]);
    scene.write_linear(EXCHANGE, &[0x87, 0x03]);
    scene
}

fn exit_at(scene: &Scene, rip: u64) -> ExitMessage {
    let mut exit = scene.exit(3, rip);
    exit.state.gprs[RBX] = X;
    exit
}

/// Emulates once; returns RAX afterwards.
fn run(guest: &mut SharedGuest<'_>, exit: &ExitMessage) -> u64 {
    match retire(guest, exit, RETRY_LIMIT) {
        Ok(retired) => {
            assert_eq!(
                retired.rip,
                exit.state.rip + instruction_length(exit.state.rip)
            );
            retired.gprs[RAX]
        }
        Err(outcome) => panic!("emulating at {:#x}: {outcome:?}", exit.state.rip),
    }
}

fn instruction_length(rip: u64) -> u64 {
    match rip {
        STORE => 6,
        _ => 2,
    }
}

fn pause(spins: &mut u32) {
    *spins += 1;
    if (*spins).is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

#[test]
fn every_store_is_taken_by_exactly_one_emulated_xchg() {
    let scene = scene();
    let target = handoffs();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (stored, taken) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut guest = scene.memory.guest();
            let load = exit_at(&scene, LOAD);
            let store = exit_at(&scene, STORE);
            let mut stored = 0u64;
            let mut spins = 0;
            while stored < target {
                if run(&mut guest, &load) as u32 == 0 {
                    run(&mut guest, &store);
                    stored += 1;
                } else {
                    pause(&mut spins);
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "writer: {stored} handoffs by the deadline"
                );
            }
            done.store(true, Ordering::Release);
            stored
        });
        let takers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut guest = scene.memory.guest();
                    let exchange = exit_at(&scene, EXCHANGE);
                    let mut taken = 0u64;
                    let mut spins = 0;
                    loop {
                        // Read `done` before the XCHG: if it was set and the
                        // XCHG still finds 0, the last 1 was already taken.
                        let finished = done.load(Ordering::Acquire);
                        if run(&mut guest, &exchange) as u32 == 1 {
                            taken += 1;
                        } else if finished {
                            break;
                        } else {
                            pause(&mut spins);
                        }
                        assert!(
                            start.elapsed() < DEADLINE,
                            "taker: {taken} taken by the deadline"
                        );
                    }
                    assert_eq!(
                        guest.counts.writes.load(Ordering::Relaxed),
                        0,
                        "XCHG used a plain write"
                    );
                    taken
                })
            })
            .collect();
        let stored = writer.join().expect("writer thread");
        let taken: Vec<u64> = takers
            .into_iter()
            .map(|taker| taker.join().expect("taker thread"))
            .collect();
        (stored, taken)
    });
    println!(
        "handoff: counter0 = {stored}, counter1 = {}, counter2 = {} in {:?}",
        taken[0],
        taken[1],
        start.elapsed()
    );
    assert_eq!(
        stored,
        taken[0] + taken[1],
        "a handoff was lost or taken twice"
    );
    assert_eq!(
        scene.memory.read_u32(scene.translate(X).expect("X mapped")),
        0
    );
}
