//! The guests and services `cargo boot` knows by name: which crate and binary
//! each is, and the kernel command line each guest runs with.

/// A bare-metal binary built from a workspace crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrateBinary {
    /// Cargo package name.
    pub package: &'static str,
    /// Binary target name (the file under target/bare/.../release/).
    pub bin: &'static str,
    /// Cargo features besides `bare-metal`.
    pub features: &'static [&'static str],
}

/// A guest the tool can boot.
#[derive(Debug)]
pub struct Guest {
    pub name: &'static str,
    pub binary: CrateBinary,
    /// The `cordon.*` options the core runs this guest with (see
    /// kernel/src/policy/cmdline.rs for their meaning).
    pub kernel_command_line: &'static str,
    /// What the guest gets on its own command line (multiboot2 tag 1).
    pub guest_command_line: &'static str,
}

/// A service the tool can load as the `service` module.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub binary: CrateBinary,
    /// Serial-log markers a run with this service must show to pass (on top of
    /// the guest's), and markers that fail it at once.
    pub required_markers: &'static [&'static str],
    pub failure_markers: &'static [&'static str],
    /// `(item, total)`: lines with `item` must number what follows `total` (see
    /// `verdict::Tally`).
    pub tally: Option<(&'static str, &'static str)>,
    /// Whether a run needs the guest's `RESULT: PASS` and the core's
    /// `cordon: guest done` (false for services that do not emulate).
    pub guest_completes: bool,
}

/// The kernel binary.
pub const KERNEL: CrateBinary = CrateBinary {
    package: "kernel",
    bin: "kernel",
    features: &[],
};

/// The core's command line for guests that need only the default traps: the
/// LAPIC page and VGA text memory, with the service holding every right on
/// guest RAM and both devices, x2APIC hidden so the LAPIC is used over MMIO.
const STANDARD_KERNEL_COMMAND_LINE: &str =
    "cordon.trap=lapic,vga cordon.cap=guest-ram:rwc,lapic:rwc,vga:rwc cordon.x2apic=hide";

/// One of the issue-5 experiment guests (tests/guests/experiments): binary
/// `NAME-guest`, the standard command line, its name as guest command line.
const fn experiment(name: &'static str, bin: &'static str) -> Guest {
    Guest {
        name,
        binary: CrateBinary {
            package: "experiments-guest",
            bin,
            features: &[],
        },
        kernel_command_line: STANDARD_KERNEL_COMMAND_LINE,
        guest_command_line: name,
    }
}

pub const GUESTS: &[Guest] = &[
    Guest {
        name: "demo",
        binary: CrateBinary {
            package: "demo-guest",
            bin: "demo-guest",
            features: &[],
        },
        kernel_command_line: STANDARD_KERNEL_COMMAND_LINE,
        guest_command_line: "demo",
    },
    // The issue-5 experiments; `cargo boot test` runs each with the CPU count
    // it needs.
    experiment("smp", "smp-guest"),
    // The same guest waking the APs with SIPI-SIPI only: Cordon's AP vCPUs
    // already wait for SIPI, so they need no INIT.
    experiment("smp-sipi", "smp-sipi-guest"),
    experiment("handoff", "handoff-guest"),
    Guest {
        // Frames A = 0x3000000 and A + 4K: trapped guest RAM the service
        // reaches through its guest-ram capability (map and cmpxchg).
        kernel_command_line: "cordon.trap=lapic,vga,0x3000000-0x3001fff \
                              cordon.cap=guest-ram:rwc,lapic:rwc,vga:rwc cordon.x2apic=hide",
        ..experiment("page-ring", "page-ring-guest")
    },
    experiment("segments", "segments-guest"),
    experiment("paging", "paging-guest"),
];

pub const SERVICES: &[Service] = &[
    Service {
        name: "emulator",
        binary: CrateBinary {
            package: "emulator",
            bin: "service",
            features: &[],
        },
        required_markers: &[],
        failure_markers: &[],
        tally: None,
        guest_completes: true,
    },
    Service {
        name: "trace",
        binary: CrateBinary {
            package: "emulator",
            bin: "service",
            features: &["trace"],
        },
        // One line per emulated instruction: `emulator: trace: cpu 0 exit ...`.
        required_markers: &[": trace: cpu "],
        failure_markers: &[],
        tally: None,
        guest_completes: true,
    },
    Service {
        name: "hostile",
        binary: CrateBinary {
            package: "hostile-service",
            bin: "hostile-service",
            features: &[],
        },
        // Attacks at the first exit (each refused, `hostile: PASS` at the end),
        // then a deliberate fault: the core restarts the instance, which
        // serves the guest normally.
        required_markers: &[
            "hostile: reply rewritten by another CPU: impossible",
            "hostile: PASS",
            "service fault: exception 14",
            "hostile: restarted by the core after the deliberate fault (restart 1)",
        ],
        failure_markers: &["hostile: FAIL", ": ACCEPTED"],
        // Every refusal has its own line, and the closing count agrees.
        tally: Some((": refused ", "hostile: done, ")),
        guest_completes: true,
    },
];

/// The guest called `name`.
pub fn guest(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|guest| guest.name == name)
}

/// The service called `name` (catalogue name, or the binary name of a service
/// built without extra features).
pub fn service(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|service| {
        service.name == name || (service.binary.bin == name && service.binary.features.is_empty())
    })
}

/// The names the catalogue knows, for error messages.
pub fn guest_names() -> String {
    GUESTS
        .iter()
        .map(|guest| guest.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The service names the catalogue knows, for error messages.
pub fn service_names() -> String {
    SERVICES
        .iter()
        .map(|service| service.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_name_and_binary() {
        assert_eq!(
            guest("demo").map(|guest| guest.binary.bin),
            Some("demo-guest")
        );
        assert!(guest("nonesuch").is_none());
        assert_eq!(
            service("service").map(|service| service.name),
            Some("emulator")
        );
        assert_eq!(
            service("trace").map(|service| service.binary.features),
            Some(&["trace"][..])
        );
        assert!(service("nonesuch").is_none());
    }

    #[test]
    fn command_lines_hold_only_cordon_options() {
        for guest in GUESTS {
            for word in guest.kernel_command_line.split_whitespace() {
                assert!(word.starts_with("cordon."), "{word} in {}", guest.name);
            }
        }
    }
}
