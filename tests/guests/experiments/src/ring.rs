//! The page-ring experiment's arithmetic: two trapped frames A, A+4K seen through three
//! linear pages V, V+4K, V+8K (-> A, A+4K, A) form a ring of 2048 dwords. vCPU 0 runs
//! LOCK CMPXCHG8B at every dword V+4k (k = 0..2047): it adds [`CMPXCHG8B_LOW_ADD`] to
//! dword k and [`CMPXCHG8B_HIGH_ADD`] to dword k+1 (mod 2048; k = 1023 and 2047 split
//! across the frames, in both orders), retrying until the compare succeeds; vCPU 1 runs
//! LOCK XADD of [`XADD_ADD`] on every dword at the same time. Each word gets both
//! CMPXCHG8B increments once per pass and the XADD increment once per pass, in separate
//! bytes, so any lost update shows in the final value of the word it hit.

/// Dwords in the two frames.
pub const RING_WORDS: usize = 2048;
/// Bytes of the ring (two frames).
pub const RING_BYTES: usize = RING_WORDS * 4;
/// What one CMPXCHG8B adds to its low dword.
pub const CMPXCHG8B_LOW_ADD: u32 = 0x1;
/// What one CMPXCHG8B adds to its high dword.
pub const CMPXCHG8B_HIGH_ADD: u32 = 0x100;
/// What one LOCK XADD adds to its dword.
pub const XADD_ADD: u32 = 0x1_0000;
/// Sweeps of CMPXCHG8B per phase (below 128 so the two CMPXCHG8B bytes never carry).
pub const CMPXCHG8B_PASSES: u32 = 2;
/// Most XADDs the chasing vCPU makes to one dword (below 256: the byte never carries).
pub const MAX_XADDS_PER_WORD: u8 = 200;

const _: () = assert!(CMPXCHG8B_PASSES < 128);

/// The value dword `index` starts a phase with: its index's low byte in the top byte.
pub const fn initial_word(index: usize) -> u32 {
    ((index & 0xff) as u32) << 24
}

/// The value dword `index` must hold after a phase with no lost update, when it took
/// `xadds` XADDs.
pub const fn expected_word(index: usize, xadds: u8) -> u32 {
    initial_word(index)
        + CMPXCHG8B_PASSES * (CMPXCHG8B_LOW_ADD + CMPXCHG8B_HIGH_ADD)
        + xadds as u32 * XADD_ADD
}

/// The dwords a CMPXCHG8B at ring offset `4 * k` touches: (low, high).
pub const fn cmpxchg8b_words(k: usize) -> (usize, usize) {
    (k % RING_WORDS, (k + 1) % RING_WORDS)
}

/// The verdict over the final values of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingVerdict {
    /// Words that held their expected value.
    pub words_ok: u32,
    /// The first wrong word: (index, found, expected).
    pub first_wrong: Option<(usize, u32, u32)>,
}

impl RingVerdict {
    /// Checks `found(index)` for every dword of the ring, which took `xadds(index)`
    /// XADDs.
    pub fn check(found: impl Fn(usize) -> u32, xadds: impl Fn(usize) -> u8) -> RingVerdict {
        let mut verdict = RingVerdict::default();
        for index in 0..RING_WORDS {
            let (got, want) = (found(index), expected_word(index, xadds(index)));
            if got == want {
                verdict.words_ok += 1;
            } else if verdict.first_wrong.is_none() {
                verdict.first_wrong = Some((index, got, want));
            }
        }
        verdict
    }

    /// Whether every word was right.
    pub fn passed(&self) -> bool {
        self.words_ok as usize == RING_WORDS && self.first_wrong.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Runs the experiment's updates sequentially on a model ring (linear offsets wrap
    /// at two frames, as the alias page makes them; the chaser XADDs both words of each
    /// CMPXCHG8B once), losing the first XADD to `lose`; returns the final words and the
    /// XADD counts.
    fn model(lose: Option<usize>) -> (Vec<u32>, Vec<u8>) {
        let mut ring: Vec<u32> = (0..RING_WORDS).map(initial_word).collect();
        let mut xadds = std::vec![0u8; RING_WORDS];
        let mut lost = false;
        for _ in 0..CMPXCHG8B_PASSES {
            for k in 0..RING_WORDS {
                let (low, high) = cmpxchg8b_words(k);
                for word in [low, high] {
                    xadds[word] += 1;
                    if Some(word) == lose && !lost {
                        lost = true;
                    } else {
                        ring[word] = ring[word].wrapping_add(XADD_ADD);
                    }
                }
                ring[low] = ring[low].wrapping_add(CMPXCHG8B_LOW_ADD);
                ring[high] = ring[high].wrapping_add(CMPXCHG8B_HIGH_ADD);
            }
        }
        (ring, xadds)
    }

    #[test]
    fn splits_wrap_in_both_orders() {
        assert_eq!(cmpxchg8b_words(1023), (1023, 1024));
        assert_eq!(cmpxchg8b_words(2047), (2047, 0));
    }

    #[test]
    fn the_model_meets_the_expectation() {
        let (ring, xadds) = model(None);
        let verdict = RingVerdict::check(|index| ring[index], |index| xadds[index]);
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(expected_word(3, 4), 0x0304_0202);
    }

    #[test]
    fn a_lost_update_is_caught() {
        let (ring, xadds) = model(Some(1024));
        let verdict = RingVerdict::check(|index| ring[index], |index| xadds[index]);
        assert!(!verdict.passed());
        assert_eq!(verdict.words_ok as usize, RING_WORDS - 1);
        let want = expected_word(1024, xadds[1024]);
        assert_eq!(verdict.first_wrong, Some((1024, want - XADD_ADD, want)));
    }
}
