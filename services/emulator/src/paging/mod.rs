//! The guest page walk: 32-bit, PAE, 4-level and 5-level paging, with the
//! permission checks (P, R/W, U/S, NX, WP, SMEP, SMAP, PKU, reserved bits) and
//! the #PF error code the CPU reports, and the accessed/dirty updates made with
//! compare-exchange so that a racing guest CPU never loses a bit.

mod memo;

use crate::fault::Fault;
use crate::state::control;
use crate::{Guest, MemoryError};

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
    nxe: bool,
    /// The first table of a walk (the page directory, PDPT or PML4/PML5).
    root: u64,
    /// The address bits of an entry (up to MAXPHYADDR) of the wide formats.
    address_mask: u64,
    /// Bits reserved in every entry of the wide formats (above MAXPHYADDR;
    /// XD without EFER.NXE; the PAE PDPTE's upper bits).
    always_reserved: u64,
    /// MAXPHYADDR clamped for PSE-36 (32-bit paging).
    physical_bits: u32,
}

impl PagingContext {
    /// The context of the guest's CR0, CR3, CR4, EFER, PKRU and RFLAGS.AC,
    /// for a CPU with `physical_bits` of physical address. Inlined, so that
    /// the fields are stored where they stay: copied out of a returned
    /// temporary, their narrow stores stalled the wide loads of the copy.
    #[inline(always)]
    pub(crate) fn new(
        control: &ControlState,
        alignment_flag: bool,
        physical_bits: u8,
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
        let physical_bits = u32::from(physical_bits).clamp(32, 52);
        let address_mask = ((1u64 << physical_bits) - 1) & !0xfff;
        // Bits between MAXPHYADDR and bit 51 are reserved in every entry.
        let mut always_reserved = ((1u64 << 52) - 1) & !((1u64 << physical_bits) - 1);
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
            nxe,
            root,
            address_mask,
            always_reserved,
            physical_bits,
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
    pub(crate) fn data(write: bool, cpl: u8) -> AccessKind {
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

    fn write_bit(write: bool) -> u8 {
        if write { AccessKind::WRITE } else { 0 }
    }

    fn user_bit(cpl: u8) -> u8 {
        if cpl == 3 { AccessKind::USER } else { 0 }
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

const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_WRITABLE: u64 = 1 << 1;
const ENTRY_USER: u64 = 1 << 2;
const ENTRY_ACCESSED: u64 = 1 << 5;
const ENTRY_DIRTY: u64 = 1 << 6;
const ENTRY_LARGE: u64 = 1 << 7;
const ENTRY_NX: u64 = 1 << 63;

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

    /// The page table of `linear`'s region: this instruction's, or a
    /// remembered one whose upper entries are unchanged.
    #[inline]
    fn table_for<G: Guest>(
        &mut self,
        guest: &mut G,
        ctx: &PagingContext,
        linear: u64,
    ) -> Option<CachedTable> {
        if let Some(table) = self.table
            && table.region == linear >> 21
        {
            return Some(table);
        }
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

/// The rights a walk's entries grant together: R/W and U/S of every entry
/// ANDed, XD of every entry ORed. Kept as entry bits in whole words (not
/// separate flags) so that storing and reloading them never combines
/// narrow stores into a wider load, which stalls store forwarding.
#[derive(Clone, Copy, Debug)]
struct Rights {
    /// `ENTRY_WRITABLE | ENTRY_USER` where every entry has them.
    allowed: u64,
    /// `ENTRY_NX` if any entry has it (it is reserved without EFER.NXE, so
    /// an entry that has it then faults before it counts).
    no_execute: u64,
}

impl Rights {
    /// Rights before any entry: everything allowed.
    const ALL: Rights = Rights {
        allowed: ENTRY_WRITABLE | ENTRY_USER,
        no_execute: 0,
    };

    /// Adds a paging-structure entry's rights.
    fn restrict(&mut self, entry: u64) {
        self.allowed &= entry;
        self.no_execute |= entry & ENTRY_NX;
    }

    fn writable(&self) -> bool {
        self.allowed & ENTRY_WRITABLE != 0
    }

    fn user(&self) -> bool {
        self.allowed & ENTRY_USER != 0
    }

    fn no_execute(&self) -> bool {
        self.no_execute != 0
    }
}

/// The most paging-structure entries one walk uses (5-level paging).
const MAX_LEVELS: usize = 5;

/// Where a walk puts the entries it reads. Most walks keep none
/// ([`Unrecorded`]): every entry already has its accessed bit (and a
/// written page its dirty bit). Only when one does not is the walk made
/// again into [`Entries`], whose addresses and values the compare-exchanges
/// that set the bits need.
trait EntryLog {
    /// Entry `value`, read at `gpa`, is the walk's entry `depth`.
    fn record(&mut self, depth: usize, gpa: u64, value: u64);
    /// The entries before `depth` need no accessed update: a PAE PDPTE has
    /// no accessed bit, and a walk that started at a cached table did not
    /// read the entries above it (the walk that cached it set them).
    fn skip_to(&mut self, depth: usize);
}

/// The log of a walk that needs no accessed/dirty update.
struct Unrecorded;

impl EntryLog for Unrecorded {
    #[inline(always)]
    fn record(&mut self, _depth: usize, _gpa: u64, _value: u64) {}

    #[inline(always)]
    fn skip_to(&mut self, _depth: usize) {}
}

/// The entries a walk used, root first (two arrays of words, so that no
/// wide load reads them back).
struct Entries {
    gpas: [u64; MAX_LEVELS],
    values: [u64; MAX_LEVELS],
    count: usize,
    first_accessed: usize,
    /// 8-byte entries (4 bytes in 32-bit paging).
    wide: bool,
}

impl Entries {
    fn new(format: Format) -> Entries {
        Entries {
            gpas: [0; MAX_LEVELS],
            values: [0; MAX_LEVELS],
            count: 0,
            first_accessed: 0,
            wide: format != Format::Bits32,
        }
    }
}

impl EntryLog for Entries {
    fn record(&mut self, depth: usize, gpa: u64, value: u64) {
        if let (Some(gpa_slot), Some(value_slot)) =
            (self.gpas.get_mut(depth), self.values.get_mut(depth))
        {
            *gpa_slot = gpa;
            *value_slot = value;
        }
        self.count = depth + 1;
    }

    fn skip_to(&mut self, depth: usize) {
        self.first_accessed = depth;
    }
}

/// A finished walk, before permissions are checked.
struct Leaf {
    physical: u64,
    rights: Rights,
    /// The protection key of the leaf entry (wide formats).
    key: u32,
    /// Every entry that has an accessed bit ANDed with the leaf entry: when
    /// it has the accessed bit, so has every entry.
    all_entries: u64,
    /// The entry that maps the page.
    entry: u64,
    /// The page table reached through non-leaf entries, for [`WalkCache`].
    table: Option<CachedTable>,
}

impl Leaf {
    /// Whether an entry lacks its accessed bit, or a written page its
    /// dirty bit.
    fn needs_accessed_dirty(&self, write: bool) -> bool {
        self.all_entries & ENTRY_ACCESSED == 0 || (write && self.entry & ENTRY_DIRTY == 0)
    }
}

/// Why a walk stopped; the #PF error code is made from it only when the
/// walk faults, not before every walk.
enum WalkStop {
    NotPresent,
    Reserved,
    /// The entries' rights deny the access.
    Denied,
    /// The page's protection key denies the access.
    DeniedByKey,
    Memory(MemoryError),
    /// An accessed/dirty update found the entry changed: walk again.
    Race,
}

impl From<MemoryError> for WalkStop {
    fn from(error: MemoryError) -> WalkStop {
        WalkStop::Memory(error)
    }
}

impl WalkStop {
    /// The fault the CPU raises for this stop of a walk for `kind`.
    #[cold]
    fn into_fault(self, ctx: &PagingContext, kind: AccessKind, linear: u64) -> Fault {
        let mut code = 0;
        if kind.write() {
            code |= pf::WRITE;
        }
        if kind.user() {
            code |= pf::USER;
        }
        let fetch_reported =
            ctx.cr4 & control::CR4_SMEP != 0 || (ctx.format != Format::Bits32 && ctx.nxe);
        if kind.fetch_access() && fetch_reported {
            code |= pf::FETCH;
        }
        match self {
            WalkStop::NotPresent => Fault::page_fault(code, linear),
            WalkStop::Reserved => Fault::page_fault(code | pf::PRESENT | pf::RESERVED, linear),
            WalkStop::Denied => Fault::page_fault(code | pf::PRESENT, linear),
            WalkStop::DeniedByKey => {
                Fault::page_fault(code | pf::PRESENT | pf::PROTECTION_KEY, linear)
            }
            WalkStop::Memory(error) => Fault::Memory(error),
            WalkStop::Race => Fault::Retry,
        }
    }
}

/// The guest-physical address of `linear` for `kind`, after setting the
/// accessed (and for writes dirty) bits, or the fault the CPU would raise.
#[inline]
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

#[inline(always)]
fn walk<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    cached: Option<CachedTable>,
    log: &mut L,
) -> Result<Leaf, WalkStop> {
    match ctx.format {
        Format::Bits32 => walk_32bit(guest, ctx, linear, log),
        _ => walk_wide(guest, ctx, linear, cached, log),
    }
}

fn read_entry<G: Guest>(guest: &mut G, gpa: u64, wide: bool) -> Result<u64, MemoryError> {
    let mut bytes = [0u8; 8];
    let len = if wide { 8 } else { 4 };
    guest.read_physical(gpa, &mut bytes[..len])?;
    Ok(u64::from_le_bytes(bytes))
}

// Not inlined: its PSE-36 constants would otherwise be worked out before
// every walk, whatever the format.
#[inline(never)]
fn walk_32bit<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    log: &mut L,
) -> Result<Leaf, WalkStop> {
    let pde_gpa = ctx.root + ((linear >> 22) & 0x3ff) * 4;
    let pde = read_entry(guest, pde_gpa, false)?;
    if pde & ENTRY_PRESENT == 0 {
        return Err(WalkStop::NotPresent);
    }
    log.record(0, pde_gpa, pde);
    let mut rights = Rights::ALL;
    rights.restrict(pde & !ENTRY_NX);
    if ctx.cr4 & control::CR4_PSE != 0 && pde & ENTRY_LARGE != 0 {
        // PSE-36: bits 20:13 hold physical bits 39:32, up to MAXPHYADDR.
        let high_bits = u64::from(ctx.physical_bits.clamp(32, 40)) - 32;
        let reserved_mask = (1u64 << 21) | (((1u64 << 8) - 1) & !((1u64 << high_bits) - 1)) << 13;
        if pde & reserved_mask != 0 {
            return Err(WalkStop::Reserved);
        }
        let frame = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        return Ok(Leaf {
            physical: frame | (linear & 0x3f_ffff),
            rights,
            key: 0,
            all_entries: pde,
            entry: pde,
            table: None,
        });
    }
    let pte_gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
    let pte = read_entry(guest, pte_gpa, false)?;
    if pte & ENTRY_PRESENT == 0 {
        return Err(WalkStop::NotPresent);
    }
    log.record(1, pte_gpa, pte);
    rights.restrict(pte & !ENTRY_NX);
    Ok(Leaf {
        physical: (pte & 0xffff_f000) | (linear & 0xfff),
        rights,
        key: 0,
        all_entries: pde & pte,
        entry: pte,
        table: None,
    })
}

#[inline(always)]
fn walk_wide<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    cached: Option<CachedTable>,
    log: &mut L,
) -> Result<Leaf, WalkStop> {
    if let Some(cached) = cached
        && cached.region == linear >> 21
    {
        return walk_from_table(guest, ctx, linear, cached, log);
    }
    // The first table to read, the shift of the linear-address bits that
    // index it, and its depth in the walk.
    let (table, shift, depth) = match ctx.format {
        Format::Pae => {
            log.skip_to(1);
            (pae_directory(guest, ctx, linear, log)?, 21, 1)
        }
        Format::Level5 => (ctx.root, 48, 0),
        _ => (ctx.root, 39, 0),
    };
    walk_tables(guest, ctx, linear, (table, shift, depth), Rights::ALL, log)
}

/// A walk that starts at `cached`, the page table of `linear`'s region:
/// the entries above it were checked (and their accessed bits set) by the
/// walk that reached it.
#[inline(always)]
fn walk_from_table<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    cached: CachedTable,
    log: &mut L,
) -> Result<Leaf, WalkStop> {
    let depth = match ctx.format {
        Format::Level5 => 4,
        Format::Level4 => 3,
        _ => 2,
    };
    log.skip_to(depth);
    walk_tables(
        guest,
        ctx,
        linear,
        (cached.table, 12, depth),
        cached.rights,
        log,
    )
}

/// The walk down from `table` (indexed by the linear-address bits from
/// `shift`, at `depth` in the walk) to the leaf, with the `rights` of the
/// entries above. Inlined into each caller, so that a walk from a page
/// table (shift 12) is the loop's last round alone.
#[inline(always)]
fn walk_tables<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    (mut table, mut shift, mut depth): (u64, u32, usize),
    mut rights: Rights,
    log: &mut L,
) -> Result<Leaf, WalkStop> {
    let address_mask = ctx.address_mask;
    let always_reserved = ctx.always_reserved;
    // The entries with an accessed bit, ANDed (a PAE PDPTE has none).
    let mut all_entries = u64::MAX;
    let mut table_reached = None;
    loop {
        let gpa = table + ((linear >> shift) & 0x1ff) * 8;
        let value = read_entry(guest, gpa, true)?;
        if value & ENTRY_PRESENT == 0 {
            return Err(WalkStop::NotPresent);
        }
        let large = (shift == 30 || shift == 21) && value & ENTRY_LARGE != 0;
        let reserved_mask = if shift >= 39 {
            always_reserved | ENTRY_LARGE
        } else if large {
            // Bits 12 (PAT) and up hold the frame; 13..shift-1 must be zero.
            always_reserved | (((1u64 << shift) - 1) & !0x1fff)
        } else {
            always_reserved
        };
        if value & reserved_mask != 0 {
            return Err(WalkStop::Reserved);
        }
        log.record(depth, gpa, value);
        rights.restrict(value);
        all_entries &= value;
        if shift == 12 || large {
            let offset_mask = (1u64 << shift) - 1;
            return Ok(Leaf {
                physical: (value & address_mask & !offset_mask) | (linear & offset_mask),
                rights,
                key: ((value >> 59) & 0xf) as u32,
                all_entries,
                entry: value,
                table: table_reached,
            });
        }
        table = value & address_mask;
        if shift == 21 {
            table_reached = Some(CachedTable {
                region: linear >> 21,
                table,
                rights,
            });
        }
        shift -= 9;
        depth += 1;
    }
}

