//! Instruction semantics, one module per family, and the dispatch from
//! iced-x86's mnemonic to the family that emulates it.

mod arith;
mod atomic;
mod bits;
mod cache;
mod cond;
mod data;
mod muldiv;
mod segment;
mod shift;
mod stack;
mod string;
mod undefined;
mod vector;

use crate::Guest;
use crate::fault::Fault;
use crate::machine::Machine;
use iced_x86::{Instruction, Mnemonic};

pub(crate) use undefined::undefined_opcode;

/// How far an instruction got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Done: RIP moves past it.
    Complete,
    /// A REP instruction made progress but is not done: RIP stays.
    Partial,
}

/// Emulates one decoded instruction on the machine's private state.
// MOV, the commonest MMIO access by far, is dispatched before the match
// below: with every family inlined into it, the match's function saves six
// registers and a large frame (32 instructions a MOV, 1352.7 to 1320.7).
#[inline(always)]
pub(crate) fn execute<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
) -> Result<Progress, Fault> {
    let mnemonic = i.mnemonic();
    if mnemonic == Mnemonic::Mov {
        return data::mov(m, i).map(|()| Progress::Complete);
    }
    dispatch(m, i, mnemonic)
}

/// Everything but MOV (see [`execute`]).
#[inline(never)]
fn dispatch<G: Guest>(
    m: &mut Machine<'_, G>,
    i: &Instruction,
    mnemonic: Mnemonic,
) -> Result<Progress, Fault> {
    use Mnemonic as M;
    // MOV itself never gets here. No mnemonic matched by name below is a
    // string instruction (those are MOVSB..MOVSQ, STOS, LODS, CMPS, SCAS),
    // so the check waits for the fallback and the common instructions skip
    // it.
    let done = match mnemonic {
        M::Movzx | M::Movsx | M::Movsxd => data::extend(m, i),
        M::Movbe => data::movbe(m, i),
        M::Movnti | M::Movdiri => data::mov(m, i),
        M::Movdir64b => data::movdir64b(m, i),
        M::Xchg => atomic::xchg(m, i),
        M::Xadd => atomic::xadd(m, i),
        M::Cmpxchg => atomic::cmpxchg(m, i),
        M::Cmpxchg8b | M::Cmpxchg16b => atomic::cmpxchg_double(m, i),
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor => arith::binary(m, i),
        M::Cmp => arith::compare(m, i),
        M::Test => arith::test(m, i),
        M::Inc | M::Dec | M::Neg | M::Not => arith::unary(m, i),
        M::Mul | M::Imul => muldiv::multiply(m, i),
        M::Div | M::Idiv => muldiv::divide(m, i),
        M::Bt | M::Bts | M::Btr | M::Btc => bits::bit_test(m, i),
        M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => bits::count(m, i),
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
            shift::group2(m, i)
        }
        M::Shld | M::Shrd => shift::double(m, i),
        M::Push | M::Pop => stack::push_pop(m, i),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => segment::load_far_pointer(m, i),
        M::Clflush | M::Clflushopt | M::Clwb => cache::flush(m, i),
        M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Prefetchwt1
        | M::Prefetch
        | M::Nop => Ok(()),
        _ if string::is_string_instruction(i) => return string::execute(m, i),
        _ if cond::is_conditional(mnemonic) => cond::execute(m, i),
        _ if vector::is_vector_move(mnemonic) => vector::execute(m, i),
        _ => Err(Fault::Unsupported("instruction not emulated")),
    };
    done.map(|()| Progress::Complete)
}
