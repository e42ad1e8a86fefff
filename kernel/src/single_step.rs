//! The single-step trap (RFLAGS.TF) after a guest instruction that the core or a
//! service carried out for the guest: what the VMCS pending-debug-exceptions field
//! must hold when the guest resumes, so that VM entry delivers the #DB the CPU would
//! have raised (Intel SDM Vol. 3, "Single-Step Exception Condition" and "Delivery of
//! Pending Debug Exceptions after VM Entry"). Pure logic, tested on the host.
//!
//! The CPU traps after an instruction that began with TF set, unless DEBUGCTL.BTF
//! turns single-step into branch-trap mode (then only branches trap; no instruction
//! the core or the emulator service carries out is a branch). A repeated string
//! instruction traps after every iteration, with RIP still at the instruction until
//! the last one. An instruction that faults, or that is re-executed from scratch,
//! does not trap. The trap is delivered by VM entry from the BS bit of the pending
//! debug exceptions field, which also sets DR6.BS as the CPU's own trap does.

/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;
/// IA32_DEBUGCTL.BTF: single-step on branches only.
pub const DEBUGCTL_BTF: u64 = 1 << 1;
/// Pending debug exceptions: a single-step trap is pending (BS, bit 14).
pub const PENDING_DEBUG_BS: u64 = 1 << 14;

/// How the instruction at an exit ended, as the core applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstructionEnd {
    /// It retired and RIP moved on.
    Retired,
    /// Some iterations of a repeated string instruction retired; RIP stays at it.
    Iterated,
    /// Nothing retired; it runs again from the start (a lost compare-exchange).
    Retried,
    /// An exception is delivered instead.
    Faulted,
}

/// Whether the CPU raises the single-step trap after an instruction that ended as
/// `end`, with `rflags` and `debugctl` the guest's when the instruction began.
pub fn traps_after(end: InstructionEnd, rflags: u64, debugctl: u64) -> bool {
    matches!(end, InstructionEnd::Retired | InstructionEnd::Iterated)
        && single_step_enabled(rflags, debugctl)
}

/// TF set and not in branch-trap mode.
pub fn single_step_enabled(rflags: u64, debugctl: u64) -> bool {
    rflags & RFLAGS_TF != 0 && debugctl & DEBUGCTL_BTF == 0
}

/// The pending-debug-exceptions field after an instruction that ended as `end`,
/// from the field the exit saved (`pending`) and whether the exit found blocking by
/// MOV SS or STI (`blocked`): BS is set exactly when this instruction's trap is
/// due, or when blocking holds the trap of the MOV SS before it.
///
/// Under blocking, the saved BS is that MOV SS's trap: it is kept, and a trap of
/// this instruction merges with it into one #DB, as on the CPU (VM entry also
/// requires BS to match TF while blocking is on). Without blocking, no earlier
/// trap can be pending when the instruction began, so a saved BS can only be the
/// single-step trap of the unfinished instruction itself, which some CPU models
/// (Bochs among them) record at an EPT-violation exit: it is replaced by the
/// decision for how the instruction really ended.
pub fn pending_after(
    pending: u64,
    end: InstructionEnd,
    blocked: bool,
    rflags: u64,
    debugctl: u64,
) -> u64 {
    let kept = if blocked {
        pending
    } else {
        pending & !PENDING_DEBUG_BS
    };
    if traps_after(end, rflags, debugctl) {
        kept | PENDING_DEBUG_BS
    } else {
        kept
    }
}

/// The pending-debug-exceptions field while blocking by MOV SS (or STI) is on:
/// VM entry then requires BS to be set exactly when TF is set and BTF is clear
/// (Intel SDM Vol. 3, "Checks on Guest Non-Register State").
pub fn pending_while_blocked(pending: u64, rflags: u64, debugctl: u64) -> u64 {
    let others = pending & !PENDING_DEBUG_BS;
    if single_step_enabled(rflags, debugctl) {
        others | PENDING_DEBUG_BS
    } else {
        others
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstructionEnd::*;

    const TF: u64 = RFLAGS_TF | 0x2;
    const NO_TF: u64 = 0x2;
    /// B0: a data breakpoint hit by the same instruction.
    const B0: u64 = 1;

    #[test]
    fn a_retired_instruction_with_tf_traps() {
        assert!(traps_after(Retired, TF, 0));
        assert_eq!(pending_after(0, Retired, false, TF, 0), PENDING_DEBUG_BS);
    }

    #[test]
    fn every_iteration_of_a_repeated_string_instruction_traps() {
        assert!(traps_after(Iterated, TF, 0));
        assert_eq!(pending_after(0, Iterated, false, TF, 0), PENDING_DEBUG_BS);
    }

    #[test]
    fn faults_and_retries_do_not_trap() {
        for end in [Retried, Faulted] {
            assert!(!traps_after(end, TF, 0));
            assert_eq!(pending_after(0, end, false, TF, 0), 0);
            // A trap the exit recorded for the unfinished instruction is dropped.
            assert_eq!(pending_after(PENDING_DEBUG_BS | B0, end, false, TF, 0), B0);
            // Under blocking by MOV SS it is the MOV SS's trap: it stays.
            assert_eq!(
                pending_after(PENDING_DEBUG_BS, end, true, TF, 0),
                PENDING_DEBUG_BS
            );
        }
    }

    #[test]
    fn no_trap_without_tf() {
        for end in [Retired, Iterated, Retried, Faulted] {
            assert!(!traps_after(end, NO_TF, 0));
            assert_eq!(pending_after(0, end, false, NO_TF, 0), 0);
        }
    }

    #[test]
    fn branch_trap_mode_does_not_trap_after_a_non_branch() {
        assert!(!traps_after(Retired, TF, DEBUGCTL_BTF));
        assert!(!traps_after(Iterated, TF, DEBUGCTL_BTF));
        assert_eq!(pending_after(0, Retired, false, TF, DEBUGCTL_BTF | 1), 0);
        // Not even when the exit recorded one for the instruction.
        assert_eq!(
            pending_after(PENDING_DEBUG_BS, Retired, false, TF, DEBUGCTL_BTF),
            0
        );
    }

    #[test]
    fn pending_bits_are_kept() {
        assert_eq!(
            pending_after(B0, Retired, false, TF, 0),
            B0 | PENDING_DEBUG_BS
        );
        // A trap left pending by a MOV SS is delivered once, not twice.
        for tf in [TF, NO_TF] {
            assert_eq!(
                pending_after(PENDING_DEBUG_BS, Retired, true, tf, 0),
                PENDING_DEBUG_BS
            );
        }
        // The exit's record of the instruction's own trap is not doubled either.
        assert_eq!(
            pending_after(PENDING_DEBUG_BS | B0, Retired, false, TF, 0),
            PENDING_DEBUG_BS | B0
        );
    }

    #[test]
    fn blocking_makes_bs_match_tf_and_btf() {
        assert_eq!(pending_while_blocked(0, TF, 0), PENDING_DEBUG_BS);
        assert_eq!(pending_while_blocked(PENDING_DEBUG_BS, NO_TF, 0), 0);
        assert_eq!(
            pending_while_blocked(PENDING_DEBUG_BS | B0, TF, DEBUGCTL_BTF),
            B0
        );
        assert_eq!(pending_while_blocked(B0, TF, 0), B0 | PENDING_DEBUG_BS);
    }
}
