//! The GRUB image: a staging tree with kernel, service and guest ELFs and a
//! grub.cfg, turned into a hybrid BIOS ISO by grub-mkrescue.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into one image.
#[derive(Debug)]
pub enum ImageContents<'a> {
    /// Cordon: the core loads `service` and runs `guest`.
    Hypervisor {
        kernel: &'a Path,
        kernel_command_line: &'a str,
        service: &'a Path,
        guest: &'a Path,
        /// Passed on the guest's module line; the core hands it to the guest
        /// in its multiboot2 information (tag 1).
        guest_command_line: &'a str,
    },
    /// The guest alone, booted by GRUB as a multiboot2 kernel (baseline).
    GuestOnly {
        guest: &'a Path,
        guest_command_line: &'a str,
    },
}

/// The grub.cfg for `contents`: no menu delay, console on COM1 and screen.
pub fn grub_config(contents: &ImageContents) -> String {
    let entry = match contents {
        ImageContents::Hypervisor {
            kernel_command_line,
            guest_command_line,
            ..
        } => format!(
            "    multiboot2 /boot/kernel.elf {kernel_command_line}\n\
             \x20   module2 /boot/service.elf service\n\
             \x20   module2 /boot/guest.elf guest {guest_command_line}\n"
        ),
        ImageContents::GuestOnly {
            guest_command_line, ..
        } => {
            format!("    multiboot2 /boot/guest.elf {guest_command_line}\n")
        }
    };
    format!(
        "set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         menuentry \"Cordon\" {{\n\
         {entry}\
         \x20   boot\n\
         }}\n"
    )
}

/// Lays out `staging` and writes the ISO to `iso`.
pub fn make_iso(contents: &ImageContents, staging: &Path, iso: &Path) -> Result<(), String> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .map_err(|error| format!("cannot clear {}: {error}", staging.display()))?;
    }
    let boot = staging.join("boot");
    fs::create_dir_all(boot.join("grub"))
        .map_err(|error| format!("cannot create {}: {error}", boot.display()))?;
    let copies: Vec<(&Path, PathBuf)> = match contents {
        ImageContents::Hypervisor {
            kernel,
            service,
            guest,
            ..
        } => vec![
            (kernel, boot.join("kernel.elf")),
            (service, boot.join("service.elf")),
            (guest, boot.join("guest.elf")),
        ],
        ImageContents::GuestOnly { guest, .. } => vec![(guest, boot.join("guest.elf"))],
    };
    for (from, to) in copies {
        fs::copy(from, &to)
            .map_err(|error| format!("cannot copy {} into the image: {error}", from.display()))?;
    }
    fs::write(boot.join("grub/grub.cfg"), grub_config(contents))
        .map_err(|error| format!("cannot write grub.cfg: {error}"))?;
    if let Some(parent) = iso.parent() {
        fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(iso)
        .arg(staging)
        .output()
        .map_err(|error| format!("cannot run grub-mkrescue: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Reads one file back out of an ISO (for the byte-identity check).
pub fn extract(iso: &Path, path_in_image: &str, to: &Path) -> Result<Vec<u8>, String> {
    let _ = fs::remove_file(to);
    let output = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract")
        .arg(path_in_image)
        .arg(to)
        .output()
        .map_err(|error| format!("cannot run xorriso: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "xorriso could not extract {path_in_image} from {}: {}",
            iso.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    fs::read(to).map_err(|error| format!("cannot read {}: {error}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_entry_loads_kernel_then_service_then_guest() {
        let config = grub_config(&ImageContents::Hypervisor {
            kernel: Path::new("k"),
            kernel_command_line: "cordon.trap=lapic",
            service: Path::new("s"),
            guest: Path::new("g"),
            guest_command_line: "demo",
        });
        let lines: Vec<&str> = config.lines().map(str::trim).collect();
        let kernel = lines
            .iter()
            .position(|line| *line == "multiboot2 /boot/kernel.elf cordon.trap=lapic");
        let service = lines
            .iter()
            .position(|line| *line == "module2 /boot/service.elf service");
        let guest = lines
            .iter()
            .position(|line| *line == "module2 /boot/guest.elf guest demo");
        assert!(
            kernel < service && service < guest && kernel.is_some(),
            "{config}"
        );
        assert!(lines.contains(&"set timeout=0"));
    }

    #[test]
    fn guest_only_entry_boots_the_guest_as_the_kernel() {
        let config = grub_config(&ImageContents::GuestOnly {
            guest: Path::new("g"),
            guest_command_line: "demo",
        });
        assert!(
            config.contains("    multiboot2 /boot/guest.elf demo\n"),
            "{config}"
        );
        assert!(!config.contains("module2"));
    }
}
