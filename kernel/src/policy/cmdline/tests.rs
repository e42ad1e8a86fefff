//! Tests of command-line parsing: defaults, every option, every error path.

use super::*;

fn parse_err(cmdline: &str) -> (ConfigErrorKind, &str) {
    let error = Config::parse(cmdline).unwrap_err();
    (error.kind, error.token)
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(start, end).unwrap()
}

#[test]
fn empty_command_line_gives_defaults() {
    let config = Config::parse("").unwrap();
    assert_eq!(config, Config::defaults());
    assert_eq!(
        config.traps.as_slice(),
        &[PhysRange::LAPIC, PhysRange::VGA_TEXT]
    );
    assert_eq!(config.grants.len(), 3);
    assert_eq!(config.grants[0].region, GrantRegion::GuestRam);
    assert_eq!(config.grants[0].rights, Rights::ALL);
    assert_eq!(config.x2apic, X2apic::Hide);
    assert_eq!(config.rep_batch, DEFAULT_REP_BATCH);
}

#[test]
fn foreign_words_are_ignored() {
    let config = Config::parse("console=ttyS0  quiet\tcordonx=1 cordon=2").unwrap();
    assert_eq!(config, Config::defaults());
}

#[test]
fn full_command_line() {
    let config = Config::parse(
        "quiet cordon.trap=lapic,0xa0000-0xAFFFF cordon.trap=vga \
         cordon.cap=guest-ram:r,lapic:rw cordon.cap=0xa0000-afFff:cwr \
         cordon.x2apic=show cordon.rep-batch=128",
    )
    .unwrap();
    assert_eq!(
        config.traps.as_slice(),
        &[
            PhysRange::LAPIC,
            range(0xa_0000, 0xb_0000),
            PhysRange::VGA_TEXT
        ]
    );
    assert_eq!(
        config.grants.as_slice(),
        &[
            Grant {
                region: GrantRegion::GuestRam,
                rights: Rights::READ
            },
            Grant {
                region: GrantRegion::Range(PhysRange::LAPIC),
                rights: Rights::READ | Rights::WRITE
            },
            Grant {
                region: GrantRegion::Range(range(0xa_0000, 0xb_0000)),
                rights: Rights::ALL
            },
        ]
    );
    assert_eq!(config.x2apic, X2apic::Show);
    assert_eq!(config.rep_batch, 128);
}

#[test]
fn given_traps_replace_defaults_but_keep_default_grants() {
    let config = Config::parse("cordon.trap=0x1000-0x1fff").unwrap();
    assert_eq!(config.traps.as_slice(), &[range(0x1000, 0x2000)]);
    assert_eq!(config.grants, Config::defaults().grants);
    let config = Config::parse("cordon.cap=vga:r").unwrap();
    assert_eq!(config.traps, Config::defaults().traps);
    assert_eq!(config.grants.len(), 1);
}

#[test]
fn range_end_is_inclusive_and_may_reach_the_physical_limit() {
    let config = Config::parse("cordon.trap=ffffffffff000-fffffffffffff").unwrap();
    assert_eq!(config.traps[0], range(0xf_ffff_ffff_f000, PHYS_LIMIT));
    let config = Config::parse("cordon.trap=0-fff").unwrap();
    assert_eq!(config.traps[0], range(0, 0x1000));
}

#[test]
fn malformed_options() {
    assert_eq!(
        parse_err("cordon.tarp=lapic"),
        (ConfigErrorKind::UnknownKey, "cordon.tarp=lapic")
    );
    assert_eq!(
        parse_err("cordon.trap"),
        (ConfigErrorKind::MissingValue, "cordon.trap")
    );
    assert_eq!(
        parse_err("cordon."),
        (ConfigErrorKind::MissingValue, "cordon.")
    );
    assert_eq!(
        parse_err("cordon.=x"),
        (ConfigErrorKind::UnknownKey, "cordon.=x")
    );
    assert_eq!(
        parse_err("cordon.trap="),
        (ConfigErrorKind::MissingValue, "cordon.trap=")
    );
    assert_eq!(
        parse_err("cordon.trap=lapic,"),
        (ConfigErrorKind::MissingValue, "cordon.trap=lapic,")
    );
    assert_eq!(
        parse_err("cordon.cap=,vga:r"),
        (ConfigErrorKind::MissingValue, "cordon.cap=,vga:r")
    );
}

