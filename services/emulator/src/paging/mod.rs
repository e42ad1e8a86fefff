//! The guest page walk: 32-bit, PAE, 4-level and 5-level paging, with the
//! permission checks (P, R/W, U/S, NX, WP, SMEP, SMAP, PKU, reserved bits) and
//! the #PF error code the CPU reports, and the accessed/dirty updates made with
//! compare-exchange so that a racing guest CPU never loses a bit. This module
//! has the paging context, the kinds of access and `translate`; `walk` the
//! walk itself; `memo` the walks remembered between instructions.

mod memo;
mod walk;

use crate::Guest;
use crate::fault::Fault;
use crate::state::control;
use walk::{
    ENTRY_NX, Entries, Leaf, MAX_LEVELS, Rights, Unrecorded, WalkStop, check_permissions,
    read_entry, set_accessed_dirty, walk, walk_from_table,
};

pub(crate) use memo::WalkMemo;

/// The control state a walk depends on, with what follows from it worked
/// out once per instruction (not once per walk).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PagingContext {
    cr0: u64,
    cr4: u64,
    pkru: u32,
    /// RFLAGS.AC, which lets supervisor code reach user pages under SMAP.
    alignment_flag: bool,
    /// How many times a walk is repeated when an accessed/dirty update loses a
    /// race before the instruction is retried as a whole.
    attempts: u32,
    format: Format,
    /// The first table of a walk (the page directory, PDPT or PML4/PML5).
    root: u64,
    /// The address bits of an entry (up to MAXPHYADDR) of the wide formats.
    address_mask: u64,
    /// Bits reserved in every entry of the wide formats (above MAXPHYADDR;
    /// XD without EFER.NXE; the PAE PDPTE's upper bits).
    always_reserved: u64,
}

impl PagingContext {
    /// The context of the guest's CR0, CR3, CR4, EFER, PKRU and RFLAGS.AC,
    /// for a CPU of `physical` address bits. Inlined, so that the fields
    /// are stored where they stay: copied out of a returned temporary,
    /// their narrow stores stalled the wide loads of the copy.
    #[inline(always)]
    pub(crate) fn new(
        control: &ControlState,
        alignment_flag: bool,
        physical: &PhysicalMasks,
        attempts: u32,
    ) -> PagingContext {
        let format = if control.cr4 & control::CR4_PAE == 0 {
            Format::Bits32
        } else if control.efer & control::EFER_LMA == 0 {
            Format::Pae
        } else if control.cr4 & control::CR4_LA57 != 0 {
            Format::Level5
        } else {
            Format::Level4
        };
        let nxe = control.efer & control::EFER_NXE != 0;
        let address_mask = physical.address_mask;
        let mut always_reserved = physical.reserved;
        if format == Format::Pae {
            always_reserved |= 0x7ff0_0000_0000_0000;
        }
        if !nxe {
            always_reserved |= ENTRY_NX;
        }
        let root = match format {
            Format::Bits32 => control.cr3 & 0xffff_f000,
            Format::Pae => control.cr3 & 0xffff_ffe0,
            Format::Level4 | Format::Level5 => control.cr3 & address_mask,
        };
        PagingContext {
            cr0: control.cr0,
            cr4: control.cr4,
            pkru: control.pkru,
            alignment_flag,
            attempts,
            format,
            root,
            address_mask,
            always_reserved,
        }
    }

    /// EFER.NXE: XD is not reserved. Read back from the mask (only a fault
    /// needs it), as `physical_bits` is: as fields of their own, stored for
    /// every instruction, they cost 13 more instructions per emulated MOV.
    fn nxe(&self) -> bool {
        self.always_reserved & ENTRY_NX == 0
    }

    /// CR4.PKE in a format that has protection keys (4- and 5-level).
    /// Worked out where it is used, as `nxe` is: stored with the context
    /// it cost 14 more instructions per emulated MOV.
    fn protection_keys(&self) -> bool {
        self.cr4 & control::CR4_PKE != 0 && matches!(self.format, Format::Level4 | Format::Level5)
    }

    /// MAXPHYADDR, clamped to 32..=52 (the highest address bit), for PSE-36.
    fn physical_bits(&self) -> u32 {
        u64::BITS - self.address_mask.leading_zeros()
    }
}

/// The masks of MAXPHYADDR, which comes from the configuration: worked
/// out once for an [`crate::Emulator`], not for every instruction (from
/// the clamped address bits in every `PagingContext::new`, they cost 15
/// more instructions an emulated MOV).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PhysicalMasks {
    /// The address bits of an entry of the wide formats.
    address_mask: u64,
    /// The bits between MAXPHYADDR and bit 51, reserved in every entry.
    reserved: u64,
}

