//! The guest page walk: 32-bit, PAE, 4-level and 5-level paging, with the
//! permission checks (P, R/W, U/S, NX, WP, SMEP, SMAP, PKU, reserved bits) and
//! the #PF error code the CPU reports, and the accessed/dirty updates made with
//! compare-exchange so that a racing guest CPU never loses a bit.

use crate::fault::Fault;
use crate::state::control;
use crate::{Guest, MemoryError};

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
    /// for a CPU with `physical_bits` of physical address.
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

/// What kind of access is being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AccessKind {
    pub write: bool,
    pub fetch: bool,
    /// A user-mode access (CPL 3 and not an implicit supervisor access).
    pub user: bool,
    /// A supervisor access the CPU makes on its own (descriptor tables and
    /// the like): SMAP applies whatever RFLAGS.AC says.
    pub implicit_supervisor: bool,
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
/// paging-structure caches let it. Valid for one instruction.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WalkCache {
    table: Option<CachedTable>,
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

/// A finished walk, before permissions are checked.
struct Walk {
    /// The page table reached through non-leaf entries, for [`WalkCache`].
    leaf_table: Option<CachedTable>,
    physical: u64,
    /// Guest-physical address and value of each entry used, root first
    /// (two arrays of words, so that no wide load reads them back).
    entry_gpas: [u64; MAX_LEVELS],
    entry_values: [u64; MAX_LEVELS],
    count: usize,
    /// The entries before this one need no accessed update: a PAE PDPTE
    /// has no accessed bit, and a walk that started at a cached table did
    /// not read the entries above it (the walk that cached it set them).
    first_accessed: usize,
    /// 8-byte entries (4 bytes in 32-bit paging).
    wide: bool,
    rights: Rights,
    key: u32,
    /// All recorded entries ANDed: when it has the accessed bit, so has
    /// every entry, and the accessed pass has nothing to do.
    all_entries: u64,
}

impl Walk {
    fn new(wide: bool) -> Walk {
        Walk {
            leaf_table: None,
            physical: 0,
            entry_gpas: [0; MAX_LEVELS],
            entry_values: [0; MAX_LEVELS],
            count: 0,
            first_accessed: 0,
            wide,
            rights: Rights::ALL,
            key: 0,
            all_entries: u64::MAX,
        }
    }

    /// Records entry `value` read at `gpa` as the walk's entry `depth`.
    fn record(&mut self, depth: usize, gpa: u64, value: u64) {
        if let (Some(gpa_slot), Some(value_slot)) = (
            self.entry_gpas.get_mut(depth),
            self.entry_values.get_mut(depth),
        ) {
            *gpa_slot = gpa;
            *value_slot = value;
        }
        self.all_entries &= value;
        self.count = depth + 1;
    }
}

enum WalkStop {
    Fault(Fault),
    /// An accessed/dirty update found the entry changed: walk again.
    Race,
}

impl From<Fault> for WalkStop {
    fn from(fault: Fault) -> WalkStop {
        WalkStop::Fault(fault)
    }
}

impl From<MemoryError> for WalkStop {
    fn from(error: MemoryError) -> WalkStop {
        WalkStop::Fault(Fault::Memory(error))
    }
}

/// The guest-physical address of `linear` for `kind`, after setting the
/// accessed (and for writes dirty) bits, or the fault the CPU would raise.
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
    for _ in 0..ctx.attempts.max(1) {
        match translate_once(guest, ctx, linear, kind, cache) {
            Ok(physical) => return Ok(physical),
            Err(WalkStop::Fault(fault)) => return Err(fault),
            Err(WalkStop::Race) => {}
        }
    }
    Err(Fault::Retry)
}

fn translate_once<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Result<u64, WalkStop> {
    let format = ctx.format;
    let mut base_code = 0;
    if kind.write {
        base_code |= pf::WRITE;
    }
    if kind.user {
        base_code |= pf::USER;
    }
    if kind.fetch && (ctx.cr4 & control::CR4_SMEP != 0 || (format != Format::Bits32 && ctx.nxe)) {
        base_code |= pf::FETCH;
    }
    let mut walk = Walk::new(format != Format::Bits32);
    match format {
        Format::Bits32 => walk_32bit(guest, ctx, linear, base_code, &mut walk)?,
        _ => walk_wide(guest, ctx, linear, base_code, cache.table, &mut walk)?,
    }
    check_permissions(ctx, &walk, kind, linear, base_code)?;
    set_accessed_dirty(guest, &walk, kind.write)?;
    if walk.leaf_table.is_some() {
        cache.table = walk.leaf_table;
    }
    Ok(walk.physical)
}