/// The PAE PDPTE for `linear` (four of them, no accessed bit, no rights,
/// reserved bits of their own): the page directory it names. Out of line,
/// so that its values are not worked out before every 4-level walk.
#[inline(never)]
fn pae_directory<G: Guest, L: EntryLog>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    log: &mut L,
) -> Result<u64, WalkStop> {
    let gpa = ctx.root + ((linear >> 30) & 3) * 8;
    let value = read_entry(guest, gpa, true)?;
    if value & ENTRY_PRESENT == 0 {
        return Err(WalkStop::NotPresent);
    }
    if value & (ctx.always_reserved | 0x1e6 | ENTRY_NX) != 0 {
        return Err(WalkStop::Reserved);
    }
    log.record(0, gpa, value);
    Ok(value & ctx.address_mask)
}

#[inline(always)]
fn check_permissions(ctx: &PagingContext, leaf: &Leaf, kind: AccessKind) -> Result<(), WalkStop> {
    let wp = ctx.cr0 & control::CR0_WP != 0;
    let smep = ctx.cr4 & control::CR4_SMEP != 0;
    let smap = ctx.cr4 & control::CR4_SMAP != 0;
    let rights = &leaf.rights;
    let denied = if kind.fetch_access() {
        rights.no_execute()
            || (kind.user() && !rights.user())
            || (!kind.user() && smep && rights.user())
    } else if kind.user() {
        !rights.user() || (kind.write() && !rights.writable())
    } else {
        let smap_denies =
            smap && rights.user() && (kind.is_implicit_supervisor() || !ctx.alignment_flag);
        smap_denies || (kind.write() && !rights.writable() && wp)
    };
    if denied {
        return Err(WalkStop::Denied);
    }
    let keys_apply = ctx.cr4 & control::CR4_PKE != 0
        && matches!(ctx.format, Format::Level4 | Format::Level5)
        && rights.user()
        && !kind.fetch_access();
    if keys_apply {
        let access_disabled = (ctx.pkru >> (2 * leaf.key)) & 1 != 0;
        let write_disabled = (ctx.pkru >> (2 * leaf.key + 1)) & 1 != 0;
        if access_disabled || (kind.write() && write_disabled && (kind.user() || wp)) {
            return Err(WalkStop::DeniedByKey);
        }
    }
    Ok(())
}

