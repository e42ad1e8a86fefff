//! Checks the native sandbox itself against instructions with known results,
//! so that a difference in the differential test is the emulator's, not the
//! harness's.

use emulator_testkit::native::{
    DATA_BASE, DataSegment, GUARD_PAGE, NativeMode, NativeOutcome, NativeState, READ_ONLY_PAGE,
    WRITABLE_PAGES, with_sandbox,
};

fn state() -> NativeState {
    NativeState {
        gprs: [0; 16],
        rflags: 0x202,
        ymm: [[0; 32]; 16],
    }
}

#[test]
fn add_to_memory_sets_result_flags_and_registers() {
    with_sandbox(|sandbox| {
        let mut data = vec![0u8; (WRITABLE_PAGES * 4096) as usize];
        data[0x10..0x14].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        sandbox.set_writable_data(&data);
        let mut input = state();
        input.gprs[3] = DATA_BASE + 0x10; // rbx
        input.gprs[0] = 1; // rax
        for (index, value) in input.gprs.iter_mut().enumerate().skip(8) {
            *value = 0x1111 * index as u64;
        }
        input.gprs[4] = DATA_BASE + 0x1000; // rsp
        // add dword [rbx], eax
        let NativeOutcome::Completed(output) = sandbox.run(&[0x01, 0x03], &input) else {
            panic!("add faulted");
        };
        let after = sandbox.writable_data();
        assert_eq!(&after[0x10..0x14], &[0, 0, 0, 0]);
        // CF, PF, AF, ZF set; SF, OF clear; IF and bit 1 kept.
        assert_eq!(output.rflags & 0x8d5, 0x55);
        assert_eq!(output.gprs, input.gprs);
    });
}

#[test]
fn registers_and_vectors_round_trip() {
    with_sandbox(|sandbox| {
        let mut input = state();
        for (index, value) in input.gprs.iter_mut().enumerate() {
            *value = 0x0101_0101_0101_0101u64.wrapping_mul(index as u64 + 1);
        }
        input.gprs[4] = DATA_BASE + 0x800;
        input.rflags = 0x202 | 0x400 | 0x8c1; // DF, OF, SF, ZF... (CF|ZF|SF|OF)
        for (index, ymm) in input.ymm.iter_mut().enumerate() {
            *ymm = [index as u8 + 1; 32];
        }
        // movups xmm1, [rsp]: xmm1 low 16 bytes from memory, upper kept.
        let mut data = vec![0u8; (WRITABLE_PAGES * 4096) as usize];
        data[0x800..0x810].copy_from_slice(&[0xab; 16]);
        sandbox.set_writable_data(&data);
        let NativeOutcome::Completed(output) = sandbox.run(&[0x0f, 0x10, 0x0c, 0x24], &input)
        else {
            panic!("movups faulted");
        };
        assert_eq!(output.gprs, input.gprs);
        assert_eq!(output.rflags, input.rflags);
        assert_eq!(output.ymm[1][..16], [0xab; 16]);
        assert_eq!(output.ymm[1][16..], [2; 16]);
        assert_eq!(output.ymm[2], [3; 32]);
    });
}

#[test]
fn faults_report_vector_error_code_and_address() {
    with_sandbox(|sandbox| {
        let mut input = state();
        // mov eax, [rbx] on the guard page: #PF, user read of a not-present page.
        input.gprs[3] = DATA_BASE + GUARD_PAGE * 4096 + 8;
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0x8b, 0x03], &input) else {
            panic!("read of the guard page did not fault");
        };
        assert_eq!((fault.signal, fault.vector), (libc::SIGSEGV, 14));
        assert_eq!(fault.error_code, 0x4);
        assert_eq!(fault.address, input.gprs[3]);
        assert_eq!(fault.gprs, input.gprs);

        // mov [rbx], eax on the read-only page: #PF, present, write, user.
        input.gprs[3] = DATA_BASE + READ_ONLY_PAGE * 4096 + 0x20;
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0x89, 0x03], &input) else {
            panic!("write to the read-only page did not fault");
        };
        assert_eq!((fault.vector, fault.error_code), (14, 0x7));
        assert_eq!(fault.address, input.gprs[3]);

        // div ecx with ecx = 0: #DE.
        input.gprs[1] = 0;
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0xf7, 0xf1], &input) else {
            panic!("division by zero did not fault");
        };
        assert_eq!((fault.signal, fault.vector), (libc::SIGFPE, 0));

        // mov eax, [rbx] at a non-canonical address: #GP(0).
        input.gprs[3] = 0x8000_0000_0000_0000;
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0x8b, 0x03], &input) else {
            panic!("non-canonical read did not fault");
        };
        assert_eq!(
            (fault.signal, fault.vector, fault.error_code),
            (libc::SIGSEGV, 13, 0)
        );

        // Misaligned access with RFLAGS.AC at CPL 3 (Linux sets CR0.AM): #AC(0).
        input.gprs[3] = DATA_BASE + 0x101;
        input.rflags = 0x202 | 1 << 18;
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0x8b, 0x03], &input) else {
            panic!("misaligned read with AC did not fault");
        };
        assert_eq!(
            (fault.signal, fault.vector, fault.error_code),
            (libc::SIGBUS, 17, 0)
        );

        // ud2: #UD.
        let NativeOutcome::Faulted(fault) = sandbox.run(&[0x0f, 0x0b], &input) else {
            panic!("ud2 did not fault");
        };
        assert_eq!((fault.signal, fault.vector), (libc::SIGILL, 6));
    });
}

