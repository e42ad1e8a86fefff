//! The kernel command line: parses the `cordon.*` options into a [`Config`].
//!
//! Options (words separated by ASCII whitespace; words not starting with
//! `cordon.` belong to someone else and are ignored):
//!
//! - `cordon.trap=LIST`: guest-physical ranges the EPT marks not present, so
//!   every access is forwarded to the service. LIST is comma-separated items,
//!   each `lapic` (0xFEE00000-0xFEE00FFF), `vga` (0xB8000-0xBFFFF) or
//!   `START-END`. Default when absent: `lapic,vga`.
//! - `cordon.cap=LIST`: what the service may reach through `map`/`cmpxchg`.
//!   Items `REGION:RIGHTS`, REGION being `guest-ram` (all guest RAM of the
//!   memory map), `lapic`, `vga` or `START-END`; RIGHTS one or more of the
//!   letters `r` (read), `w` (write), `c` (cmpxchg). Default when absent:
//!   `guest-ram:rwc,lapic:rwc,vga:rwc`.
//! - `cordon.x2apic=hide|show`: whether CPUID shows x2APIC to the guest.
//!   Default `hide` (so the guest uses the trapped xAPIC MMIO page).
//! - `cordon.rep-batch=N`: most iterations of a REP string instruction the
//!   service performs per exit, 1 to [`MAX_REP_BATCH`]. Default
//!   [`DEFAULT_REP_BATCH`].
//!
//! `START-END` are hexadecimal (optional `0x`), END is INCLUSIVE (the last byte,
//! as in `0xB8000-0xBFFFF`), and the range must cover whole 4 KiB pages.
//! `trap` and `cap` may be repeated (their lists add up); `x2apic` and
//! `rep-batch` may appear once. Anything else under `cordon.` is an error.

use super::PhysRange;
use abi::Rights;
use core::fmt;
use heapless::Vec;

/// Most trapped ranges the configuration can hold.
pub const MAX_TRAPS: usize = 16;
/// Most capability grants the configuration can hold.
pub const MAX_GRANTS: usize = 16;
/// Default `cordon.rep-batch`.
pub const DEFAULT_REP_BATCH: u32 = 64;
/// Largest accepted `cordon.rep-batch`.
pub const MAX_REP_BATCH: u32 = 4096;
/// Addresses must lie below 2^52 (the architectural physical-address limit).
pub const PHYS_LIMIT: u64 = 1 << 52;

/// The guest-physical region a capability grant covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantRegion {
    /// Every page of guest RAM in the memory map.
    GuestRam,
    Range(PhysRange),
}

/// One `cordon.cap` item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub region: GrantRegion,
    /// [`Rights`] bits, never empty.
    pub rights: u64,
}

/// Whether CPUID reports x2APIC support to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X2apic {
    Hide,
    Show,
}

/// The configuration the core runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Trapped ranges, page-aligned.
    pub traps: Vec<PhysRange, MAX_TRAPS>,
    /// The service's capability grants.
    pub grants: Vec<Grant, MAX_GRANTS>,
    pub x2apic: X2apic,
    pub rep_batch: u32,
}

/// What is wrong with the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// A `cordon.` key this version does not know.
    UnknownKey,
    /// `cordon.KEY` without `=VALUE`, or an empty value or list item.
    MissingValue,
    /// A number that is not hexadecimal (ranges) or decimal (rep-batch).
    BadNumber,
    /// A range that is not `START-END` with START <= END.
    BadRange,
    /// A range that does not start and end on a 4 KiB page boundary.
    MisalignedRange,
    /// A range reaching 2^52 or beyond.
    AddressTooLarge,
    /// `lapic`/`vga`/`guest-ram` misspelt, or `guest-ram` as a trap.
    UnknownRegion,
    /// A cap item without `:RIGHTS`, an empty rights string, an unknown or
    /// repeated letter.
    BadRights,
    /// `cordon.x2apic` other than `hide` or `show`.
    BadX2apic,
    /// `cordon.rep-batch` outside 1..=MAX_REP_BATCH.
    RepBatchOutOfRange,
    /// `cordon.x2apic` or `cordon.rep-batch` given twice.
    Duplicate,
    /// More than [`MAX_TRAPS`] trapped ranges.
    TooManyTraps,
    /// More than [`MAX_GRANTS`] capability grants.
    TooManyGrants,
}

