//! Random instruction bytes in random states never panic and never touch
//! memory after reporting a fault (a short deterministic run; the property
//! test and fuzz target live with the test suite).

use super::guest::*;
use crate::{Outcome, emulate};

/// xorshift64*: deterministic pseudo-random numbers.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_and_states_never_panic() {
    let mut random = Random(0x1234_5678_9abc_def1);
    let mut guest = TestGuest::new();
    let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
    tables.map(&mut guest, 0x40_0000, 0x20_0000, RW);
    tables.map(&mut guest, 0, 0x30_0000, RW);
    let mut retired = 0;
    for round in 0..20_000u32 {
        let mut exit = match round % 4 {
            0 => long_mode(tables.cr3()),
            1 => protected_mode(),
            2 => real_mode((random.next() & 0xffff) as u16),
            _ => paged_exit(Format::Pae, tables.cr3()),
        };
        let mut code = [0u8; 15];
        for byte in &mut code {
            *byte = random.next() as u8;
        }
        guest.poke(0x20_0000, &code);
        exit.state.rip = if round % 4 == 0 { 0x40_0000 } else { 0x20_0000 };
        for gpr in &mut exit.state.gprs {
            // Mostly small addresses so that accesses land in mapped memory.
            *gpr = if random.next().is_multiple_of(3) {
                random.next()
            } else {
                random.next() & 0xfff
            };
        }
        exit.state.rflags = (random.next() & 0x40_0cd5) | 2;
        if random.next().is_multiple_of(8) {
            exit.state.cr0 ^= random.next() & 0x8005_003f;
            exit.state.cr4 ^= random.next() & 0x70_16b0;
            exit.state.efer ^= random.next() & 0xd00;
        }
        if matches!(emulate(&mut guest, &exit), Outcome::Retired(_)) {
            retired += 1;
        }
    }
    assert!(
        retired > 1000,
        "only {retired} of the random instructions retired"
    );
}
