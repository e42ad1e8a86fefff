//! POP Sreg (every operand and stack size, the stack possibly faulting) and
//! LDS/LES/LFS/LGS/LSS (m16:16, m16:32, m16:64) against the SDM: the stack
//! pointer or offset register, the loaded segment register, and faults that
//! change nothing.

use super::segment_loads::*;
use crate::fault::vector;
use crate::{Exception, Outcome};
use abi::SegmentLoad;

/// A 32-bit protected-mode bench with the stack at `DATA + 0xff0` holding
/// `stack` and GDT entries 3 (flat data) and 4 (data DPL 3).
fn pop_bench(code: &[u8], stack: u64) -> Bench {
    let mut bench = Bench::protected(code, true);
    bench.exit.state.gprs[4] = 0xffff_ffff_0000_0000 | (DATA + 0xff0);
    bench.guest.poke(DATA + 0xff0, &stack.to_le_bytes());
    bench.gdt(3, FLAT_DATA);
    bench.gdt(4, descriptor(0x10_0000, 0xffff, 0xf2, 0x4));
    bench
}

#[test]
fn pop_segment_register_in_32bit_code() {
    // (code, register, stack pointer increment, blocks interrupts)
    let cases: &[(&[u8], usize, u64, bool)] = &[
        (&[0x1f], DS, 4, false),
        (&[0x07], ES, 4, false),
        (&[0x17], SS, 4, true),
        (&[0x0f, 0xa1], FS, 4, false),
        (&[0x0f, 0xa9], GS, 4, false),
        (&[0x66, 0x1f], DS, 2, false),
        (&[0x66, 0x17], SS, 2, true),
        (&[0x66, 0x0f, 0xa9], GS, 2, false),
    ];
    for &(code, segment, increment, blocks) in cases {
        // The upper bits of the popped operand are ignored.
        let mut bench = pop_bench(code, 0x5555_0018);
        let (done, load) = bench.load();
        assert_eq!(usize::from(load.register), segment, "{code:02x?}");
        assert_eq!(load.value, register(0x18, 0xc093, 0xffff_ffff, 0));
        let flags = if blocks {
            SegmentLoad::BLOCKS_INTERRUPTS
        } else {
            0
        };
        assert_eq!(load.flags, flags, "{code:02x?}");
        // A 32-bit stack pointer write clears the upper half.
        assert_eq!(done.gprs[4], DATA + 0xff0 + increment, "{code:02x?}");
        assert_eq!(done.rip, 0x8000 + code.len() as u64);
    }
}

#[test]
fn pop_segment_register_with_a_16bit_stack_wraps_sp() {
    // 16-bit code and stack: pop ds at SP = 0xfffe reads SS:0xfffe and
    // wraps SP to 0, keeping the bits above SP.
    let mut bench = Bench::protected(&[0x1f], false);
    bench.exit.state.gprs[4] = 0x1234_fffe;
    bench.guest.poke(0xfffe, &0x23u16.to_le_bytes());
    bench.gdt(4, descriptor(0x10_0000, 0xffff, 0xf2, 0x4));
    bench.exit.state.cpl = 3;
    let (done, load) = bench.load();
    assert_eq!(done.gprs[4], 0x1234_0000);
    assert_eq!(load.value, register(0x23, 0x40f3, 0xffff, 0x10_0000));
    // 32-bit operand (66 1f) in 16-bit code: four bytes, SP + 4.
    let mut bench = Bench::protected(&[0x66, 0x1f], false);
    bench.exit.state.gprs[4] = 0x1000;
    bench.guest.poke(0x1000, &0xffff_0023u32.to_le_bytes());
    bench.gdt(4, descriptor(0x10_0000, 0xffff, 0xf2, 0x4));
    let (done, load) = bench.load();
    assert_eq!(done.gprs[4], 0x1004);
    assert_eq!(load.value.selector, 0x23);
}

