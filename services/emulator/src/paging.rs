//! The guest page walk: 32-bit, PAE, 4-level and 5-level paging, with the
//! permission checks (P, R/W, U/S, NX, WP, SMEP, SMAP, PKU, reserved bits) and
//! the #PF error code the CPU reports, and the accessed/dirty updates made with
//! compare-exchange so that a racing guest CPU never loses a bit.

use crate::fault::Fault;
use crate::state::control;
use crate::{Guest, MemoryError};

/// The control state a walk depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PagingContext {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub pkru: u32,
    /// RFLAGS.AC, which lets supervisor code reach user pages under SMAP.
    pub alignment_flag: bool,
    /// MAXPHYADDR: physical address bits above it are reserved in entries.
    pub physical_bits: u8,
    /// How many times a walk is repeated when an accessed/dirty update loses a
    /// race before the instruction is retried as a whole.
    pub attempts: u32,
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

/// One paging-structure entry the walk used.
#[derive(Clone, Copy, Debug, Default)]
struct UsedEntry {
    gpa: u64,
    value: u64,
    /// 8-byte entry (4 bytes in 32-bit paging).
    wide: bool,
    /// The CPU keeps an accessed bit here (not in PAE PDPTEs).
    has_accessed: bool,
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
    /// Rights of the entries above the table (whose A bits are set).
    writable: bool,
    user: bool,
    no_execute: bool,
}

/// A finished walk, before permissions are checked.
struct Walk {
    /// The page table reached through non-leaf entries, for [`WalkCache`].
    leaf_table: Option<CachedTable>,
    physical: u64,
    entries: [UsedEntry; 5],
    count: usize,
    writable: bool,
    user: bool,
    no_execute: bool,
    key: u32,
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

fn format(ctx: &PagingContext) -> Format {
    if ctx.cr4 & control::CR4_PAE == 0 {
        Format::Bits32
    } else if ctx.efer & control::EFER_LMA == 0 {
        Format::Pae
    } else if ctx.cr4 & control::CR4_LA57 != 0 {
        Format::Level5
    } else {
        Format::Level4
    }
}

fn translate_once<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    kind: AccessKind,
    cache: &mut WalkCache,
) -> Result<u64, WalkStop> {
    let format = format(ctx);
    let nxe = ctx.efer & control::EFER_NXE != 0;
    let mut base_code = 0;
    if kind.write {
        base_code |= pf::WRITE;
    }
    if kind.user {
        base_code |= pf::USER;
    }
    if kind.fetch && (ctx.cr4 & control::CR4_SMEP != 0 || (format != Format::Bits32 && nxe)) {
        base_code |= pf::FETCH;
    }
    let mut walk = Walk {
        leaf_table: None,
        physical: 0,
        entries: [UsedEntry::default(); 5],
        count: 0,
        writable: true,
        user: true,
        no_execute: false,
        key: 0,
    };
    match format {
        Format::Bits32 => walk_32bit(guest, ctx, linear, base_code, &mut walk)?,
        _ => walk_wide(
            guest,
            ctx,
            format,
            linear,
            base_code,
            cache.table,
            &mut walk,
        )?,
    }
    check_permissions(ctx, format, &walk, kind, linear, base_code)?;
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

fn walk_32bit<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    linear: u64,
    base_code: u32,
    walk: &mut Walk,
) -> Result<(), WalkStop> {
    let not_present = Fault::page_fault(base_code, linear);
    let reserved = Fault::page_fault(base_code | pf::PRESENT | pf::RESERVED, linear);
    let pde_gpa = (ctx.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4;
    let pde = read_entry(guest, pde_gpa, false)?;
    if pde & ENTRY_PRESENT == 0 {
        return Err(not_present.into());
    }
    walk.entries[0] = UsedEntry {
        gpa: pde_gpa,
        value: pde,
        wide: false,
        has_accessed: true,
    };
    walk.count = 1;
    walk.writable = pde & ENTRY_WRITABLE != 0;
    walk.user = pde & ENTRY_USER != 0;
    if ctx.cr4 & control::CR4_PSE != 0 && pde & ENTRY_LARGE != 0 {
        // PSE-36: bits 20:13 hold physical bits 39:32, up to MAXPHYADDR.
        let high_bits = u64::from(ctx.physical_bits.clamp(32, 40)) - 32;
        let reserved_mask = (1u64 << 21) | (((1u64 << 8) - 1) & !((1u64 << high_bits) - 1)) << 13;
        if pde & reserved_mask != 0 {
            return Err(reserved.into());
        }
        let frame = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        walk.physical = frame | (linear & 0x3f_ffff);
        return Ok(());
    }
    let pte_gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
    let pte = read_entry(guest, pte_gpa, false)?;
    if pte & ENTRY_PRESENT == 0 {
        return Err(not_present.into());
    }
    walk.entries[1] = UsedEntry {
        gpa: pte_gpa,
        value: pte,
        wide: false,
        has_accessed: true,
    };
    walk.count = 2;
    walk.writable &= pte & ENTRY_WRITABLE != 0;
    walk.user &= pte & ENTRY_USER != 0;
    walk.physical = (pte & 0xffff_f000) | (linear & 0xfff);
    Ok(())
}

fn walk_wide<G: Guest>(
    guest: &mut G,
    ctx: &PagingContext,
    format: Format,
    linear: u64,
    base_code: u32,
    cached: Option<CachedTable>,
    walk: &mut Walk,
) -> Result<(), WalkStop> {
    const SHIFTS_5: [u32; 5] = [48, 39, 30, 21, 12];
    let shifts: &[u32] = match format {
        Format::Level5 => &SHIFTS_5,
        Format::Level4 => &SHIFTS_5[1..],
        _ => &SHIFTS_5[2..],
    };
    let nxe = ctx.efer & control::EFER_NXE != 0;
    let physical_bits = u32::from(ctx.physical_bits.clamp(32, 52));
    let address_mask = ((1u64 << physical_bits) - 1) & !0xfff;
    // Bits between MAXPHYADDR and bit 51 are reserved in every entry.
    let mut always_reserved = ((1u64 << 52) - 1) & !((1u64 << physical_bits) - 1);
    if format == Format::Pae {
        always_reserved |= 0x7ff0_0000_0000_0000;
    }
    if !nxe {
        always_reserved |= ENTRY_NX;
    }
    let not_present = Fault::page_fault(base_code, linear);
    let reserved = Fault::page_fault(base_code | pf::PRESENT | pf::RESERVED, linear);
    let mut table = if format == Format::Pae {
        ctx.cr3 & 0xffff_ffe0
    } else {
        ctx.cr3 & address_mask
    };
    let mut start = 0;
    if let Some(cached) = cached
        && cached.region == linear >> 21
    {
        start = shifts.len() - 1;
        table = cached.table;
        walk.writable = cached.writable;
        walk.user = cached.user;
        walk.no_execute = cached.no_execute;
    }
    for (depth, &shift) in shifts.iter().enumerate().skip(start) {
        let pae_pdpte = format == Format::Pae && depth == 0;
        let index_mask = if pae_pdpte { 3 } else { 0x1ff };
        let gpa = table + ((linear >> shift) & index_mask) * 8;
        let value = read_entry(guest, gpa, true)?;
        if value & ENTRY_PRESENT == 0 {
            return Err(not_present.into());
        }
        let mut reserved_mask = always_reserved;
        if pae_pdpte {
            reserved_mask |= 0x1e6 | ENTRY_NX;
        }
        if shift >= 39 {
            reserved_mask |= ENTRY_LARGE;
        }
        let large = !pae_pdpte && (shift == 30 || shift == 21) && value & ENTRY_LARGE != 0;
        if large {
            // Bits 12 (PAT) and up hold the frame; 13..shift-1 must be zero.
            reserved_mask |= ((1u64 << shift) - 1) & !0x1fff;
        }
        if value & reserved_mask != 0 {
            return Err(reserved.into());
        }
        if let Some(slot) = walk.entries.get_mut(depth) {
            *slot = UsedEntry {
                gpa,
                value,
                wide: true,
                has_accessed: !pae_pdpte,
            };
        }
        walk.count = depth + 1;
        if !pae_pdpte {
            walk.writable &= value & ENTRY_WRITABLE != 0;
            walk.user &= value & ENTRY_USER != 0;
            walk.no_execute |= nxe && value & ENTRY_NX != 0;
        }
        if shift == 12 || large {
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
                writable: walk.writable,
                user: walk.user,
                no_execute: walk.no_execute,
            });
        }
    }
    Err(WalkStop::Fault(Fault::Unsupported(
        "page walk without a leaf",
    )))
}

