//! The command line of `cargo boot`: subcommands and their options.

use std::path::PathBuf;
use std::time::Duration;

/// Which emulator runs the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vmm {
    Bochs,
    Qemu,
}

/// Options shared by `run` and `image`: what goes into the image and how it
/// is booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Guest name from the catalogue, or a path to a multiboot2 ELF.
    pub guest: String,
    /// Service name from the catalogue, or a path to a service ELF.
    pub service: String,
    pub cpus: u32,
    pub vmm: Vmm,
    pub timeout: Duration,
    /// Boot the guest directly from GRUB, without Cordon.
    pub no_hypervisor: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            guest: "demo".into(),
            service: "emulator".into(),
            cpus: 1,
            vmm: Vmm::Bochs,
            timeout: Duration::from_secs(300),
            no_hypervisor: false,
        }
    }
}

/// A parsed `cargo boot` invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(RunOptions),
    Image {
        options: RunOptions,
        out: Option<PathBuf>,
    },
    Test,
    Licences,
    Help,
}

pub const USAGE: &str = "\
usage: cargo boot <command> [options]

commands:
  run     build kernel, service and guest, make the ISO, boot it, judge the serial log
  image   write the bootable ISO (for a USB stick or a VM) and stop
  test    licence check, host tests and every end-to-end boot; prints `N passed, N failed`
  licences  check that every dependency's licence is allowed by deny.toml

options (run, image):
  --guest NAME|PATH       guest to boot (default: demo)
  --service NAME|PATH     service module (default: emulator; also: trace, hostile)
  --cpus N                emulated CPUs (default: 1)
  --vmm bochs|qemu        emulator (default: bochs)
  --timeout SECS          give up after SECS seconds (default: 300)
  --no-hypervisor         boot the guest directly from GRUB, without Cordon
  --out PATH              (image) where to write the ISO";

/// Parses the arguments after `cargo boot`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "run" => parse_options(rest, false).map(|(options, _)| Command::Run(options)),
        "image" => parse_options(rest, true).map(|(options, out)| Command::Image { options, out }),
        "test" if rest.is_empty() => Ok(Command::Test),
        "licences" | "licenses" if rest.is_empty() => Ok(Command::Licences),
        "test" | "licences" | "licenses" => Err(format!("`{command}` takes no options")),
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn parse_options(
    args: &[String],
    allow_out: bool,
) -> Result<(RunOptions, Option<PathBuf>), String> {
    let mut options = RunOptions::default();
    let mut out = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let (flag, inline_value) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (word.as_str(), None),
        };
        if flag == "--no-hypervisor" {
            if inline_value.is_some() {
                return Err("--no-hypervisor takes no value".into());
            }
            options.no_hypervisor = true;
            continue;
        }
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| words.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--guest" => options.guest = value()?,
            "--service" => options.service = value()?,
            "--cpus" => {
                let text = value()?;
                options.cpus = match text.parse() {
                    Ok(cpus @ 1..=8) => cpus,
                    _ => return Err(format!("--cpus wants 1 to 8, not `{text}`")),
                };
            }
            "--vmm" => {
                options.vmm = match value()?.as_str() {
                    "bochs" => Vmm::Bochs,
                    "qemu" => Vmm::Qemu,
                    other => return Err(format!("--vmm wants bochs or qemu, not `{other}`")),
                };
            }
            "--timeout" => {
                let text = value()?;
                options.timeout = match text.parse::<u64>() {
                    Ok(seconds @ 1..=86_400) => Duration::from_secs(seconds),
                    _ => {
                        return Err(format!(
                            "--timeout wants seconds (1 to 86400), not `{text}`"
                        ));
                    }
                };
            }
            "--out" if allow_out => out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok((options, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_defaults_and_options() {
        assert_eq!(
            parse(&words("run")),
            Ok(Command::Run(RunOptions::default()))
        );
        let parsed = parse(&words(
            "run --guest x --cpus 2 --vmm=qemu --service /a/b.elf --timeout 9",
        ));
        let expected = RunOptions {
            guest: "x".into(),
            service: "/a/b.elf".into(),
            cpus: 2,
            vmm: Vmm::Qemu,
            timeout: Duration::from_secs(9),
            no_hypervisor: false,
        };
        assert_eq!(parsed, Ok(Command::Run(expected)));
        let Ok(Command::Run(options)) = parse(&words("run --no-hypervisor")) else {
            panic!("run --no-hypervisor should parse");
        };
        assert!(options.no_hypervisor);
    }

    #[test]
    fn image_takes_out_but_run_does_not() {
        let Ok(Command::Image { out, .. }) = parse(&words("image --out /tmp/c.iso")) else {
            panic!("image --out should parse");
        };
        assert_eq!(out, Some(PathBuf::from("/tmp/c.iso")));
        assert!(parse(&words("run --out x")).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "frobnicate",
            "run --cpus 0",
            "run --cpus many",
            "run --vmm vmware",
            "run --guest",
            "run --timeout 0",
            "run --no-hypervisor=1",
            "test --guest demo",
        ] {
            assert!(parse(&words(bad)).is_err(), "{bad} should be rejected");
        }
        assert_eq!(parse(&[]), Ok(Command::Help));
    }
}
