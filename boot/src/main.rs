//! `cargo boot`: the host tool. Builds Cordon's kernel, services and test guests
//! for bare metal, makes the GRUB ISO, boots it headless in Bochs (or QEMU),
//! streams COM1, and ends with one `RESULT: PASS ...` or `RESULT: FAIL ...`
//! line; `test` runs every test; `image` writes the ISO for real hardware.

mod bare_build;
mod cargo;
mod catalog;
mod cli;
mod host_tools;
mod image;
mod licences;
mod run;
mod suite;
mod verdict;
mod vmm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The workspace root (this crate lives in `boot/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("cargo boot: {error}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let success = match command {
        cli::Command::Help => {
            println!("{}", cli::USAGE);
            true
        }
        cli::Command::Run(options) => run::run_command(&root, &options),
        cli::Command::Image { options, out } => write_image(&root, &options, out),
        cli::Command::Test => suite::run_all(&root),
        cli::Command::Licences => match licences::check(&root) {
            Ok(summary) => {
                println!("licences: {summary}");
                true
            }
            Err(error) => {
                eprintln!("{error}");
                false
            }
        },
    };
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo boot image`: builds the ISO and copies it to `out`.
fn write_image(root: &Path, options: &cli::RunOptions, out: Option<PathBuf>) -> bool {
    let out = out.unwrap_or_else(|| run::output_dir(root).join("cordon.iso"));
    let result = run::prepare(root, options, "image", "").and_then(|prepared| {
        std::fs::copy(&prepared.iso, &out)
            .map(|_| ())
            .map_err(|error| format!("cannot write {}: {error}", out.display()))
    });
    match result {
        Ok(()) => {
            println!("boot: wrote {}", out.display());
            true
        }
        Err(error) => {
            eprintln!("boot: {error}");
            false
        }
    }
}
