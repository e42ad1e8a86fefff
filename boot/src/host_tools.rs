//! The host packages a boot needs (Bochs, GRUB, xorriso, mtools, QEMU): found,
//! installed with apt-get when running as root on Debian/Ubuntu, or named in an
//! error with the exact command to run.

use crate::cli::Vmm;
use std::path::Path;
use std::process::Command;

/// Debian packages and a file that shows they are installed.
struct Requirement {
    packages: &'static [&'static str],
    evidence: &'static str,
}

const IMAGE_TOOLS: &[Requirement] = &[
    Requirement {
        packages: &["grub-common"],
        evidence: "/usr/bin/grub-mkrescue",
    },
    Requirement {
        packages: &["grub-pc-bin"],
        evidence: "/usr/lib/grub/i386-pc/multiboot2.mod",
    },
    Requirement {
        packages: &["xorriso"],
        evidence: "/usr/bin/xorriso",
    },
    Requirement {
        packages: &["mtools"],
        evidence: "/usr/bin/mformat",
    },
];

const BOCHS: &[Requirement] = &[
    // bochs needs one display plugin package; the terminal one is the smallest
    // (the headless runs use the built-in rfb display).
    Requirement {
        packages: &["bochs", "bochs-term"],
        evidence: "/usr/bin/bochs",
    },
    Requirement {
        packages: &["bochsbios"],
        evidence: "/usr/share/bochs/BIOS-bochs-latest",
    },
    Requirement {
        packages: &["vgabios"],
        evidence: "/usr/share/vgabios/vgabios.bin",
    },
];

const QEMU: &[Requirement] = &[Requirement {
    packages: &["qemu-system-x86"],
    evidence: "/usr/bin/qemu-system-x86_64",
}];

/// The packages missing for image building and `vmm`, judged by `exists`.
fn missing_packages(vmm: Option<Vmm>, exists: impl Fn(&Path) -> bool) -> Vec<&'static str> {
    let for_vmm = match vmm {
        Some(Vmm::Bochs) => BOCHS,
        Some(Vmm::Qemu) => QEMU,
        None => &[],
    };
    IMAGE_TOOLS
        .iter()
        .chain(for_vmm)
        .filter(|requirement| !exists(Path::new(requirement.evidence)))
        .flat_map(|requirement| requirement.packages.iter().copied())
        .collect()
}

fn install_command(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Makes sure the packages for building images (and for `vmm`, if given) are
/// installed.
pub fn ensure(vmm: Option<Vmm>) -> Result<(), String> {
    let missing = missing_packages(vmm, Path::exists);
    if missing.is_empty() {
        return Ok(());
    }
    let install = install_command(&missing);
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "missing host packages: {}; install them with: sudo {install}",
            missing.join(" ")
        ));
    }
    eprintln!("boot: installing {}", missing.join(" "));
    let install_arguments = ["install", "-y", "--no-install-recommends"];
    if !apt_get(&install_arguments, &missing)? {
        eprintln!("boot: apt-get install failed; updating the package lists and retrying");
        if !apt_get(&["update"], &[])? || !apt_get(&install_arguments, &missing)? {
            return Err(format!("`{install}` failed (see above)"));
        }
    }
    let still_missing = missing_packages(vmm, Path::exists);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "apt-get succeeded but {} still missing",
            still_missing.join(" ")
        ))
    }
}

fn apt_get(arguments: &[&str], packages: &[&str]) -> Result<bool, String> {
    let status = Command::new("apt-get")
        .args(arguments)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|error| format!("cannot run apt-get: {error}"))?;
    Ok(status.success())
}

/// Whether this process runs as root (the owner of /proc/self is the
/// effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_missing_when_everything_exists() {
        assert!(missing_packages(Some(Vmm::Bochs), |_| true).is_empty());
    }

    #[test]
    fn the_emulator_decides_which_packages_are_wanted() {
        let qemu = missing_packages(Some(Vmm::Qemu), |_| false);
        assert_eq!(
            qemu,
            [
                "grub-common",
                "grub-pc-bin",
                "xorriso",
                "mtools",
                "qemu-system-x86"
            ]
        );
        let bochs = missing_packages(Some(Vmm::Bochs), |path| !path.starts_with("/usr/share"));
        assert_eq!(bochs, ["bochsbios", "vgabios"]);
        let image_only = missing_packages(None, |path| path != Path::new("/usr/bin/xorriso"));
        assert_eq!(image_only, ["xorriso"]);
    }

    #[test]
    fn the_install_command_is_complete() {
        assert_eq!(
            install_command(&["bochs", "bochs-term"]),
            "apt-get install -y --no-install-recommends bochs bochs-term"
        );
    }
}