#[test]
fn pop_segment_register_faults_change_nothing() {
    // A selector the descriptor checks refuse: #GP(selector).
    let mut bench = pop_bench(&[0x1f], 0x19);
    assert_eq!(bench.fault(), with_code(vector::GP, 0x18));
    // POP SS: null is #GP(0), a DPL-3 segment at CPL 0 #GP(selector), a
    // not-present one #SS(selector).
    assert_eq!(pop_bench(&[0x17], 0).fault(), with_code(vector::GP, 0));
    assert_eq!(
        pop_bench(&[0x17], 0x20).fault(),
        with_code(vector::GP, 0x20)
    );
    let mut bench = pop_bench(&[0x17], 0x18);
    bench.gdt(3, descriptor(0, 0xffff, 0x12, 0));
    assert_eq!(bench.fault(), with_code(vector::SS, 0x18));
    // The stack read itself beyond SS's limit: #SS(0) (before the
    // descriptor, which would be #GP).
    let mut bench = pop_bench(&[0x1f], 0x19);
    bench.exit.state.segments[SS].limit = 0x2ff0;
    assert_eq!(bench.fault(), with_code(vector::SS, 0));
}

#[test]
fn pop_segment_register_reads_only_the_selector() {
    // A 32-bit POP DS reads two bytes (as the host CPU does, found by the
    // differential test): the other two may lie beyond SS's limit, on an
    // unmapped page, or misaligned under alignment checks; ESP still
    // rises by four.
    let mut bench = pop_bench(&[0x1f], 0x18);
    bench.exit.state.segments[SS].limit = 0x2ff1;
    let (done, load) = bench.load();
    assert_eq!(load.value.selector, 0x18);
    assert_eq!(done.gprs[4], DATA + 0xff4);
    // Alignment checks at CPL 3: ESP 2 mod 4 is fine, odd is #AC(0).
    for (offset, aligned) in [(0xff2, true), (0xff1, false)] {
        let mut bench = pop_bench(&[0x1f], 0);
        bench.exit.state.gprs[4] = DATA + offset;
        bench.guest.poke(DATA + offset, &0x23u16.to_le_bytes());
        bench.gdt(4, descriptor(0, 0xf_ffff, 0xf2, 0xc));
        bench.exit.state.cpl = 3;
        bench.exit.state.cr0 |= 1 << 18;
        bench.exit.state.rflags |= 1 << 18;
        if aligned {
            assert_eq!(bench.load().1.value.selector, 0x23);
        } else {
            assert_eq!(bench.fault(), with_code(vector::AC, 0));
        }
    }
    // At the end of the last mapped page (64-bit mode, 8-byte POP FS).
    let (mut bench, _) = long_bench(&[0x0f, 0xa1]);
    bench.exit.state.gprs[4] = 0x7000_0ffe;
    bench.guest.poke(DATA + 0xffe, &0x18u16.to_le_bytes());
    bench.gdt(3, FLAT_DATA);
    let (done, _) = bench.load();
    assert_eq!(done.gprs[4], 0x7000_1006);
}

#[test]
fn pop_fs_and_gs_in_64bit_mode() {
    // pop fs (8 bytes), pop gs with 66 (2 bytes), pop fs with REX.W.
    let cases: &[(&[u8], usize, u64)] = &[
        (&[0x0f, 0xa1], FS, 8),
        (&[0x66, 0x0f, 0xa9], GS, 2),
        (&[0x48, 0x0f, 0xa1], FS, 8),
    ];
    for &(code, segment, increment) in cases {
        let (mut bench, _) = long_bench(code);
        bench.exit.state.gprs[4] = 0x7000_0ff8;
        bench
            .guest
            .poke(DATA + 0xff8, &0xdead_0000_0000_0018u64.to_le_bytes());
        bench.gdt(3, descriptor(0x1234_5000, 0xf_ffff, 0x92, 0xc));
        let (done, load) = bench.load();
        assert_eq!(usize::from(load.register), segment);
        assert_eq!(load.value, register(0x18, 0xc093, 0xffff_ffff, 0x1234_5000));
        assert_eq!(done.gprs[4], 0x7000_0ff8 + increment);
    }
    // The stack page is not mapped: #PF on the stack read, not the GDT.
    let (mut bench, _) = long_bench(&[0x0f, 0xa1]);
    bench.exit.state.gprs[4] = 0x7200_0000;
    assert_eq!(
        bench.fault(),
        Exception {
            vector: vector::PF,
            error_code: Some(0),
            cr2: Some(0x7200_0000),
        }
    );
    // POP DS does not exist in 64-bit mode (the bytes do not decode).
    let (mut bench, _) = long_bench(&[0x1f]);
    assert!(matches!(bench.run(), Outcome::Unsupported(_)));
}

