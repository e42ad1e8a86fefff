//! LOCK semantics: every locked read-modify-write is one compare-exchange
//! (spanning both frames when split), a lost race retries with nothing
//! changed, and plain accesses that cross a page are two partial accesses.

use super::guest::*;
use super::modes::long_bench;
use crate::fault::vector;
use crate::{Exception, Outcome, emulate};
use abi::exit::ept_qualification;

const DATA: u64 = 0x7000_0000;
const FRAME_A: u64 = 0x30_0000;
const FRAME_B: u64 = 0x50_0000;

/// Compare-exchanges on data frames (the rest set accessed/dirty bits).
fn data_compare_exchanges(guest: &TestGuest) -> alloc::vec::Vec<([u64; 2], u16, usize)> {
    guest
        .compare_exchanges
        .iter()
        .copied()
        .filter(|(pages, _, _)| pages[0] == FRAME_A || pages[0] == FRAME_B)
        .collect()
}

#[test]
fn split_lock_cmpxchg8b_is_one_compare_exchange_over_both_frames() {
    // lock cmpxchg8b [rbx]
    let (mut guest, mut exit) = long_bench(&[0xf0, 0x0f, 0xc7, 0x0b]);
    exit.state.gprs[3] = DATA + 0xffc;
    guest.poke(FRAME_A + 0xffc, &0x1111_2222u32.to_le_bytes());
    guest.poke(FRAME_B, &0x3333_4444u32.to_le_bytes());
    exit.state.gprs[0] = 0x1111_2222; // eax
    exit.state.gprs[2] = 0x3333_4444; // edx
    exit.state.gprs[3] = DATA + 0xffc; // ebx is the low new half too
    exit.state.gprs[1] = 0x5555_6666; // ecx
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(
        data_compare_exchanges(&guest),
        [([FRAME_A, FRAME_B], 0xffc, 8)]
    );
    assert!(
        guest.writes.is_empty(),
        "no plain write for a locked access"
    );
    assert_eq!(guest.peek_u32(FRAME_A + 0xffc), (DATA + 0xffc) as u32);
    assert_eq!(guest.peek_u32(FRAME_B), 0x5555_6666);
    assert_ne!(done.rflags & 0x40, 0, "ZF set on success");
}

#[test]
fn failed_lock_cmpxchg8b_loads_edx_eax_atomically() {
    let (mut guest, mut exit) = long_bench(&[0xf0, 0x0f, 0xc7, 0x0b]);
    exit.state.gprs[3] = DATA + 0xffc;
    guest.poke(FRAME_A + 0xffc, &7u32.to_le_bytes());
    guest.poke(FRAME_B, &9u32.to_le_bytes());
    exit.state.gprs[0] = 0xffff_ffff_0000_0001;
    exit.state.rflags |= 0x40;
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[0], 7);
    assert_eq!(done.gprs[2], 9);
    assert_eq!(done.rflags & 0x40, 0);
    assert_eq!(data_compare_exchanges(&guest).len(), 1);
}

#[test]
fn lost_race_retries_with_nothing_changed() {
    // lock xadd [rbx], eax
    let (mut guest, mut exit) = long_bench(&[0xf0, 0x0f, 0xc1, 0x03]);
    exit.state.gprs[3] = DATA;
    exit.state.gprs[0] = 5;
    guest.poke(FRAME_A, &10u32.to_le_bytes());
    // Let the walk set A/D first, then lose the data compare-exchange.
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek_u32(FRAME_A), 15);
    guest.lose_next_race = true;
    assert_eq!(emulate(&mut guest, &exit), Outcome::Retry);
    assert_eq!(guest.peek_u32(FRAME_A), 15);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek_u32(FRAME_A), 20);
    assert_eq!(done.gprs[0], 15);
}

#[test]
fn xchg_with_memory_is_implicitly_locked() {
    let (mut guest, mut exit) = long_bench(&[0x87, 0x03]);
    exit.state.gprs[3] = DATA + 0xffe;
    exit.state.gprs[0] = 0xaabb_ccdd;
    guest.poke(FRAME_A + 0xffe, &[1, 2]);
    guest.poke(FRAME_B, &[3, 4]);
    let done = retired(emulate(&mut guest, &exit));
    assert_eq!(done.gprs[0], 0x0403_0201);
    assert_eq!(guest.peek(FRAME_A + 0xffe, 2), [0xdd, 0xcc]);
    assert_eq!(guest.peek(FRAME_B, 2), [0xbb, 0xaa]);
    assert_eq!(
        data_compare_exchanges(&guest),
        [([FRAME_A, FRAME_B], 0xffe, 4)]
    );
    assert!(guest.writes.is_empty());
}

