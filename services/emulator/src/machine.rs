//! The emulation context of one instruction: the guest door, the exit state,
//! the private register file, and the check that what the instruction touches
//! matches the guest-linear address the exit reported.

use crate::EmulatorConfig;
use crate::Guest;
use crate::fault::Fault;
use crate::paging::{
    AccessKind, ControlState, PagingContext, PhysicalMasks, WalkCache, WalkMemo, translate,
    translate_in_table,
};
use crate::state::{Mode, Registers, rflags};
use abi::ExitMessage;
use abi::exit::ept_qualification;

/// Everything one `emulate` call works with.
pub(crate) struct Machine<'a, G: Guest> {
    pub guest: &'a mut G,
    pub exit: &'a ExitMessage,
    pub config: &'a EmulatorConfig,
    pub regs: Registers,
    pub mode: Mode,
    pub cpl: u8,
    /// Whether the exit's guest-linear address has been found among the
    /// linear ranges the instruction touched so far (always true when the
    /// exit does not report one).
    linear_confirmed: bool,
    /// Translations made during this instruction (a REP instruction reuses
    /// them, as the CPU's TLB would).
    pub translations: TranslationCache,
    walks: WalkCache<'a>,
    /// The paging state of every walk of this instruction (no emulated
    /// instruction changes it, RFLAGS.AC included). Made once: rebuilding
    /// it before each walk made the walk's first loads wait for the narrow
    /// stores that had just built it.
    paging: PagingContext,
}

/// A few linear-page translations, each valid for one kind of access (the
/// walk that made it already checked the rights and set the A/D bits).
/// Filled in order and searched up to the count only: most instructions
/// make one or two translations, and an empty cache then costs nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TranslationCache {
    /// The linear page with the kind in its low bits (one compare per
    /// entry, and a smaller cache to clear for every instruction), and the
    /// frame.
    entries: [(u64, u64); TRANSLATIONS],
    /// How many translations were inserted: the first `TRANSLATIONS` fill
    /// the entries in order, each later one replaces the oldest.
    inserted: usize,
}

const TRANSLATIONS: usize = 4;

impl TranslationCache {
    const EMPTY: TranslationCache = TranslationCache {
        entries: [(0, 0); TRANSLATIONS],
        inserted: 0,
    };

    fn key(linear: u64, kind: AccessKind) -> u64 {
        (linear & !0xfff) | u64::from(kind.bits())
    }

    /// The frame of `linear`'s page for `kind`, if cached.
    #[inline]
    pub(crate) fn lookup(&self, linear: u64, kind: AccessKind) -> Option<u64> {
        let key = TranslationCache::key(linear, kind);
        self.entries
            .get(..self.inserted.min(TRANSLATIONS))?
            .iter()
            .find(|(cached, _)| *cached == key)
            .map(|(_, frame)| *frame)
    }

    #[inline]
    pub(crate) fn insert(&mut self, linear: u64, kind: AccessKind, frame: u64) {
        if let Some(entry) = self.entries.get_mut(self.inserted % TRANSLATIONS) {
            *entry = (TranslationCache::key(linear, kind), frame);
        }
        self.inserted += 1;
    }
}

impl<'a, G: Guest> Machine<'a, G> {
    /// The context of one instruction, for `config` and its `physical`
    /// masks; walks are recalled from and remembered in `memo` when there
    /// is one.
    pub(crate) fn new(
        guest: &'a mut G,
        exit: &'a ExitMessage,
        config: &'a EmulatorConfig,
        physical: &PhysicalMasks,
        memo: Option<&'a mut WalkMemo>,
    ) -> Machine<'a, G> {
        let (mode, cpl) = Mode::of(exit);
        let state = &exit.state;
        let paging = PagingContext::new(
            &ControlState {
                cr0: state.cr0,
                cr3: state.cr3,
                cr4: state.cr4,
                efer: state.efer,
                pkru: state.pkru,
            },
            state.rflags & rflags::AC != 0,
            physical,
            config.page_walk_attempts,
        );
        Machine {
            guest,
            exit,
            config,
            regs: Registers::from_exit(exit),
            mode,
            cpl,
            linear_confirmed: exit.qualification & ept_qualification::GUEST_LINEAR_VALID == 0,
            translations: TranslationCache::EMPTY,
            walks: WalkCache::with_memo(memo),
            paging,
        }
    }

    /// The guest-physical address of `linear` for `kind` (through the
    /// per-instruction translation cache). Out of line, for the rare
    /// translations (a range's second page); see
    /// [`Machine::translate_inlined`].
    #[inline(never)]
    pub(crate) fn translate(&mut self, linear: u64, kind: AccessKind) -> Result<u64, Fault> {
        self.translate_inlined(linear, kind)
    }

    /// [`Machine::translate`] inlined into the caller, with the walk from
    /// this instruction's page table (the common data access); other walks
    /// are out of line. Called, the translation saved six registers and
    /// returned its `Result` through memory: inlined (with
    /// [`Machine::map_linear`]'s first page, for data accesses), the
    /// emulated MOV store makes 19 fewer instructions, the load 36, REP
    /// MOVSD 12% fewer (about 10% less time); 17 KB more code.
    #[inline(always)]
    pub(crate) fn translate_inlined(
        &mut self,
        linear: u64,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        if let Some(frame) = self.translations.lookup(linear, kind) {
            return Ok(frame | (linear & 0xfff));
        }
        let physical =
            match translate_in_table(self.guest, &self.paging, linear, kind, &mut self.walks) {
                Some(walked) => walked?,
                None => self.translate_walking(linear, kind)?,
            };
        self.translations.insert(linear, kind, physical & !0xfff);
        Ok(physical)
    }

    /// [`Machine::translate`] from the memo or the root table.
    #[inline(never)]
    fn translate_walking(&mut self, linear: u64, kind: AccessKind) -> Result<u64, Fault> {
        translate(self.guest, &self.paging, linear, kind, &mut self.walks)
    }

    /// The guest-physical address of `linear` for `kind`, by a page walk,
    /// bypassing the translation cache: for the first page of the
    /// instruction fetch, the instruction's first translation (the cache is
    /// empty, and no later access is a fetch of that page). Inlined into
    /// the fetch with the whole walk: without the cache's lookup and
    /// insertion and the call of `translate` (which saves six registers and
    /// returns the `Result` through memory), the emulated MOV makes 49
    /// fewer instructions.
    #[inline(always)]
    pub(crate) fn walk(&mut self, linear: u64, kind: AccessKind) -> Result<u64, Fault> {
        translate(self.guest, &self.paging, linear, kind, &mut self.walks)
    }

    /// Notes that the instruction touches `len` bytes at `linear`.
    pub(crate) fn note_linear_range(&mut self, linear: u64, len: u64) {
        if !self.linear_confirmed && self.exit.guest_linear.wrapping_sub(linear) < len {
            self.linear_confirmed = true;
        }
    }

    /// Before a side effect, and before retiring: the exit's guest-linear
    /// address must be one the instruction touched, or the guest changed its
    /// code or page tables under us and the instruction is re-executed.
    pub(crate) fn require_linear_confirmed(&self) -> Result<(), Fault> {
        if self.linear_confirmed {
            Ok(())
        } else {
            Err(Fault::Retry)
        }
    }
}

/// The mask of an address of `bytes` bytes (2, 4 or 8).
pub(crate) fn address_mask(bytes: u32) -> u64 {
    match bytes {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}
