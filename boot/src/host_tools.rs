//! The host packages a boot needs (Bochs, GRUB, xorriso, mtools, QEMU): found,
//! installed with apt-get when running as root on Debian/Ubuntu, or named in an
//! error with the exact command to run.

use crate::cli::Vmm;
use std::path::Path;
use std::process::Command;

/// A Debian package and a file that shows it is installed.
struct Requirement {
    package: &'static str,
    evidence: &'static str,
}

const IMAGE_TOOLS: &[Requirement] = &[
    Requirement {
        package: "grub-common",
        evidence: "/usr/bin/grub-mkrescue",
    },
    Requirement {
        package: "grub-pc-bin",
        evidence: "/usr/lib/grub/i386-pc/multiboot2.mod",
    },
    Requirement {
        package: "xorriso",
        evidence: "/usr/bin/xorriso",
    },
    Requirement {
        package: "mtools",
        evidence: "/usr/bin/mformat",
    },
];

const BOCHS: &[Requirement] = &[
    Requirement {
        package: "bochs",
        evidence: "/usr/bin/bochs",
    },
    Requirement {
        package: "bochsbios",
        evidence: "/usr/share/bochs/BIOS-bochs-latest",
    },
    Requirement {
        package: "vgabios",
        evidence: "/usr/share/vgabios/vgabios.bin",
    },
];

const QEMU: &[Requirement] = &[Requirement {
    package: "qemu-system-x86",
    evidence: "/usr/bin/qemu-system-x86_64",
}];

/// Makes sure the packages for building images (and for `vmm`, if given) are
/// installed.
pub fn ensure(vmm: Option<Vmm>) -> Result<(), String> {
    let mut wanted: Vec<&Requirement> = IMAGE_TOOLS.iter().collect();
    match vmm {
        Some(Vmm::Bochs) => wanted.extend(BOCHS),
        Some(Vmm::Qemu) => wanted.extend(QEMU),
        None => {}
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|requirement| !Path::new(requirement.evidence).exists())
        .map(|requirement| requirement.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "missing host packages: {}; install them with: sudo {install}",
            missing.join(" ")
        ));
    }
    eprintln!("boot: installing {}", missing.join(" "));
    if !apt_get(&["install", "-y", "--no-install-recommends"], &missing)? {
        eprintln!("boot: apt-get install failed; updating the package lists and retrying");
        if !apt_get(&["update"], &[])?
            || !apt_get(&["install", "-y", "--no-install-recommends"], &missing)?
        {
            return Err(format!("`{install}` failed (see above)"));
        }
    }
    Ok(())
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
