//! The walk itself: reading and checking each paging-structure entry
//! (present, reserved bits, large pages) in the four formats, the rights
//! the entries grant together, the permission check against an access, and
//! the compare-exchanges that set accessed and dirty bits.

use super::{AccessKind, CachedTable, Format, PagingContext, pf};
use crate::fault::Fault;
use crate::state::control;
use crate::{Guest, MemoryError};

const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_WRITABLE: u64 = 1 << 1;
const ENTRY_USER: u64 = 1 << 2;
const ENTRY_ACCESSED: u64 = 1 << 5;
const ENTRY_DIRTY: u64 = 1 << 6;
const ENTRY_LARGE: u64 = 1 << 7;
pub(super) const ENTRY_NX: u64 = 1 << 63;

/// The rights a walk's entries grant together: R/W and U/S of every entry
/// ANDed, and execution where no entry has XD. Kept as entry bits in one
/// word (not separate flags) so that storing and reloading them never
/// combines narrow stores into a wider load, which stalls store
/// forwarding; one word, not two, for the XD bit: one fewer store and load
/// for each page table cached and recalled.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rights {
    /// `ENTRY_WRITABLE | ENTRY_USER` where every entry has them, and
    /// `ENTRY_NX` where none has XD (it is reserved without EFER.NXE, so
    /// an entry that has it then faults before it counts).
    allowed: u64,
}

impl Rights {
    /// Rights before any entry: everything allowed.
    pub(super) const ALL: Rights = Rights {
        allowed: ENTRY_WRITABLE | ENTRY_USER | ENTRY_NX,
    };

    /// Adds a paging-structure entry's rights (its XD bit inverted, so
    /// that ANDing keeps execution only where no entry forbids it).
    fn restrict(&mut self, entry: u64) {
        self.allowed &= entry ^ ENTRY_NX;
    }

    fn writable(&self) -> bool {
        self.allowed & ENTRY_WRITABLE != 0
    }

    fn user(&self) -> bool {
        self.allowed & ENTRY_USER != 0
    }

    fn no_execute(&self) -> bool {
        self.allowed & ENTRY_NX == 0
    }
}

/// The most paging-structure entries one walk uses (5-level paging).
pub(super) const MAX_LEVELS: usize = 5;

/// Where a walk puts the entries it reads. Most walks keep none
/// ([`Unrecorded`]): every entry already has its accessed bit (and a
/// written page its dirty bit). Only when one does not is the walk made
/// again into [`Entries`], whose addresses and values the compare-exchanges
/// that set the bits need.
pub(super) trait EntryLog {
    /// Entry `value`, read at `gpa`, is the walk's entry `depth`.
    fn record(&mut self, depth: usize, gpa: u64, value: u64);
    /// The entries before `depth` need no accessed update: a PAE PDPTE has
    /// no accessed bit, and a walk that started at a cached table did not
    /// read the entries above it (the walk that cached it set them).
    fn skip_to(&mut self, depth: usize);
}

/// The log of a walk that needs no accessed/dirty update.
pub(super) struct Unrecorded;

impl EntryLog for Unrecorded {
    #[inline(always)]
    fn record(&mut self, _depth: usize, _gpa: u64, _value: u64) {}

    #[inline(always)]
    fn skip_to(&mut self, _depth: usize) {}
}

/// The entries a walk used, root first (two arrays of words, so that no
/// wide load reads them back).
pub(super) struct Entries {
    pub(super) gpas: [u64; MAX_LEVELS],
    pub(super) values: [u64; MAX_LEVELS],
    pub(super) count: usize,
    first_accessed: usize,
    /// 8-byte entries (4 bytes in 32-bit paging).
    wide: bool,
}

