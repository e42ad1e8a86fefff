//! The register file's GPR reads and writes of every width, against iced-x86's
//! own description of each register (its full register and size).

use super::guest::long_mode;
use crate::state::Registers;
use iced_x86::Register;

#[test]
fn gpr_reads_and_writes_match_iced_registers() {
    let mut exit = long_mode(0);
    for (index, gpr) in exit.state.gprs.iter_mut().enumerate() {
        *gpr = 0x0123_4567_89ab_cdef_u64.rotate_left(8 * index as u32) ^ index as u64;
    }
    exit.state.rip = 0xffff_8000_1234_5678;
    let value = 0xfedc_ba98_7654_3210;
    for reg in Register::values() {
        let mut regs = Registers::from_exit(&exit);
        if !(reg.is_gpr8() || reg.is_gpr16() || reg.is_gpr32() || reg.is_gpr64()) {
            let expected = match reg {
                Register::RIP => Some(exit.state.rip),
                Register::EIP => Some(exit.state.rip & 0xffff_ffff),
                _ => None,
            };
            assert_eq!(regs.gpr(reg), expected, "{reg:?}");
            assert!(!regs.set_gpr(reg, value), "{reg:?}");
            continue;
        }
        let index = reg.full_register().number();
        let high_byte = matches!(
            reg,
            Register::AH | Register::CH | Register::DH | Register::BH
        );
        let shift = if high_byte { 8 } else { 0 };
        let mask = u64::MAX >> (64 - 8 * reg.size());
        let old = exit.state.gprs[index];
        assert_eq!(regs.gpr(reg), Some((old >> shift) & mask), "{reg:?}");
        assert!(regs.set_gpr(reg, value), "{reg:?}");
        let kept = if reg.is_gpr32() { 0 } else { !(mask << shift) };
        let mut expected = exit.state.gprs;
        expected[index] = (old & kept) | ((value & mask) << shift);
        assert_eq!(regs.gprs, expected, "{reg:?}");
    }
}
