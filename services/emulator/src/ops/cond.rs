//! Conditional instructions with a memory operand: CMOVcc and SETcc.

use crate::Guest;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::operand::operand_size;
use crate::state::rflags::{CF, OF, PF, SF, ZF};
use iced_x86::{ConditionCode, Instruction, Mnemonic};

/// Whether `mnemonic` is a CMOVcc or SETcc.
pub(super) fn is_conditional(mnemonic: Mnemonic) -> bool {
    is_setcc(mnemonic) || is_cmovcc(mnemonic)
}

fn is_cmovcc(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Cmova
            | M::Cmovae
            | M::Cmovb
            | M::Cmovbe
            | M::Cmove
            | M::Cmovg
            | M::Cmovge
            | M::Cmovl
            | M::Cmovle
            | M::Cmovne
            | M::Cmovno
            | M::Cmovnp
            | M::Cmovns
            | M::Cmovo
            | M::Cmovp
            | M::Cmovs
    )
}

fn is_setcc(mnemonic: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mnemonic,
        M::Seta
            | M::Setae
            | M::Setb
            | M::Setbe
            | M::Sete
            | M::Setg
            | M::Setge
            | M::Setl
            | M::Setle
            | M::Setne
            | M::Setno
            | M::Setnp
            | M::Setns
            | M::Seto
            | M::Setp
            | M::Sets
    )
}

/// Whether condition `code` holds for `flags`.
pub(crate) fn holds(code: ConditionCode, flags: u64) -> bool {
    let set = |bit: u64| flags & bit != 0;
    match code {
        ConditionCode::o => set(OF),
        ConditionCode::no => !set(OF),
        ConditionCode::b => set(CF),
        ConditionCode::ae => !set(CF),
        ConditionCode::e => set(ZF),
        ConditionCode::ne => !set(ZF),
        ConditionCode::be => set(CF) || set(ZF),
        ConditionCode::a => !set(CF) && !set(ZF),
        ConditionCode::s => set(SF),
        ConditionCode::ns => !set(SF),
        ConditionCode::p => set(PF),
        ConditionCode::np => !set(PF),
        ConditionCode::l => set(SF) != set(OF),
        ConditionCode::ge => set(SF) == set(OF),
        ConditionCode::le => set(ZF) || set(SF) != set(OF),
        ConditionCode::g => !set(ZF) && set(SF) == set(OF),
        _ => false,
    }
}

/// CMOVcc always reads its source (and always writes a 32-bit destination,
/// zeroing the upper half); SETcc stores 1 or 0.
pub(super) fn execute<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    let taken = holds(i.condition_code(), m.regs.rflags);
    let size = operand_size(i, 0);
    if is_setcc(i.mnemonic()) {
        return m.write_operand(i, 0, 1, u64::from(taken));
    }
    let source = m.read_operand(i, 1, size)?;
    let current = m.read_operand(i, 0, size)?;
    m.write_operand(i, 0, size, if taken { source } else { current })
}