impl Entries {
    pub(super) fn new(format: Format) -> Entries {
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
pub(super) struct Leaf {
    pub(super) physical: u64,
    rights: Rights,
    /// The protection key of the leaf entry (wide formats).
    key: u32,
    /// Every entry that has an accessed bit ANDed with the leaf entry: when
    /// it has the accessed bit, so has every entry.
    all_entries: u64,
    /// The entry that maps the page.
    entry: u64,
    /// The page table reached through non-leaf entries, for [`WalkCache`].
    pub(super) table: Option<CachedTable>,
}

impl Leaf {
    /// Whether an entry lacks its accessed bit, or a written page its
    /// dirty bit.
    pub(super) fn needs_accessed_dirty(&self, write: bool) -> bool {
        self.all_entries & ENTRY_ACCESSED == 0 || (write && self.entry & ENTRY_DIRTY == 0)
    }
}

/// Why a walk stopped; the #PF error code is made from it only when the
/// walk faults, not before every walk.
pub(super) enum WalkStop {
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
    pub(super) fn into_fault(self, ctx: &PagingContext, kind: AccessKind, linear: u64) -> Fault {
        let mut code = 0;
        if kind.write() {
            code |= pf::WRITE;
        }
        if kind.user() {
            code |= pf::USER;
        }
        let fetch_reported =
            ctx.cr4 & control::CR4_SMEP != 0 || (ctx.format != Format::Bits32 && ctx.nxe());
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

#[inline(always)]
pub(super) fn walk<G: Guest, L: EntryLog>(
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

pub(super) fn read_entry<G: Guest>(
    guest: &mut G,
    gpa: u64,
    wide: bool,
) -> Result<u64, MemoryError> {
    let mut bytes = [0u8; 8];
    let len = if wide { 8 } else { 4 };
    guest.read_physical(gpa, &mut bytes[..len])?;
    Ok(u64::from_le_bytes(bytes))
}

/// The entry at `gpa`, which must be present.
#[inline(always)]
fn read_present<G: Guest>(guest: &mut G, gpa: u64, wide: bool) -> Result<u64, WalkStop> {
    let value = read_entry(guest, gpa, wide)?;
    if value & ENTRY_PRESENT == 0 {
        return Err(WalkStop::NotPresent);
    }
    Ok(value)
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
    let pde = read_present(guest, pde_gpa, false)?;
    log.record(0, pde_gpa, pde);
    let mut rights = Rights::ALL;
    rights.restrict(pde & !ENTRY_NX);
    if ctx.cr4 & control::CR4_PSE != 0 && pde & ENTRY_LARGE != 0 {
        // PSE-36: bits 20:13 hold physical bits 39:32, up to MAXPHYADDR.
        let high_bits = u64::from(ctx.physical_bits().clamp(32, 40)) - 32;
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
    let pte = read_present(guest, pte_gpa, false)?;
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
pub(super) fn walk_from_table<G: Guest, L: EntryLog>(
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
        let value = read_present(guest, gpa, true)?;
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
    let value = read_present(guest, gpa, true)?;
    if value & (ctx.always_reserved | 0x1e6 | ENTRY_NX) != 0 {
        return Err(WalkStop::Reserved);
    }
    log.record(0, gpa, value);
    Ok(value & ctx.address_mask)
}

#[inline(always)]
pub(super) fn check_permissions(
    ctx: &PagingContext,
    leaf: &Leaf,
    kind: AccessKind,
) -> Result<(), WalkStop> {
    // CR0.WP tested only where it decides: worked out first, it was
    // extracted into a flag before every supervisor write (5 instructions
    // an emulated MOV store).
    let wp = || ctx.cr0 & control::CR0_WP != 0;
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
        smap_denies || (kind.write() && !rights.writable() && wp())
    };
    if denied {
        return Err(WalkStop::Denied);
    }
    let keys_apply = ctx.protection_keys() && rights.user() && !kind.fetch_access();
    if keys_apply {
        let access_disabled = (ctx.pkru >> (2 * leaf.key)) & 1 != 0;
        let write_disabled = (ctx.pkru >> (2 * leaf.key + 1)) & 1 != 0;
        if access_disabled || (kind.write() && write_disabled && (kind.user() || wp())) {
            return Err(WalkStop::DeniedByKey);
        }
    }
    Ok(())
}

/// Sets A in every recorded entry that lacks it (D too in the leaf for a
/// write), each with one compare-exchange against the value the walk read.
pub(super) fn set_accessed_dirty<G: Guest>(
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