fn read_entry<G: Guest>(guest: &mut G, gpa: u64, wide: bool) -> Result<u64, MemoryError> {
    let mut bytes = [0u8; 8];
    let len = if wide { 8 } else { 4 };
    guest.read_physical(gpa, &mut bytes[..len])?;
    Ok(u64::from_le_bytes(bytes))
}

/// The not-present #PF.
#[cold]
fn not_present(base_code: u32, linear: u64) -> WalkStop {
    WalkStop::Fault(Fault::page_fault(base_code, linear))
}

/// The reserved-bit #PF.
#[cold]
fn reserved(base_code: u32, linear: u64) -> WalkStop {
    WalkStop::Fault(Fault::page_fault(
        base_code | pf::PRESENT | pf::RESERVED,
        linear,
    ))
}

// Not inlined: its PSE-36 constants would otherwise be worked out before
// every walk, whatever the format.
#[inline(never)]
fn walk_32bit<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    base_code: u32,
    walk: &mut Walk,
) -> Result<(), WalkStop> {
    let pde_gpa = ctx.root + ((linear >> 22) & 0x3ff) * 4;
    let pde = read_entry(guest, pde_gpa, false)?;
    if pde & ENTRY_PRESENT == 0 {
        return Err(not_present(base_code, linear));
    }
    walk.record(0, pde_gpa, pde);
    walk.rights.restrict(pde & !ENTRY_NX);
    if ctx.cr4 & control::CR4_PSE != 0 && pde & ENTRY_LARGE != 0 {
        // PSE-36: bits 20:13 hold physical bits 39:32, up to MAXPHYADDR.
        let high_bits = u64::from(ctx.physical_bits.clamp(32, 40)) - 32;
        let reserved_mask = (1u64 << 21) | (((1u64 << 8) - 1) & !((1u64 << high_bits) - 1)) << 13;
        if pde & reserved_mask != 0 {
            return Err(reserved(base_code, linear));
        }
        let frame = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        walk.physical = frame | (linear & 0x3f_ffff);
        return Ok(());
    }
    let pte_gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
    let pte = read_entry(guest, pte_gpa, false)?;
    if pte & ENTRY_PRESENT == 0 {
        return Err(not_present(base_code, linear));
    }
    walk.record(1, pte_gpa, pte);
    walk.rights.restrict(pte & !ENTRY_NX);
    walk.physical = (pte & 0xffff_f000) | (linear & 0xfff);
    Ok(())
}

