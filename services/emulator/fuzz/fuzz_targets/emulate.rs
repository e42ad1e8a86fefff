//! Fuzz target: `emulate` on arbitrary input must not panic or hang. The
//! first byte picks the shape: a well-formed 64-bit guest running the input
//! as instruction bytes with input-derived registers, or a fully
//! input-derived exit message over memory filled from the input. In the
//! second shape an `Emulator` kept across inputs (whose remembered walks
//! then meet page tables that change from input to input) must come to the
//! outcome, and leave the memory, that a fresh emulation does.
#![no_main]

use abi::ExitMessage;
use emulator::{Emulator, emulate};
use emulator_testkit::{GuestMemory, PageAttributes, PagingMode, Scene};
use libfuzzer_sys::fuzz_target;
use std::sync::{LazyLock, Mutex};
use zerocopy::FromBytes;

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x50_0000;
const SOUP_FRAMES: usize = 16;

static GUEST: LazyLock<Scene> = LazyLock::new(|| {
    let mut scene = Scene::new(PagingMode::Level4, 64);
    scene.map_new(CODE, PageAttributes::USER_RWX);
    scene.map_new(CODE + 0x1000, PageAttributes::USER_RWX);
    for page in 0..4 {
        scene.map_new(DATA + page * 0x1000, PageAttributes::USER_RW);
    }
    scene
});

static SOUP: LazyLock<GuestMemory> = LazyLock::new(|| GuestMemory::new(SOUP_FRAMES));

static REMEMBERING: Mutex<Emulator> = Mutex::new(Emulator::new(emulator::EmulatorConfig::DEFAULT));

fuzz_target!(|input: &[u8]| {
    let Some((&shape, rest)) = input.split_first() else {
        return;
    };
    if shape < 0x80 {
        // Instruction bytes at the end of the first code page (so fetches
        // may cross into the second), registers from the input.
        let scene = &*GUEST;
        let (code, registers) = rest.split_at(rest.len().min(15));
        let rip = CODE + 0x1000 - code.len().max(1) as u64;
        scene.write_linear(rip, code);
        let mut exit = scene.exit(shape & 3, rip);
        for (register, chunk) in exit.state.gprs.iter_mut().zip(registers.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            let value = u64::from_le_bytes(bytes);
            *register = if shape & 4 != 0 {
                DATA + (value & 0x3fff)
            } else {
                value
            };
        }
        exit.state.rflags = 2 | u64::from(shape & 0x40) << 12 | u64::from(shape) & 0xd5;
        let _ = emulate(&mut scene.memory.guest(), &exit);
    } else {
        let mut raw = vec![0u8; size_of::<ExitMessage>()];
        let (state, memory) = rest.split_at(rest.len().min(raw.len()));
        raw[..state.len()].copy_from_slice(state);
        let Ok(exit) = ExitMessage::read_from_bytes(&raw) else {
            return;
        };
        let soup = &*SOUP;
        let len = memory.len().min(SOUP_FRAMES * 4096);
        soup.write(0, &memory[..len]).expect("inside the soup");
        let before = soup.snapshot(0, SOUP_FRAMES * 4096);
        let fresh = emulate(&mut soup.guest(), &exit);
        let after = soup.snapshot(0, SOUP_FRAMES * 4096);
        soup.write(0, &before).expect("inside the soup");
        let mut emulator = REMEMBERING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let remembering = emulator.emulate(&mut soup.guest(), &exit);
        assert_eq!(remembering, fresh, "a remembered walk changed the outcome");
        assert!(
            soup.snapshot(0, SOUP_FRAMES * 4096) == after,
            "a remembered walk changed the memory"
        );
    }
});