impl ConfigErrorKind {
    pub const fn describe(self) -> &'static str {
        match self {
            ConfigErrorKind::UnknownKey => "unknown cordon option",
            ConfigErrorKind::MissingValue => "missing value",
            ConfigErrorKind::BadNumber => "bad number",
            ConfigErrorKind::BadRange => "bad range (want hex START-END, END inclusive)",
            ConfigErrorKind::MisalignedRange => "range does not cover whole 4 KiB pages",
            ConfigErrorKind::AddressTooLarge => "address at or above 2^52",
            ConfigErrorKind::UnknownRegion => {
                "unknown region (want lapic, vga, guest-ram for cap, or START-END)"
            }
            ConfigErrorKind::BadRights => "bad rights (want REGION:RIGHTS, RIGHTS from r, w, c)",
            ConfigErrorKind::BadX2apic => "bad x2apic setting (want hide or show)",
            ConfigErrorKind::RepBatchOutOfRange => "rep-batch out of range (1..=4096)",
            ConfigErrorKind::Duplicate => "option given twice",
            ConfigErrorKind::TooManyTraps => "too many trapped ranges",
            ConfigErrorKind::TooManyGrants => "too many capability grants",
        }
    }
}

/// A command-line error and the word (or list item) it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError<'a> {
    pub kind: ConfigErrorKind,
    pub token: &'a str,
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command line: {}: `{}`",
            self.kind.describe(),
            self.token
        )
    }
}

impl Config {
    /// The configuration with no `cordon.*` option given.
    pub fn defaults() -> Config {
        let mut config = Config::empty();
        config.traps = default_traps();
        config.grants = default_grants();
        config
    }

    fn empty() -> Config {
        Config {
            traps: Vec::new(),
            grants: Vec::new(),
            x2apic: X2apic::Hide,
            rep_batch: DEFAULT_REP_BATCH,
        }
    }

    /// Parses a kernel command line.
    pub fn parse(cmdline: &str) -> Result<Config, ConfigError<'_>> {
        let mut config = Config::empty();
        let mut seen = Seen::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("cordon.") else {
                continue;
            };
            let error = |kind| ConfigError { kind, token: word };
            let (key, value) = option
                .split_once('=')
                .ok_or(error(ConfigErrorKind::MissingValue))?;
            match key {
                "trap" => {
                    seen.trap = true;
                    for item in list_items(value, word)? {
                        let range =
                            parse_trap(item).map_err(|kind| ConfigError { kind, token: item })?;
                        config
                            .traps
                            .push(range)
                            .map_err(|_| error(ConfigErrorKind::TooManyTraps))?;
                    }
                }
                "cap" => {
                    seen.cap = true;
                    for item in list_items(value, word)? {
                        let grant =
                            parse_grant(item).map_err(|kind| ConfigError { kind, token: item })?;
                        config
                            .grants
                            .push(grant)
                            .map_err(|_| error(ConfigErrorKind::TooManyGrants))?;
                    }
                }
                "x2apic" => {
                    if core::mem::replace(&mut seen.x2apic, true) {
                        return Err(error(ConfigErrorKind::Duplicate));
                    }
                    config.x2apic = match value {
                        "hide" => X2apic::Hide,
                        "show" => X2apic::Show,
                        _ => return Err(error(ConfigErrorKind::BadX2apic)),
                    };
                }
                "rep-batch" => {
                    if core::mem::replace(&mut seen.rep_batch, true) {
                        return Err(error(ConfigErrorKind::Duplicate));
                    }
                    config.rep_batch = parse_rep_batch(value).map_err(error)?;
                }
                _ => return Err(error(ConfigErrorKind::UnknownKey)),
            }
        }
        if !seen.trap {
            config.traps = default_traps();
        }
        if !seen.cap {
            config.grants = default_grants();
        }
        Ok(config)
    }
}

#[derive(Default)]
struct Seen {
    trap: bool,
    cap: bool,
    x2apic: bool,
    rep_batch: bool,
}

