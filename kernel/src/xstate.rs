//! Guest extended (x87/SSE/AVX) state: saved by the exit path before any Rust
//! code runs, restored just before VM entry, and the YMM registers read from
//! and written to the save area for the exit message and the reply.

use abi::VectorRegisters;

/// An XSAVE (standard format) or FXSAVE area.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct XsaveArea(pub [u8; 4096]);

const XMM_OFFSET: usize = 160;
const XSTATE_BV_OFFSET: usize = 512;
const SSE_BIT: u64 = 1 << 1;
const AVX_BIT: u64 = 1 << 2;

/// Offset of the YMM upper halves in the standard XSAVE layout
/// (CPUID.(EAX=0DH,ECX=2).EBX), or `None` without AVX.
pub fn ymm_upper_offset() -> Option<usize> {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 28) == 0 || leaf1.ecx & (1 << 26) == 0 {
        return None;
    }
    let leaf = core::arch::x86_64::__cpuid_count(0xd, 2);
    (leaf.eax == 256 && (leaf.ebx as usize) + 256 <= 4096).then_some(leaf.ebx as usize)
}

impl XsaveArea {
    fn xstate_bv(&self) -> u64 {
        u64::from_le_bytes(
            self.0[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8]
                .try_into()
                .unwrap_or([0; 8]),
        )
    }

    /// Copies XMM0-15 (and the YMM upper halves when `ymm_upper` is given and
    /// the state is in use) into `vectors`.
    pub fn read_vectors(
        &self,
        ymm_upper: Option<usize>,
        xsave: bool,
        vectors: &mut VectorRegisters,
    ) {
        let bv = if xsave { self.xstate_bv() } else { SSE_BIT };
        for (n, ymm) in vectors.ymm.iter_mut().enumerate() {
            *ymm = [0; 32];
            if bv & SSE_BIT != 0 {
                ymm[..16].copy_from_slice(&self.0[XMM_OFFSET + 16 * n..XMM_OFFSET + 16 * n + 16]);
            }
            if let Some(upper) = ymm_upper.filter(|_| bv & AVX_BIT != 0) {
                ymm[16..].copy_from_slice(&self.0[upper + 16 * n..upper + 16 * n + 16]);
            }
        }
    }

    /// Writes the registers selected by `mask` back, marking their state
    /// components in use so XRSTOR loads them.
    pub fn write_vectors(
        &mut self,
        ymm_upper: Option<usize>,
        xsave: bool,
        mask: u32,
        vectors: &VectorRegisters,
    ) {
        let mut bv = if xsave { self.xstate_bv() } else { SSE_BIT };
        // A component not in use holds stale bytes: zero it before marking it used.
        if bv & SSE_BIT == 0 {
            self.0[XMM_OFFSET..XMM_OFFSET + 256].fill(0);
        }
        if let Some(upper) = ymm_upper.filter(|_| bv & AVX_BIT == 0) {
            self.0[upper..upper + 256].fill(0);
        }
        for (n, ymm) in vectors
            .ymm
            .iter()
            .enumerate()
            .filter(|(n, _)| mask & (1 << n) != 0)
        {
            self.0[XMM_OFFSET + 16 * n..XMM_OFFSET + 16 * n + 16].copy_from_slice(&ymm[..16]);
            bv |= SSE_BIT;
            if let Some(upper) = ymm_upper {
                self.0[upper + 16 * n..upper + 16 * n + 16].copy_from_slice(&ymm[16..]);
                bv |= AVX_BIT;
            }
        }
        if xsave {
            self.0[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
        }
    }
}