/// Sets A in every recorded entry that lacks it (D too in the leaf for a
/// write), each with one compare-exchange against the value the walk read.
fn set_accessed_dirty<G: Guest>(
    guest: &mut G,
    entries: &Entries,
    write: bool,
) -> Result<(), WalkStop> {
    let len = if entries.wide { 8 } else { 4 };
    let count = entries.count.min(MAX_LEVELS);
    // A plain index loop: iterator adapters here (skip, zip) were not
    // inlined and cost more than the rest of a walk.
    for index in entries.first_accessed..count {
        let (Some(&gpa), Some(&value)) = (entries.gpas.get(index), entries.values.get(index))
        else {
            break;
        };
        let mut bits = ENTRY_ACCESSED;
        if write && index + 1 == count {
            bits |= ENTRY_DIRTY;
        }
        if value & bits == bits {
            continue;
        }
        let expected = value.to_le_bytes();
        let new = (value | bits).to_le_bytes();
        let mut current = [0u8; 8];
        let page = gpa & !0xfff;
        let offset = (gpa & 0xfff) as u16;
        let stored = guest.compare_exchange(
            [page, page],
            offset,
            &expected[..len],
            &new[..len],
            &mut current[..len],
        )?;
        if !stored {
            return Err(WalkStop::Race);
        }
    }
    Ok(())
}
