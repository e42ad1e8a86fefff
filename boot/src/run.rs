//! One boot, end to end: resolve guest and service, build them and the kernel,
//! make the image, boot it, and judge it.

use crate::bare_build;
use crate::catalog::{self, CrateBinary};
use crate::cli::{RunOptions, Vmm};
use crate::host_tools;
use crate::image::{self, ImageContents};
use crate::verdict::{Expectations, Judge, Tally};
use crate::vmm::{self, BootReport, Machine};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Kernel command-line switch for the boot self-test (see kernel/src/main.rs).
pub const SELFTEST_UD2: &str = "cordon.selftest=ud2";

/// A built image, ready to boot.
#[derive(Debug)]
pub struct Prepared {
    pub iso: PathBuf,
    pub work_dir: PathBuf,
    pub expectations: Expectations,
}

/// Where images and logs go: target/cordon/.
pub fn output_dir(root: &Path) -> PathBuf {
    root.join("target").join("cordon")
}

enum Source {
    Built(&'static CrateBinary),
    File(PathBuf),
}

fn as_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(name);
    (name.contains('/') || path.is_file()).then_some(path)
}

/// Builds everything `options` names and writes the image `name`.iso.
/// `extra_kernel_arguments` are appended to the guest's kernel command line.
pub fn prepare(
    root: &Path,
    options: &RunOptions,
    name: &str,
    extra_kernel_arguments: &str,
) -> Result<Prepared, String> {
    host_tools::ensure(None)?;
    let (guest_source, kernel_command_line, guest_command_line) =
        match catalog::guest(&options.guest) {
            Some(guest) => (
                Source::Built(&guest.binary),
                guest.kernel_command_line,
                guest.guest_command_line,
            ),
            None => match as_file(&options.guest) {
                Some(path) => (Source::File(path), "", ""),
                None => {
                    return Err(format!(
                        "unknown guest `{}` (known: {})",
                        options.guest,
                        catalog::guest_names()
                    ));
                }
            },
        };
    let service = catalog::service(&options.service);
    let service_source = match (service, as_file(&options.service)) {
        (Some(service), _) => Source::Built(&service.binary),
        (None, Some(path)) => Source::File(path),
        (None, None) => {
            return Err(format!(
                "unknown service `{}` (known: {}, or a path)",
                options.service,
                catalog::service_names()
            ));
        }
    };

    let mut wanted: Vec<&CrateBinary> = Vec::new();
    if !options.no_hypervisor {
        wanted.push(&catalog::KERNEL);
        if let Source::Built(binary) = service_source {
            wanted.push(binary);
        }
    }
    if let Source::Built(binary) = guest_source {
        wanted.push(binary);
    }
    println!(
        "boot: building {} (bare metal)",
        wanted
            .iter()
            .map(|binary| binary.bin)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = std::io::stdout().flush();
    let mut built = bare_build::build(root, &wanted)?.into_iter();
    let mut next = |source: Source| -> Result<PathBuf, String> {
        match source {
            Source::Built(binary) => built
                .next()
                .ok_or_else(|| format!("{} was not built", binary.bin)),
            Source::File(path) if path.is_file() => Ok(path),
            Source::File(path) => Err(format!("{} does not exist", path.display())),
        }
    };
    let kernel = if options.no_hypervisor {
        None
    } else {
        Some(next(Source::Built(&catalog::KERNEL))?)
    };
    let service_path = if options.no_hypervisor {
        None
    } else {
        Some(next(service_source)?)
    };
    let guest = next(guest_source)?;

    let work_dir = output_dir(root).join(name);
    let iso = output_dir(root).join(format!("{name}.iso"));
    let command_line = format!("{kernel_command_line} {extra_kernel_arguments}")
        .trim()
        .to_string();
    let contents = match (&kernel, &service_path) {
        (Some(kernel), Some(service)) => ImageContents::Hypervisor {
            kernel,
            kernel_command_line: &command_line,
            service,
            guest: &guest,
            guest_command_line,
        },
        _ => ImageContents::GuestOnly {
            guest: &guest,
            guest_command_line,
        },
    };
    image::make_iso(&contents, &work_dir.join("iso"), &iso)?;
    let expectations = expectations(options, service, extra_kernel_arguments);
    Ok(Prepared {
        iso,
        work_dir,
        expectations,
    })
}

/// What the serial log must show for this kind of run.
fn expectations(
    options: &RunOptions,
    service: Option<&catalog::Service>,
    extra: &str,
) -> Expectations {
    if extra.split_whitespace().any(|word| word == SELFTEST_UD2) {
        return Expectations {
            required: vec!["cordon: selftest exception report ok".into()],
            tolerated: vec!["cordon: EXCEPTION #UD".into()],
            ..Expectations::default()
        };
    }
    if options.no_hypervisor {
        return Expectations {
            required: vec!["RESULT: PASS".into()],
            ..Expectations::default()
        };
    }
    let mut expectations = Expectations::default();
    let guest_completes = service.is_none_or(|service| service.guest_completes);
    if guest_completes {
        expectations.required = vec!["RESULT: PASS".into(), "cordon: guest done".into()];
        expectations.guest_done_line = true;
    }
    if let Some(service) = service {
        expectations.required.extend(
            service
                .required_markers
                .iter()
                .map(|marker| marker.to_string()),
        );
        expectations.failures.extend(
            service
                .failure_markers
                .iter()
                .map(|marker| marker.to_string()),
        );
        expectations.tally = service.tally.map(|(item, total)| Tally {
            item: item.into(),
            total: total.into(),
        });
    }
    expectations
}

/// Boots a prepared image.
pub fn boot(
    prepared: Prepared,
    options: &RunOptions,
    echo: &mut dyn Write,
) -> Result<BootReport, String> {
    host_tools::ensure(Some(options.vmm))?;
    let vmm_name = match options.vmm {
        Vmm::Bochs => "bochs",
        Vmm::Qemu if vmm::kvm_usable() => "qemu (kvm)",
        Vmm::Qemu => "qemu (tcg)",
    };
    let _ = writeln!(
        echo,
        "boot: starting {vmm_name} with {} cpu(s): {}",
        options.cpus,
        prepared.iso.display()
    );
    let machine = Machine {
        vmm: options.vmm,
        iso: &prepared.iso,
        cpus: options.cpus,
        work_dir: &prepared.work_dir,
    };
    vmm::boot(
        &machine,
        Judge::new(prepared.expectations),
        options.timeout,
        echo,
    )
}

/// `cargo boot run`: everything, then one closing `RESULT:` line.
pub fn run_command(root: &Path, options: &RunOptions) -> bool {
    let outcome = prepare(root, options, "cordon", "")
        .and_then(|prepared| boot(prepared, options, &mut std::io::stdout()));
    match outcome {
        Ok(report) => {
            let timing = format!(
                "BIOS+GRUB {}, total {:.1} s",
                report.firmware_time.map_or("?".to_string(), |time| format!(
                    "{:.1} s",
                    time.as_secs_f64()
                )),
                report.total_time.as_secs_f64()
            );
            match report.verdict {
                crate::verdict::Verdict::Pass(summary) => {
                    if let Some(figure) = summary
                        .split("; ")
                        .find(|part| part.starts_with("mmio-store:"))
                    {
                        println!("{figure}");
                    }
                    println!("RESULT: PASS {summary} ({timing})");
                    true
                }
                crate::verdict::Verdict::Fail(reason) => {
                    println!("RESULT: FAIL {reason} ({timing})");
                    false
                }
            }
        }
        Err(error) => {
            println!("RESULT: FAIL {error}");
            false
        }
    }
}