#[test]
fn compatibility_mode_runs_32_bit_code_and_recovers_from_faults() {
    with_sandbox(|sandbox| {
        let mut input = state();
        input.gprs[0] = 41;
        input.gprs[4] = DATA_BASE + 0x800;
        // 0x40 is INC EAX outside 64-bit mode (a REX prefix inside it).
        let NativeOutcome::Completed(output) =
            sandbox.run_in(NativeMode::Compatibility, &[0x40], &input)
        else {
            panic!("inc eax faulted in compatibility mode");
        };
        assert_eq!(output.gprs[0] as u32, 42);
        // push eax: a 32-bit push (ESP - 4).
        let NativeOutcome::Completed(output) =
            sandbox.run_in(NativeMode::Compatibility, &[0x50], &input)
        else {
            panic!("push eax faulted in compatibility mode");
        };
        assert_eq!(output.gprs[4] as u32, (DATA_BASE + 0x800 - 4) as u32);
        assert_eq!(&sandbox.writable_data()[0x7fc..0x800], &41u32.to_le_bytes());
        // A fault in compatibility mode comes back, and 64-bit mode still works.
        input.gprs[3] = DATA_BASE + GUARD_PAGE * 4096;
        let NativeOutcome::Faulted(fault) =
            sandbox.run_in(NativeMode::Compatibility, &[0x8b, 0x03], &input)
        else {
            panic!("read of the guard page did not fault");
        };
        assert_eq!(
            (fault.vector, fault.error_code, fault.address),
            (14, 4, input.gprs[3])
        );
        let NativeOutcome::Completed(output) = sandbox.run(&[0x48, 0xff, 0xc0], &input) else {
            panic!("inc rax faulted after a compatibility-mode fault");
        };
        assert_eq!(output.gprs[0], 42);
    });
}

#[test]
fn a_16_bit_ldt_code_segment_runs_16_bit_code() {
    with_sandbox(|sandbox| {
        let flat = DataSegment {
            base: 0,
            limit: 0xf_ffff,
            page_granular: true,
            expand_down: false,
            writable: true,
            big: true,
        };
        let mode = NativeMode::Segmented {
            data: flat,
            stack: flat,
            code16: true,
        };
        let mut input = state();
        input.gprs[0] = 0x1_ffff;
        // 0x40 is INC AX in 16-bit code: the carry stays out of EAX's upper half.
        let NativeOutcome::Completed(output) = sandbox.run_in(mode, &[0x40], &input) else {
            panic!("inc ax faulted in 16-bit code");
        };
        assert_eq!(output.gprs[0] as u32, 0x1_0000);
        // mov ax, [bx+si] with a 16-bit address: BX + SI wraps at 64 KiB.
        let mut data = vec![0u8; (WRITABLE_PAGES * 4096) as usize];
        data[0x10..0x12].copy_from_slice(&0xbeefu16.to_le_bytes());
        sandbox.set_writable_data(&data);
        let mode = NativeMode::Segmented {
            data: DataSegment {
                base: DATA_BASE as u32,
                ..flat
            },
            stack: flat,
            code16: true,
        };
        input.gprs[3] = 0xfff8;
        input.gprs[6] = 0x18;
        let NativeOutcome::Completed(output) = sandbox.run_in(mode, &[0x8b, 0x00], &input) else {
            panic!("mov ax, [bx+si] faulted");
        };
        assert_eq!(output.gprs[0] as u16, 0xbeef);
    });
}