fn walk_wide<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    base_code: u32,
    cached: Option<CachedTable>,
    walk: &mut Walk,
) -> Result<(), WalkStop> {
    let address_mask = ctx.address_mask;
    let always_reserved = ctx.always_reserved;
    // Accumulated in a local (registers), stored into the walk at the end.
    let mut rights = Rights::ALL;
    // The table to read, the shift of the linear-address bits that index
    // it (12 for a page table), and its depth in the walk.
    let (mut table, mut shift, mut depth) = match cached {
        Some(cached) if cached.region == linear >> 21 => {
            // Straight to the page table: the entries above are the cached walk's.
            let depth = match ctx.format {
                Format::Level5 => 4,
                Format::Level4 => 3,
                _ => 2,
            };
            walk.first_accessed = depth;
            rights = cached.rights;
            (cached.table, 12, depth)
        }
        _ => match ctx.format {
            Format::Pae => (pae_directory(guest, ctx, linear, base_code, walk)?, 21, 1),
            Format::Level5 => (ctx.root, 48, 0),
            _ => (ctx.root, 39, 0),
        },
    };
    loop {
        let gpa = table + ((linear >> shift) & 0x1ff) * 8;
        let value = read_entry(guest, gpa, true)?;
        if value & ENTRY_PRESENT == 0 {
            return Err(not_present(base_code, linear));
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
            return Err(reserved(base_code, linear));
        }
        walk.record(depth, gpa, value);
        rights.restrict(value);
        if shift == 12 || large {
            walk.rights = rights;
            let offset_mask = (1u64 << shift) - 1;
            walk.physical = (value & address_mask & !offset_mask) | (linear & offset_mask);
            walk.key = ((value >> 59) & 0xf) as u32;
            return Ok(());
        }
        table = value & address_mask;
        if shift == 21 {
            walk.leaf_table = Some(CachedTable {
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
fn pae_directory<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    base_code: u32,
    walk: &mut Walk,
) -> Result<u64, WalkStop> {
    walk.first_accessed = 1;
    let gpa = ctx.root + ((linear >> 30) & 3) * 8;
    let value = read_entry(guest, gpa, true)?;
    if value & ENTRY_PRESENT == 0 {
        return Err(not_present(base_code, linear));
    }
    if value & (ctx.always_reserved | 0x1e6 | ENTRY_NX) != 0 {
        return Err(reserved(base_code, linear));
    }
    walk.record(0, gpa, value);
    Ok(value & ctx.address_mask)
}

#[inline]
fn check_permissions(
    ctx: &PagingContext,
    walk: &Walk,
    kind: AccessKind,
    linear: u64,
    base_code: u32,
) -> Result<(), WalkStop> {
    let wp = ctx.cr0 & control::CR0_WP != 0;
    let smep = ctx.cr4 & control::CR4_SMEP != 0;
    let smap = ctx.cr4 & control::CR4_SMAP != 0;
    let denied = if kind.fetch {
        walk.rights.no_execute()
            || (kind.user && !walk.rights.user())
            || (!kind.user && smep && walk.rights.user())
    } else if kind.user {
        !walk.rights.user() || (kind.write && !walk.rights.writable())
    } else {
        let smap_denies =
            smap && walk.rights.user() && (kind.implicit_supervisor || !ctx.alignment_flag);
        smap_denies || (kind.write && !walk.rights.writable() && wp)
    };
    if denied {
        return Err(Fault::page_fault(base_code | pf::PRESENT, linear).into());
    }
    let keys_apply = ctx.cr4 & control::CR4_PKE != 0
        && matches!(ctx.format, Format::Level4 | Format::Level5)
        && walk.rights.user()
        && !kind.fetch;
    if keys_apply {
        let access_disabled = (ctx.pkru >> (2 * walk.key)) & 1 != 0;
        let write_disabled = (ctx.pkru >> (2 * walk.key + 1)) & 1 != 0;
        let key_denies = access_disabled || (kind.write && write_disabled && (kind.user || wp));
        if key_denies {
            let code = base_code | pf::PRESENT | pf::PROTECTION_KEY;
            return Err(Fault::page_fault(code, linear).into());
        }
    }
    Ok(())
}

/// Sets A in every entry the walk used (D too in the leaf for a write), each
/// with one compare-exchange against the value the walk read.
fn set_accessed_dirty<G: Guest>(guest: &mut G, walk: &Walk, write: bool) -> Result<(), WalkStop> {
    let count = walk.count.min(MAX_LEVELS);
    // The common case: every entry accessed, and a read or a dirty leaf.
    // (A PAE PDPTE has no accessed bit, so PAE walks always take the loop.)
    let leaf = walk.entry_values.get(count.wrapping_sub(1)).copied();
    if walk.all_entries & ENTRY_ACCESSED != 0
        && (!write || leaf.is_some_and(|leaf| leaf & ENTRY_DIRTY != 0))
    {
        return Ok(());
    }
    update_accessed_dirty(guest, walk, write, count)
}

/// The accessed/dirty updates a walk needs, out of line: they are rare, and
/// inlined their compare-exchange calls made every walk spill registers.
#[cold]
#[inline(never)]
fn update_accessed_dirty<G: Guest>(
    guest: &mut G,
    walk: &Walk,
    write: bool,
    count: usize,
) -> Result<(), WalkStop> {
    let len = if walk.wide { 8 } else { 4 };
    // A plain index loop: iterator adapters here (skip, zip) were not
    // inlined and cost more than the rest of a walk.
    for index in walk.first_accessed..count {
        let (Some(&gpa), Some(&value)) = (walk.entry_gpas.get(index), walk.entry_values.get(index))
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
