//! `cargo boot test`: the licence check, the host tests, and every end-to-end
//! boot in one table; prints one line per test and `N passed, N failed`.

use crate::cli::{RunOptions, Vmm};
use crate::image;
use crate::licences;
use crate::run::{self, SELFTEST_UD2};
use crate::verdict::Verdict;
use crate::vmm;
use std::path::Path;
use std::time::{Duration, Instant};

/// One end-to-end boot of the table.
struct BootCase {
    name: &'static str,
    /// Image name under target/cordon/.
    image: &'static str,
    service: &'static str,
    vmm: Vmm,
    no_hypervisor: bool,
    extra_kernel_arguments: &'static str,
    timeout: Duration,
    /// Guest from the catalogue, and the emulated CPUs it needs.
    guest: &'static str,
    cpus: u32,
}

const fn case(name: &'static str, image: &'static str, service: &'static str) -> BootCase {
    BootCase {
        name,
        image,
        service,
        vmm: Vmm::Bochs,
        no_hypervisor: false,
        extra_kernel_arguments: "",
        timeout: Duration::from_secs(600),
        guest: "demo",
        cpus: 1,
    }
}

const BOOTS: &[BootCase] = &[
    BootCase {
        extra_kernel_arguments: SELFTEST_UD2,
        timeout: Duration::from_secs(120),
        ..case(
            "core boot self-test: exception report (bochs)",
            "test-selftest",
            "emulator",
        )
    },
    BootCase {
        no_hypervisor: true,
        ..case(
            "demo guest alone, booted by GRUB without Cordon (bochs)",
            "test-bare",
            "emulator",
        )
    },
    case(
        "demo guest under Cordon, emulator service (bochs)",
        "test-emulator",
        "emulator",
    ),
    case(
        "demo guest under Cordon, tracing service (bochs)",
        "test-trace",
        "trace",
    ),
    // Two CPUs, so another service instance exists whose writes must not
    // reach CPU 0's replies.
    BootCase {
        cpus: 2,
        ..case(
            "demo guest under Cordon, hostile service, 2 CPUs (bochs)",
            "test-hostile",
            "hostile",
        )
    },
    // The issue-5 experiments (tests/guests/experiments).
    BootCase {
        guest: "smp",
        cpus: 4,
        ..case(
            "smp guest: INIT-SIPI-SIPI through the emulated ICR, 4 CPUs (bochs)",
            "test-smp",
            "emulator",
        )
    },
    BootCase {
        guest: "smp-sipi",
        cpus: 4,
        ..case(
            "smp guest with SIPI-SIPI only (no INIT), 4 CPUs (bochs)",
            "test-smp-sipi",
            "emulator",
        )
    },
    BootCase {
        guest: "handoff",
        cpus: 3,
        ..case(
            "handoff guest: XCHG lost-update experiment, 3 vCPUs, 64- and 32-bit (bochs)",
            "test-handoff",
            "emulator",
        )
    },
    BootCase {
        guest: "page-ring",
        cpus: 2,
        ..case(
            "page-ring guest: split LOCK CMPXCHG8B against LOCK XADD, 2 vCPUs (bochs)",
            "test-page-ring",
            "emulator",
        )
    },
    BootCase {
        guest: "segments",
        ..case(
            "segments guest: limits, rights and segment-register loads, by CPU and emulator (bochs)",
            "test-segments",
            "emulator",
        )
    },
    BootCase {
        guest: "paging",
        ..case(
            "paging guest: #PF error codes and CR2, SMAP/SMEP, A/D bits (bochs)",
            "test-paging",
            "emulator",
        )
    },
];

/// The image pair whose kernel.elf must be byte-identical (service swapped by
/// the module line only).
const SWAPPED_IMAGES: [&str; 2] = ["test-emulator", "test-trace"];

/// Runs the whole table; true if everything passed.
pub fn run_all(root: &Path) -> bool {
    let mut results: Vec<(String, Result<String, String>, Duration)> = Vec::new();
    let total = 4 + BOOTS.len() + 1;
    let mut record = |name: String, work: &mut dyn FnMut() -> Result<String, String>| {
        let index = results.len() + 1;
        println!("boot: test {index}/{total}: {name}");
        let started = Instant::now();
        let outcome = work();
        let elapsed = started.elapsed();
        match &outcome {
            Ok(detail) => println!(
                "boot: test {index}/{total}: PASS {detail} ({:.1} s)",
                elapsed.as_secs_f64()
            ),
            Err(reason) => println!(
                "boot: test {index}/{total}: FAIL {reason} ({:.1} s)",
                elapsed.as_secs_f64()
            ),
        }
        results.push((name, outcome, elapsed));
    };

    record(
        "licences of all dependencies (deny.toml)".into(),
        &mut || licences::check(root),
    );
    record(
        "code style (cargo fmt --check, cargo clippy -D warnings)".into(),
        &mut || code_style(root),
    );
    record("host tests (cargo test --workspace)".into(), &mut || {
        host_tests(root)
    });
    for boot in BOOTS {
        record(boot.name.into(), &mut || run_boot(root, boot));
    }
    record(
        "kernel.elf byte-identical in both service images".into(),
        &mut || kernel_identical(root),
    );
    record(qemu_case_name(), &mut || qemu_boot(root));

    println!();
    for (name, outcome, elapsed) in &results {
        let status = if outcome.is_ok() { "PASS" } else { "FAIL" };
        println!("  {status}  {name} ({:.1} s)", elapsed.as_secs_f64());
    }
    let failed = results
        .iter()
        .filter(|(_, outcome, _)| outcome.is_err())
        .count();
    println!("{} passed, {failed} failed", results.len() - failed);
    failed == 0
}