fn default_traps() -> Vec<PhysRange, MAX_TRAPS> {
    Vec::from_array([PhysRange::LAPIC, PhysRange::VGA_TEXT])
}

fn default_grants() -> Vec<Grant, MAX_GRANTS> {
    let all = |region| Grant {
        region,
        rights: Rights::ALL,
    };
    Vec::from_array([
        all(GrantRegion::GuestRam),
        all(GrantRegion::Range(PhysRange::LAPIC)),
        all(GrantRegion::Range(PhysRange::VGA_TEXT)),
    ])
}

/// The comma-separated items of `value`; an empty list or item is an error.
fn list_items<'a>(
    value: &'a str,
    word: &'a str,
) -> Result<impl Iterator<Item = &'a str>, ConfigError<'a>> {
    if value.split(',').any(str::is_empty) {
        return Err(ConfigError {
            kind: ConfigErrorKind::MissingValue,
            token: word,
        });
    }
    Ok(value.split(','))
}

fn parse_trap(item: &str) -> Result<PhysRange, ConfigErrorKind> {
    match parse_region(item)? {
        GrantRegion::Range(range) => Ok(range),
        GrantRegion::GuestRam => Err(ConfigErrorKind::UnknownRegion),
    }
}

fn parse_grant(item: &str) -> Result<Grant, ConfigErrorKind> {
    let (region, rights) = item.rsplit_once(':').ok_or(ConfigErrorKind::BadRights)?;
    Ok(Grant {
        region: parse_region(region)?,
        rights: parse_rights(rights)?,
    })
}

fn parse_region(text: &str) -> Result<GrantRegion, ConfigErrorKind> {
    match text {
        "lapic" => Ok(GrantRegion::Range(PhysRange::LAPIC)),
        "vga" => Ok(GrantRegion::Range(PhysRange::VGA_TEXT)),
        "guest-ram" => Ok(GrantRegion::GuestRam),
        _ if text.contains('-') => parse_range(text).map(GrantRegion::Range),
        _ => Err(ConfigErrorKind::UnknownRegion),
    }
}

/// `START-END`, hexadecimal, END inclusive, whole pages, below 2^52.
fn parse_range(text: &str) -> Result<PhysRange, ConfigErrorKind> {
    let (start, last) = text.split_once('-').ok_or(ConfigErrorKind::BadRange)?;
    let start = parse_hex(start)?;
    let last = parse_hex(last)?;
    if start > last {
        return Err(ConfigErrorKind::BadRange);
    }
    if last >= PHYS_LIMIT {
        return Err(ConfigErrorKind::AddressTooLarge);
    }
    // last < 2^52, so last + 1 cannot overflow.
    let range = PhysRange::new(start, last + 1).ok_or(ConfigErrorKind::BadRange)?;
    if !range.is_page_aligned() {
        return Err(ConfigErrorKind::MisalignedRange);
    }
    Ok(range)
}

fn parse_hex(text: &str) -> Result<u64, ConfigErrorKind> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    // from_str_radix accepts a leading '+': digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigErrorKind::BadNumber);
    }
    u64::from_str_radix(digits, 16).map_err(|_| ConfigErrorKind::AddressTooLarge)
}

fn parse_rights(text: &str) -> Result<u64, ConfigErrorKind> {
    if text.is_empty() {
        return Err(ConfigErrorKind::BadRights);
    }
    let mut rights = 0;
    for letter in text.bytes() {
        let bit = match letter {
            b'r' => Rights::READ,
            b'w' => Rights::WRITE,
            b'c' => Rights::CMPXCHG,
            _ => return Err(ConfigErrorKind::BadRights),
        };
        if rights & bit != 0 {
            return Err(ConfigErrorKind::BadRights);
        }
        rights |= bit;
    }
    Ok(rights)
}

fn parse_rep_batch(text: &str) -> Result<u32, ConfigErrorKind> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigErrorKind::BadNumber);
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_REP_BATCH).contains(&n) => Ok(n),
        _ => Err(ConfigErrorKind::RepBatchOutOfRange),
    }
}

#[cfg(test)]
mod tests;