#[test]
fn malformed_ranges() {
    let cases = [
        (
            "cordon.trap=0x1000-0x0fff",
            ConfigErrorKind::BadRange,
            "0x1000-0x0fff",
        ),
        ("cordon.trap=0x1000-", ConfigErrorKind::BadNumber, "0x1000-"),
        ("cordon.trap=-0x1fff", ConfigErrorKind::BadNumber, "-0x1fff"),
        (
            "cordon.trap=0x1000-0x1fff-0x2fff",
            ConfigErrorKind::BadNumber,
            "0x1000-0x1fff-0x2fff",
        ),
        (
            "cordon.trap=0x1g00-0x1fff",
            ConfigErrorKind::BadNumber,
            "0x1g00-0x1fff",
        ),
        (
            "cordon.trap=+1000-1fff",
            ConfigErrorKind::BadNumber,
            "+1000-1fff",
        ),
        (
            "cordon.trap=0x-0x1fff",
            ConfigErrorKind::BadNumber,
            "0x-0x1fff",
        ),
        (
            "cordon.trap=0x1000-0x1ffe",
            ConfigErrorKind::MisalignedRange,
            "0x1000-0x1ffe",
        ),
        (
            "cordon.trap=0x1001-0x1fff",
            ConfigErrorKind::MisalignedRange,
            "0x1001-0x1fff",
        ),
        (
            "cordon.trap=0-10000000000000",
            ConfigErrorKind::AddressTooLarge,
            "0-10000000000000",
        ),
        (
            "cordon.trap=0-ffffffffffffffff",
            ConfigErrorKind::AddressTooLarge,
            "0-ffffffffffffffff",
        ),
        (
            "cordon.trap=0-1ffffffffffffffff",
            ConfigErrorKind::AddressTooLarge,
            "0-1ffffffffffffffff",
        ),
        ("cordon.trap=apic", ConfigErrorKind::UnknownRegion, "apic"),
        (
            "cordon.trap=guest-ram",
            ConfigErrorKind::UnknownRegion,
            "guest-ram",
        ),
        (
            "cordon.cap=ram:rw",
            ConfigErrorKind::UnknownRegion,
            "ram:rw",
        ),
    ];
    for (cmdline, kind, token) in cases {
        assert_eq!(parse_err(cmdline), (kind, token), "{cmdline}");
    }
}

#[test]
fn malformed_rights() {
    for (item, token) in [
        ("cordon.cap=vga", "vga"),
        ("cordon.cap=vga:", "vga:"),
        ("cordon.cap=vga:rx", "vga:rx"),
        ("cordon.cap=vga:rr", "vga:rr"),
        ("cordon.cap=vga:R", "vga:R"),
        ("cordon.cap=lapic:r:w", "lapic:r:w"),
    ] {
        let (kind, got) = parse_err(item);
        assert_eq!(got, token, "{item}");
        assert!(
            matches!(
                kind,
                ConfigErrorKind::BadRights | ConfigErrorKind::UnknownRegion
            ),
            "{item}: {kind:?}"
        );
    }
    assert_eq!(parse_err("cordon.cap=vga:rx").0, ConfigErrorKind::BadRights);
}

#[test]
fn x2apic_and_rep_batch() {
    assert_eq!(
        Config::parse("cordon.x2apic=hide").unwrap().x2apic,
        X2apic::Hide
    );
    assert_eq!(parse_err("cordon.x2apic=on").0, ConfigErrorKind::BadX2apic);
    assert_eq!(
        parse_err("cordon.x2apic=show cordon.x2apic=show").0,
        ConfigErrorKind::Duplicate
    );
    assert_eq!(Config::parse("cordon.rep-batch=1").unwrap().rep_batch, 1);
    assert_eq!(
        Config::parse("cordon.rep-batch=4096").unwrap().rep_batch,
        MAX_REP_BATCH
    );
    assert_eq!(
        parse_err("cordon.rep-batch=0").0,
        ConfigErrorKind::RepBatchOutOfRange
    );
    assert_eq!(
        parse_err("cordon.rep-batch=4097").0,
        ConfigErrorKind::RepBatchOutOfRange
    );
    assert_eq!(
        parse_err("cordon.rep-batch=99999999999").0,
        ConfigErrorKind::RepBatchOutOfRange
    );
    assert_eq!(
        parse_err("cordon.rep-batch=+5").0,
        ConfigErrorKind::BadNumber
    );
    assert_eq!(
        parse_err("cordon.rep-batch=0x10").0,
        ConfigErrorKind::BadNumber
    );
    assert_eq!(parse_err("cordon.rep-batch=").0, ConfigErrorKind::BadNumber);
    assert_eq!(
        parse_err("cordon.rep-batch=1 cordon.rep-batch=1").0,
        ConfigErrorKind::Duplicate
    );
}

#[test]
fn capacity_overflow_is_an_error() {
    let mut line = std::string::String::from("cordon.trap=");
    for page in 0..MAX_TRAPS as u64 {
        line += &std::format!("{:x}-{:x},", page * 0x1000, page * 0x1000 + 0xfff);
    }
    line.pop();
    assert_eq!(Config::parse(&line).unwrap().traps.len(), MAX_TRAPS);
    line += ",vga";
    assert_eq!(parse_err(&line).0, ConfigErrorKind::TooManyTraps);

    let mut line = std::string::String::new();
    for _ in 0..MAX_GRANTS {
        line += "cordon.cap=vga:r ";
    }
    assert_eq!(Config::parse(&line).unwrap().grants.len(), MAX_GRANTS);
    line += "cordon.cap=lapic:r";
    assert_eq!(parse_err(&line).0, ConfigErrorKind::TooManyGrants);
}

#[test]
fn error_display_names_the_token() {
    let error = Config::parse("cordon.cap=vga:z").unwrap_err();
    assert_eq!(
        std::format!("{error}"),
        "command line: bad rights (want REGION:RIGHTS, RIGHTS from r, w, c): `vga:z`"
    );
}