/// Runs one cargo command in the workspace; `Err(what)` if it fails.
fn cargo_step(root: &Path, args: &[&str], what: &str) -> Result<(), String> {
    let status = crate::cargo::command(root)
        .args(args)
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} ({status})"))
    }
}

/// Formatting and lints of every host target (the rules in the README).
fn code_style(root: &Path) -> Result<String, String> {
    cargo_step(
        root,
        &["fmt", "--all", "--", "--check"],
        "cargo fmt --check found unformatted code",
    )?;
    cargo_step(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        "cargo clippy found warnings",
    )?;
    let bare_metal = bare_metal_clippy_arguments();
    let arguments: Vec<&str> = bare_metal.iter().map(String::as_str).collect();
    cargo_step(
        root,
        &arguments,
        "cargo clippy found warnings in bare-metal code",
    )?;
    Ok("formatted, no clippy warnings (host and bare-metal targets)".into())
}

/// `cargo clippy` over every bare-metal binary the tool builds (kernel,
/// services, guests) with its `bare-metal` feature and extra features: the
/// host run above never compiles them.
fn bare_metal_clippy_arguments() -> Vec<String> {
    let binaries: Vec<&crate::catalog::CrateBinary> = std::iter::once(&crate::catalog::KERNEL)
        .chain(
            crate::catalog::SERVICES
                .iter()
                .map(|service| &service.binary),
        )
        .chain(crate::catalog::GUESTS.iter().map(|guest| &guest.binary))
        .collect();
    let mut packages: Vec<&str> = binaries.iter().map(|binary| binary.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let features = crate::bare_build::feature_list(binaries.iter().copied());
    let mut arguments: Vec<String> = [
        "clippy",
        "--target",
        crate::bare_build::TARGET,
        "--target-dir",
        "target/bare-clippy",
        "--bins",
        "--lib",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect();
    for package in packages {
        arguments.push("-p".into());
        arguments.push(package.into());
    }
    arguments.push("--features".into());
    arguments.push(features.join(","));
    arguments.extend(["--", "-D", "warnings"].map(String::from));
    arguments
}

fn host_tests(root: &Path) -> Result<String, String> {
    cargo_step(
        root,
        &["test", "--workspace"],
        "cargo test --workspace failed",
    )?;
    Ok("all passed".into())
}

fn run_boot(root: &Path, boot: &BootCase) -> Result<String, String> {
    let options = RunOptions {
        guest: boot.guest.into(),
        cpus: boot.cpus,
        service: boot.service.into(),
        vmm: boot.vmm,
        no_hypervisor: boot.no_hypervisor,
        timeout: boot.timeout,
    };
    let prepared = run::prepare(root, &options, boot.image, boot.extra_kernel_arguments)?;
    let report = run::boot(prepared, &options, &mut std::io::stdout())?;
    match report.verdict {
        Verdict::Pass(summary) => Ok(summary),
        Verdict::Fail(reason) => Err(reason),
    }
}

fn kernel_identical(root: &Path) -> Result<String, String> {
    let output = run::output_dir(root);
    let mut kernels = Vec::new();
    for name in SWAPPED_IMAGES {
        let iso = output.join(format!("{name}.iso"));
        if !iso.is_file() {
            return Err(format!("{} was not built", iso.display()));
        }
        let copy = output.join(name).join("kernel-from-iso.elf");
        kernels.push(image::extract(&iso, "/boot/kernel.elf", &copy)?);
    }
    if kernels[0] == kernels[1] {
        Ok(format!("{} bytes", kernels[0].len()))
    } else {
        Err(format!(
            "kernel.elf differs between {} and {}",
            SWAPPED_IMAGES[0], SWAPPED_IMAGES[1]
        ))
    }
}

fn qemu_case_name() -> String {
    if vmm::nested_vmx_available() {
        "demo guest under Cordon in QEMU/KVM (nested VMX)".into()
    } else {
        "QEMU without VMX (TCG): the core reports `VMX not available`".into()
    }
}

/// With nested VMX the demo must pass; without (TCG, or KVM on an AMD host)
/// the run must end quickly with the core's clear refusal, not hang.
fn qemu_boot(root: &Path) -> Result<String, String> {
    let options = RunOptions {
        vmm: Vmm::Qemu,
        timeout: Duration::from_secs(120),
        ..RunOptions::default()
    };
    let prepared = run::prepare(root, &options, "test-qemu", "")?;
    let report = run::boot(prepared, &options, &mut std::io::stdout())?;
    match (vmm::nested_vmx_available(), report.verdict) {
        (true, Verdict::Pass(summary)) => Ok(summary),
        (false, Verdict::Fail(reason)) if reason == "VMX not available" => Ok(format!(
            "reported in {:.1} s",
            report.total_time.as_secs_f64()
        )),
        (_, Verdict::Fail(reason)) => Err(reason),
        (false, Verdict::Pass(summary)) => Err(format!("passed without VMX?! {summary}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_metal_clippy_covers_every_built_binary_with_its_features() {
        let arguments = bare_metal_clippy_arguments();
        let joined = arguments.join(" ");
        for package in [
            "kernel",
            "emulator",
            "hostile-service",
            "demo-guest",
            "experiments-guest",
        ] {
            assert!(joined.contains(&format!("-p {package} ")), "{joined}");
            assert!(
                joined.contains(&format!("{package}/bare-metal")),
                "{joined}"
            );
        }
        assert!(joined.contains("emulator/trace"), "{joined}");
        assert!(joined.ends_with("-- -D warnings"), "{joined}");
    }
}
