//! Time per emulated instruction for the accesses that matter on trapped
//! memory (MOV store and load, LOCK XADD, XCHG, a page-splitting LOCK
//! CMPXCHG8B, REP MOVSD over 4 KiB), each beside the iced-x86 decode-only
//! time for the same bytes, which is the floor.
//!
//! The emulator is an [`Emulator`] kept across the iterations, as the
//! service keeps one per vCPU (it re-reads and compares the page-walk
//! entries it remembers on every instruction); the MOVs are also timed with
//! nothing remembered ([`emulate`]). The floor decodes as the emulator
//! does: the decoder used where `Decoder::try_with_ip` made it and
//! `decode_out` into an instruction in place, which saves two copies whose
//! loads stall on the stores just made (about 18 ns of the 32 that
//! `Decoder::with_ip` + `decode` take, also timed for the MOV store).
//!
//! The guest is an in-memory 64-bit guest with 4-level paging (the same
//! `SharedGuest` the tests use: real atomics, split compare-exchange through a
//! two-page window), so the numbers are the emulator's own cost plus plain
//! memory access, without the core's map/cmpxchg system calls. The split case
//! also gets the cost of the bare locked instruction across the two pages,
//! which is the hardware's floor for it.

use abi::ExitMessage;
use criterion::{Criterion, criterion_group, criterion_main};
use emulator::{Emulator, Guest, Outcome, emulate};
use emulator_testkit::drive::{Driven, drive};
use emulator_testkit::{PageAttributes, PagingMode, Scene};
use iced_x86::{Decoder, DecoderOptions, Instruction};
use std::hint::black_box;

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x50_0000;
const SPLIT: u64 = 0x60_0000;
const SOURCE: u64 = 0x70_0000;
const DESTINATION: u64 = 0x71_0000;

const RAX: usize = 0;
const RCX: usize = 1;
const RBX: usize = 3;
const RSI: usize = 6;
const RDI: usize = 7;

/// One benchmarked instruction: its bytes and the registers it starts with.
struct Case {
    name: &'static str,
    bytes: &'static [u8],
    registers: &'static [(usize, u64)],
}

const CASES: [Case; 6] = [
    Case {
        name: "mov [rbx], eax (store)",
        bytes: &[0x89, 0x03],
        registers: &[(RBX, DATA + 0x40), (RAX, 0x1234_5678)],
    },
    Case {
        name: "mov eax, [rbx] (load)",
        bytes: &[0x8b, 0x03],
        registers: &[(RBX, DATA + 0x40)],
    },
    Case {
        name: "lock xadd [rbx], eax",
        bytes: &[0xf0, 0x0f, 0xc1, 0x03],
        registers: &[(RBX, DATA + 0x40), (RAX, 1)],
    },
    Case {
        name: "xchg [rbx], eax",
        bytes: &[0x87, 0x03],
        registers: &[(RBX, DATA + 0x40), (RAX, 7)],
    },
    Case {
        // Memory holds 0 and EDX:EAX = ECX:EBX = 0, so it always succeeds
        // and leaves memory as it was.
        name: "lock cmpxchg8b [rsi] split across pages",
        bytes: &[0xf0, 0x0f, 0xc7, 0x0e],
        registers: &[(RSI, SPLIT + 0xffc)],
    },
    Case {
        name: "rep movsd, 4 KiB",
        bytes: &[0xf3, 0xa5],
        registers: &[(RSI, SOURCE), (RDI, DESTINATION), (RCX, 1024)],
    },
];

fn scene() -> Scene {
    let mut scene = Scene::new(PagingMode::Level4, 256);
    scene.map_new(CODE, PageAttributes::USER_RWX);
    scene.map_new(DATA, PageAttributes::USER_RW);
    // The two halves of the split access in frames that are not adjacent.
    let first = scene.map_new(SPLIT, PageAttributes::USER_RW);
    scene.frames.allocate();
    let second = scene.map_new(SPLIT + 0x1000, PageAttributes::USER_RW);
    assert_ne!(first + 0x1000, second);
    scene.map_new(SOURCE, PageAttributes::USER_RW);
    scene.map_new(DESTINATION, PageAttributes::USER_RW);
    scene
}

fn exit_for(scene: &Scene, case: &Case) -> ExitMessage {
    scene.write_linear(CODE, case.bytes);
    let mut exit = scene.exit(0, CODE);
    for (register, value) in case.registers {
        exit.state.gprs[*register] = *value;
    }
    exit
}

/// Decodes `bytes` as the emulator does (see the crate comment).
fn decode_in_place(bytes: &[u8], instruction: &mut Instruction) {
    let mut made = Decoder::try_with_ip(64, bytes, CODE, DecoderOptions::NONE);
    let decoder = made.as_mut().expect("a 64-bit decoder");
    decoder.decode_out(instruction);
}

fn emulation(c: &mut Criterion) {
    let scene = scene();
    let mut group = c.benchmark_group("emulate");
    for case in &CASES {
        let exit = exit_for(&scene, case);
        let mut guest = scene.memory.guest();
        let mut emulator = Emulator::default();
        // Fail loudly rather than time an instruction the emulator rejects.
        let mut probe = exit;
        let (ending, calls) = drive(&mut emulator, &mut guest, &mut probe, 100_000, 1000);
        assert_eq!(ending, Driven::Completed, "{}: not emulated", case.name);
        println!("{}: {calls} call(s) to emulate", case.name);
        group.bench_function(format!("emulate {}", case.name), |b| {
            if case.bytes == [0xf3, 0xa5] {
                b.iter(|| {
                    let mut state = exit;
                    black_box(drive(&mut emulator, &mut guest, &mut state, 100_000, 1000))
                })
            } else {
                b.iter(|| match emulator.emulate(&mut guest, black_box(&exit)) {
                    Outcome::Retired(retired) => black_box(retired.rip),
                    other => panic!("{}: {other:?}", case.name),
                })
            }
        });
        if case.name.starts_with("mov") {
            group.bench_function(format!("emulate {} (nothing remembered)", case.name), |b| {
                b.iter(|| match emulate(&mut guest, black_box(&exit)) {
                    Outcome::Retired(retired) => black_box(retired.rip),
                    other => panic!("{}: {other:?}", case.name),
                })
            });
        }
        group.bench_function(format!("decode {}", case.name), |b| {
            let mut instruction = Instruction::default();
            b.iter(|| {
                decode_in_place(black_box(case.bytes), &mut instruction);
                black_box(&instruction);
            })
        });
        if case.name.starts_with("mov [rbx], eax") {
            group.bench_function(format!("decode {} (with_ip + decode)", case.name), |b| {
                b.iter(|| {
                    let mut decoder =
                        Decoder::with_ip(64, black_box(case.bytes), CODE, DecoderOptions::NONE);
                    black_box(decoder.decode())
                })
            });
        }
    }
    // The hardware floor of the split case: one locked 8-byte
    // compare-exchange across the same two frames, through the same window.
    let mut guest = scene.memory.guest();
    let pages = [
        scene.translate(SPLIT).expect("mapped"),
        scene.translate(SPLIT + 0x1000).expect("mapped"),
    ];
    group.bench_function("host lock cmpxchg split across pages (no emulation)", |b| {
        let mut current = [0u8; 8];
        b.iter(|| black_box(guest.compare_exchange(pages, 0xffc, &[0; 8], &[0; 8], &mut current)))
    });
    group.finish();
}

criterion_group!(benches, emulation);
criterion_main!(benches);