#[test]
fn unlocked_split_add_reads_then_writes_two_parts() {
    // add [rbx], eax
    let (mut guest, mut exit) = long_bench(&[0x01, 0x03]);
    exit.state.gprs[3] = DATA + 0xffd;
    exit.state.gprs[0] = 1;
    guest.poke(FRAME_A + 0xffd, &[0xff, 0xff, 0xff]);
    guest.poke(FRAME_B, &[0x00]);
    retired(emulate(&mut guest, &exit));
    assert_eq!(guest.peek(FRAME_A + 0xffd, 3), [0, 0, 0]);
    assert_eq!(guest.peek(FRAME_B, 1), [1]);
    assert_eq!(guest.writes, [(FRAME_A + 0xffd, 3), (FRAME_B, 1)]);
    assert!(data_compare_exchanges(&guest).is_empty());
}

#[test]
fn lock_cmpxchg16b_requires_alignment() {
    let (mut guest, mut exit) = long_bench(&[0xf0, 0x48, 0x0f, 0xc7, 0x0b]);
    exit.state.gprs[3] = DATA + 8;
    assert_eq!(
        emulate(&mut guest, &exit),
        Outcome::Exception(Exception {
            vector: vector::GP,
            error_code: Some(0),
            cr2: None
        })
    );
    exit.state.gprs[3] = DATA + 16;
    guest.poke(FRAME_A + 16, &[0; 16]);
    exit.state.gprs[1] = 0x0102_0304_0506_0708;
    let done = retired(emulate(&mut guest, &exit));
    assert_ne!(done.rflags & 0x40, 0);
    assert_eq!(guest.peek_u64(FRAME_A + 16), DATA + 16);
    assert_eq!(guest.peek_u64(FRAME_A + 24), 0x0102_0304_0506_0708);
    assert_eq!(
        data_compare_exchanges(&guest),
        [([FRAME_A, FRAME_A], 16, 16)]
    );
}

#[test]
fn guest_linear_mismatch_retries_before_any_write() {
    let (mut guest, mut exit) = long_bench(&[0x89, 0x03]);
    exit.state.gprs[3] = DATA + 0x100;
    exit.qualification = ept_qualification::WRITE | ept_qualification::GUEST_LINEAR_VALID;
    exit.guest_linear = DATA + 0x200;
    assert_eq!(emulate(&mut guest, &exit), Outcome::Retry);
    assert!(guest.writes.is_empty());
    // Matching (anywhere inside the access) retires.
    exit.guest_linear = DATA + 0x102;
    retired(emulate(&mut guest, &exit));
    // A load whose address does not match retries too.
    let (mut guest, mut exit) = long_bench(&[0x8b, 0x03]);
    exit.state.gprs[3] = DATA;
    exit.qualification = ept_qualification::READ | ept_qualification::GUEST_LINEAR_VALID;
    exit.guest_linear = DATA + 0x1000;
    assert_eq!(emulate(&mut guest, &exit), Outcome::Retry);
}

#[test]
fn split_accesses_whose_second_page_faults_change_nothing() {
    // The second data page read-only: a split locked XADD and a split
    // unlocked ADD both fault on it before touching the first page.
    for code in [&[0xf0, 0x0f, 0xc1, 0x03][..], &[0x01, 0x03][..]] {
        let mut guest = TestGuest::new();
        let mut tables = PageTables::new(&mut guest, Format::Level4, 0x10_0000);
        tables.map(&mut guest, 0x40_0000, 0x20_0000, RW);
        tables.map(&mut guest, DATA, FRAME_A, RW);
        tables.map(&mut guest, DATA + 0x1000, FRAME_B, 0);
        let mut exit = long_mode(tables.cr3());
        load_code(&mut guest, &mut exit, 0x20_0000, 0x40_0000, code);
        exit.state.gprs[3] = DATA + 0xffe;
        exit.state.gprs[0] = 1;
        guest.poke(FRAME_A + 0xffe, &[0xaa, 0xbb]);
        assert_eq!(
            emulate(&mut guest, &exit),
            Outcome::Exception(Exception {
                vector: vector::PF,
                error_code: Some(0x3),
                cr2: Some(DATA + 0x1000)
            }),
            "{code:02x?}"
        );
        assert!(guest.writes.is_empty());
        assert!(data_compare_exchanges(&guest).is_empty());
        assert_eq!(guest.peek(FRAME_A + 0xffe, 2), [0xaa, 0xbb]);
    }
}