/// (code, 32-bit code, pointer bytes, register, expected RAX)
type PointerCase<'a> = (&'a [u8], bool, &'a [u8], usize, u64);

#[test]
fn far_pointer_loads_every_size() {
    let pointer16 = [0x34, 0x12, 0x18, 0x00];
    let pointer32 = [0xef, 0xcd, 0xab, 0x89, 0x18, 0x00];
    let rax = 0xffff_ffff_ffff_ffff_u64;
    let cases: &[PointerCase] = &[
        // les ax, [bx] in 16-bit code.
        (&[0xc4, 0x07], false, &pointer16, ES, 0xffff_ffff_ffff_1234),
        // lds eax, [ebx]; lds ax, [ebx].
        (&[0xc5, 0x03], true, &pointer32, DS, 0x89ab_cdef),
        (
            &[0x66, 0xc5, 0x03],
            true,
            &pointer16,
            DS,
            0xffff_ffff_ffff_1234,
        ),
        // lss/lfs/lgs eax, [ebx].
        (&[0x0f, 0xb2, 0x03], true, &pointer32, SS, 0x89ab_cdef),
        (&[0x0f, 0xb4, 0x03], true, &pointer32, FS, 0x89ab_cdef),
        (&[0x0f, 0xb5, 0x03], true, &pointer32, GS, 0x89ab_cdef),
        // lss sp-style 16-bit: lss ax, [bx] in 16-bit code.
        (
            &[0x0f, 0xb2, 0x07],
            false,
            &pointer16,
            SS,
            0xffff_ffff_ffff_1234,
        ),
    ];
    for &(code, code_32bit, pointer, segment, expected) in cases {
        let mut bench = Bench::protected(code, code_32bit);
        bench.exit.state.gprs[RAX] = rax;
        bench.guest.poke(DATA, pointer);
        bench.gdt(3, FLAT_DATA);
        let (done, load) = bench.load();
        assert_eq!(usize::from(load.register), segment, "{code:02x?}");
        assert_eq!(load.flags, 0, "LSS does not block interrupts");
        assert_eq!(load.value, register(0x18, 0xc093, 0xffff_ffff, 0));
        assert_eq!(done.gprs[RAX], expected, "{code:02x?}");
        assert_eq!(done.gprs[4], bench.exit.state.gprs[4], "{code:02x?}");
    }
}

#[test]
fn far_pointer_loads_in_64bit_and_compatibility_mode() {
    let pointer64 = [1, 2, 3, 4, 5, 6, 7, 0x88, 0x18, 0];
    let pointer32 = [1, 2, 3, 4, 0x18, 0];
    let pointer16 = [1, 2, 0x18, 0];
    let cases: &[(&[u8], &[u8], usize, u64)] = &[
        // lss rax, [rbx] (m16:64, REX.W).
        (
            &[0x48, 0x0f, 0xb2, 0x03],
            &pointer64,
            SS,
            0x8807_0605_0403_0201,
        ),
        // lfs eax, [rbx]: the upper half cleared.
        (&[0x0f, 0xb4, 0x03], &pointer32, FS, 0x0403_0201),
        // lgs ax, [rbx]: the other bits kept.
        (
            &[0x66, 0x0f, 0xb5, 0x03],
            &pointer16,
            GS,
            0xffff_ffff_ffff_0201,
        ),
    ];
    for &(code, pointer, segment, expected) in cases {
        let (mut bench, _) = long_bench(code);
        bench.exit.state.gprs[RAX] = u64::MAX;
        bench.guest.poke(DATA, pointer);
        bench.gdt(3, descriptor(0xfedc_ba98, 0xf_ffff, 0x92, 0xc));
        let (done, load) = bench.load();
        assert_eq!(usize::from(load.register), segment, "{code:02x?}");
        assert_eq!(load.value.base, 0xfedc_ba98, "{code:02x?}");
        assert_eq!(done.gprs[RAX], expected, "{code:02x?}");
    }
    // Compatibility mode: les eax, [ebx] (c4 is not VEX there with a
    // memory operand).
    let (mut bench, _) = long_bench(&[0xc4, 0x03]);
    bench.exit.state.segments[1].access_rights = 0xc09b;
    bench.exit.state.gprs[RBX] = 0x7000_0000;
    bench.guest.poke(DATA, &pointer32);
    bench.gdt(3, FLAT_DATA);
    let (done, load) = bench.load();
    assert_eq!(usize::from(load.register), ES);
    assert_eq!(done.gprs[RAX], 0x0403_0201);
    assert_eq!(done.rip, 0x40_0002);
}

