//! Cache-line flushes on emulated memory: no effect beyond the checks the CPU
//! makes (segmentation and paging as a one-byte read).

use crate::Guest;
use crate::fault::Fault;
use crate::machine::Machine;
use crate::memory::{Alignment, DataAccess};
use iced_x86::Instruction;

/// CLFLUSH, CLFLUSHOPT, CLWB.
pub(super) fn flush<G: Guest>(m: &mut Machine<'_, G>, i: &Instruction) -> Result<(), Fault> {
    m.map_memory_operand(i, 1, DataAccess::Read, Alignment::Checked(1))?;
    Ok(())
}