fn check_permissions(
    ctx: &PagingContext,
    format: Format,
    walk: &Walk,
    kind: AccessKind,
    linear: u64,
    base_code: u32,
) -> Result<(), WalkStop> {
    let wp = ctx.cr0 & control::CR0_WP != 0;
    let smep = ctx.cr4 & control::CR4_SMEP != 0;
    let smap = ctx.cr4 & control::CR4_SMAP != 0;
    let denied = if kind.fetch {
        walk.no_execute || (kind.user && !walk.user) || (!kind.user && smep && walk.user)
    } else if kind.user {
        !walk.user || (kind.write && !walk.writable)
    } else {
        let smap_denies = smap && walk.user && (kind.implicit_supervisor || !ctx.alignment_flag);
        smap_denies || (kind.write && !walk.writable && wp)
    };
    if denied {
        return Err(Fault::page_fault(base_code | pf::PRESENT, linear).into());
    }
    let keys_apply = ctx.cr4 & control::CR4_PKE != 0
        && matches!(format, Format::Level4 | Format::Level5)
        && walk.user
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
    let used = walk.entries.get(..walk.count).unwrap_or(&[]);
    for (index, entry) in used.iter().enumerate() {
        if !entry.has_accessed {
            continue;
        }
        let mut bits = ENTRY_ACCESSED;
        if write && index + 1 == walk.count {
            bits |= ENTRY_DIRTY;
        }
        if entry.value & bits == bits {
            continue;
        }
        let len = if entry.wide { 8 } else { 4 };
        let expected = entry.value.to_le_bytes();
        let new = (entry.value | bits).to_le_bytes();
        let mut current = [0u8; 8];
        let page = entry.gpa & !0xfff;
        let offset = (entry.gpa & 0xfff) as u16;
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