#[test]
fn far_pointer_faults_change_nothing() {
    let pointer = |selector: u16| {
        let mut bytes = [0x78, 0x56, 0x34, 0x12, 0, 0];
        bytes[4..].copy_from_slice(&selector.to_le_bytes());
        bytes
    };
    // lds eax, [ebx] with a selector beyond the GDT: #GP(selector).
    let mut bench = Bench::protected(&[0xc5, 0x03], true);
    bench.guest.poke(DATA, &pointer(0x80));
    assert_eq!(bench.fault(), with_code(vector::GP, 0x80));
    // lss eax, [ebx] with a null selector: #GP(0).
    let mut bench = Bench::protected(&[0x0f, 0xb2, 0x03], true);
    bench.guest.poke(DATA, &pointer(0));
    assert_eq!(bench.fault(), with_code(vector::GP, 0));
    // The pointer's last byte beyond DS's limit: #GP(0).
    let mut bench = Bench::protected(&[0xc5, 0x03], true);
    bench.guest.poke(DATA, &pointer(0x18));
    bench.gdt(3, FLAT_DATA);
    bench.exit.state.segments[DS].limit = 0x2004;
    assert_eq!(bench.fault(), with_code(vector::GP, 0));
    bench.exit.state.segments[DS].limit = 0x2005;
    bench.load();
    // Alignment checks at CPL 3: m16:16 needs 2, m16:32 needs 4.
    for (code, offset, aligned) in [
        (&[0x66, 0xc5, 0x43, 0x01][..], 1, false),
        (&[0x66, 0xc5, 0x43, 0x02][..], 2, true),
        (&[0xc5, 0x43, 0x02][..], 2, false),
        (&[0xc5, 0x43, 0x04][..], 4, true),
    ] {
        let mut bench = Bench::protected(code, true);
        bench.exit.state.cpl = 3;
        bench.exit.state.cr0 |= 1 << 18;
        bench.exit.state.rflags |= 1 << 18;
        let mut bytes = pointer(0x23);
        if code[0] == 0x66 {
            bytes[2..4].copy_from_slice(&0x23u16.to_le_bytes());
        }
        bench.guest.poke(DATA + offset, &bytes);
        bench.gdt(4, descriptor(0, 0xf_ffff, 0xf2, 0xc));
        if aligned {
            bench.load();
        } else {
            assert_eq!(bench.fault(), with_code(vector::AC, 0), "{code:02x?}");
        }
    }
}

#[test]
fn far_pointers_are_read_as_offset_then_selector() {
    // lds eax, [ebx+2] at CPL 3 with alignment checks, the selector
    // beyond DS's limit: the misaligned offset is #AC(0) before the
    // selector's #GP(0) (as the host CPU orders them).
    let mut bench = Bench::protected(&[0xc5, 0x43, 0x02], true);
    bench.exit.state.cpl = 3;
    bench.exit.state.cr0 |= 1 << 18;
    bench.exit.state.rflags |= 1 << 18;
    bench.exit.state.segments[DS].limit = 0x2005;
    assert_eq!(bench.fault(), with_code(vector::AC, 0));
    bench.exit.state.rflags &= !(1 << 18);
    assert_eq!(bench.fault(), with_code(vector::GP, 0));
}

#[test]
fn far_pointer_across_a_page_boundary_page_faults_on_the_second_page() {
    // lfs rax... m16:32 at 0x7000_0ffe: the selector lies on the unmapped
    // page 0x7000_1000.
    let (mut bench, _) = long_bench(&[0x0f, 0xb4, 0x03]);
    bench.exit.state.gprs[RBX] = 0x7000_0ffe;
    assert_eq!(
        bench.fault(),
        Exception {
            vector: vector::PF,
            error_code: Some(0),
            cr2: Some(0x7000_1000),
        }
    );
}