impl PhysicalMasks {
    /// The masks of a CPU with `physical_bits` of physical address
    /// (clamped to 32..=52).
    pub(crate) const fn new(physical_bits: u8) -> PhysicalMasks {
        let physical_bits = if physical_bits < 32 {
            32
        } else if physical_bits > 52 {
            52
        } else {
            physical_bits
        };
        let below = (1u64 << physical_bits) - 1;
        PhysicalMasks {
            address_mask: below & !0xfff,
            reserved: ((1u64 << 52) - 1) & !below,
        }
    }
}

/// The registers paging depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ControlState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub pkru: u32,
}

/// What kind of access is being translated. One byte of flags: as four
/// `bool` fields it was kept in memory field by field and passed to a walk
/// as one word, a load that stalled on the narrow stores (store
/// forwarding), once per iteration of a REP string instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AccessKind(u8);

impl AccessKind {
    const WRITE: u8 = 1 << 0;
    const FETCH: u8 = 1 << 1;
    const USER: u8 = 1 << 2;
    const IMPLICIT_SUPERVISOR: u8 = 1 << 3;

    /// A data read or write by code at CPL `cpl`.
    pub(crate) const fn data(write: bool, cpl: u8) -> AccessKind {
        AccessKind(AccessKind::write_bit(write) | AccessKind::user_bit(cpl))
    }

    /// An instruction fetch by code at CPL `cpl`.
    pub(crate) fn fetch(cpl: u8) -> AccessKind {
        AccessKind(AccessKind::FETCH | AccessKind::user_bit(cpl))
    }

    /// A supervisor access the CPU makes on its own (descriptor tables and
    /// the like), at any CPL: SMAP applies whatever RFLAGS.AC says.
    pub(crate) fn implicit_supervisor(write: bool) -> AccessKind {
        AccessKind(AccessKind::write_bit(write) | AccessKind::IMPLICIT_SUPERVISOR)
    }

    const fn write_bit(write: bool) -> u8 {
        if write { AccessKind::WRITE } else { 0 }
    }

    const fn user_bit(cpl: u8) -> u8 {
        if cpl == 3 { AccessKind::USER } else { 0 }
    }

    /// The kind as bits (below 16).
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn write(self) -> bool {
        self.0 & AccessKind::WRITE != 0
    }

    pub(crate) fn fetch_access(self) -> bool {
        self.0 & AccessKind::FETCH != 0
    }

    /// A user-mode access (CPL 3 and not an implicit supervisor access).
    pub(crate) fn user(self) -> bool {
        self.0 & AccessKind::USER != 0
    }

    pub(crate) fn is_implicit_supervisor(self) -> bool {
        self.0 & AccessKind::IMPLICIT_SUPERVISOR != 0
    }
}

/// #PF error-code bits.
pub(crate) mod pf {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RESERVED: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
    pub const PROTECTION_KEY: u32 = 1 << 5;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Bits32,
    Pae,
    Level4,
    Level5,
}

/// The last page table a successful walk reached (PAE, 4- and 5-level
/// paging): a walk in the same 2 MiB region starts there, as the CPU's
/// paging-structure caches let it. Valid for one instruction; the walks
/// that outlive it are in the [`WalkMemo`], when there is one.
#[derive(Debug, Default)]
pub(crate) struct WalkCache<'m> {
    table: Option<CachedTable>,
    memo: Option<&'m mut WalkMemo>,
}

impl<'m> WalkCache<'m> {
    /// A cache that also recalls and remembers walks in `memo`.
    pub(crate) fn with_memo(memo: Option<&'m mut WalkMemo>) -> WalkCache<'m> {
        WalkCache { table: None, memo }
    }

    /// A remembered page table of `linear`'s region whose upper entries
    /// are unchanged (see `translate` for why this instruction's own table
    /// is not looked at). Always inlined, as `translate` is (see there).
    #[inline(always)]
    fn table_for<G: Guest>(
        &mut self,
        guest: &mut G,
        ctx: &PagingContext,
        linear: u64,
    ) -> Option<CachedTable> {
        let table = self.memo.as_deref()?.recall(guest, ctx, linear)?;
        self.table = Some(table);
        Some(table)
    }

    /// Keeps the page table a successful walk reached; a walk from the root
    /// (`entries` recorded) is also remembered for later instructions.
    fn remember(&mut self, ctx: &PagingContext, table: Option<CachedTable>, entries: &Entries) {
        let Some(table) = table else {
            return;
        };
        self.table = Some(table);
        if let Some(memo) = self.memo.as_deref_mut() {
            memo.remember(ctx, table, entries);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct CachedTable {
    /// `linear >> 21` of the region the table maps.
    region: u64,
    table: u64,
    /// Rights of the entries above the table (whose A bits are set), as
    /// in [`Rights`].
    rights: Rights,
}

/// The guest-physical address of `linear` for `kind`, after setting the
/// accessed (and for writes dirty) bits, or the fault the CPU would raise.
/// For a region whose page table this instruction has not reached: its
/// callers are the instruction's first translation (the fetch) and
/// [`translate_in_table`]'s misses, so this instruction's table is not
/// looked at again (2 instructions an emulated MOV). Always inlined, with
/// the memo's recall: left to the compiler, `table_for` or the recall
/// became calls of their own, 15 to 27 more instructions per emulated MOV.
#[inline(always)]
pub(crate) fn translate<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Result<u64, Fault> {
    if ctx.cr0 & control::CR0_PG == 0 {
        return Ok(linear & 0xffff_ffff);
    }
    let Some(table) = cache.table_for(guest, ctx, linear) else {
        return translate_from_root(guest, ctx, linear, kind, cache);
    };
    translate_from_table(guest, ctx, linear, kind, table, cache)
}

/// [`translate`] when this instruction's page table maps `linear`'s region
/// (`None` otherwise): the same walk from that table, for the data
/// accesses, whose translation is then inlined into the caller.
#[inline(always)]
pub(crate) fn translate_in_table<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Option<Result<u64, Fault>> {
    // No CR0.PG test: only a walk caches a table, and there are walks only
    // with paging on (2 instructions a data access).
    let table = cache.table.filter(|table| table.region == linear >> 21)?;
    Some(translate_from_table(guest, ctx, linear, kind, table, cache))
}

/// The walk from `table`, the page table of `linear`'s region, for both
/// callers above.
#[inline(always)]
fn translate_from_table<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    table: CachedTable,
    cache: &mut WalkCache,
) -> Result<u64, Fault> {
    let walked = walk_from_table(guest, ctx, linear, table, &mut Unrecorded);
    match standing(walked, ctx, kind, linear)? {
        Some(leaf) => Ok(leaf.physical),
        None => translate_setting_accessed_dirty(guest, ctx, linear, kind, cache),
    }
}

/// A walk from the root table, which records its entries for the memo. Out
/// of line: with the memo, most walks start at a page table.
#[inline(never)]
fn translate_from_root<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Result<u64, Fault> {
    let mut entries = Entries::new(ctx.format);
    let walked = walk(guest, ctx, linear, None, &mut entries);
    match standing(walked, ctx, kind, linear)? {
        Some(leaf) => {
            cache.remember(ctx, leaf.table, &entries);
            Ok(leaf.physical)
        }
        None => translate_setting_accessed_dirty(guest, ctx, linear, kind, cache),
    }
}

/// The leaf of a walk that stands as it is: `Ok(None)` when the access is
/// allowed but an accessed or dirty bit must be set first.
#[inline(always)]
fn standing(
    walked: Result<Leaf, WalkStop>,
    ctx: &PagingContext,
    kind: AccessKind,
    linear: u64,
) -> Result<Option<Leaf>, Fault> {
    let checked = walked.and_then(|leaf| check_permissions(ctx, &leaf, kind).map(|()| leaf));
    match checked {
        Ok(leaf) if leaf.needs_accessed_dirty(kind.write()) => Ok(None),
        Ok(leaf) => Ok(Some(leaf)),
        Err(stop) => Err(stop.into_fault(ctx, kind, linear)),
    }
}

/// A walk that must set accessed or dirty bits: made again with its
/// entries recorded, each bit set by a compare-exchange against the value
/// the walk read, and repeated (up to the configured attempts) when one
/// loses a race. Out of line: inlined, its calls made every walk spill
/// registers.
#[cold]
#[inline(never)]
fn translate_setting_accessed_dirty<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Result<u64, Fault> {
    for _ in 0..ctx.attempts.max(1) {
        let mut entries = Entries::new(ctx.format);
        let walked = walk(guest, ctx, linear, cache.table, &mut entries).and_then(|leaf| {
            check_permissions(ctx, &leaf, kind)?;
            set_accessed_dirty(guest, &entries, kind.write())?;
            Ok(leaf)
        });
        match walked {
            Ok(leaf) => {
                // Not remembered beyond this instruction: the entries were
                // read before their accessed bits were set.
                if leaf.table.is_some() {
                    cache.table = leaf.table;
                }
                return Ok(leaf.physical);
            }
            Err(WalkStop::Race) => {}
            Err(stop) => return Err(stop.into_fault(ctx, kind, linear)),
        }
    }
    Err(Fault::Retry)
}
