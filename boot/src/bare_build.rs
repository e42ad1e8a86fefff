//! Building the bare-metal binaries (kernel, services, guests) with the stable
//! toolchain: `x86_64-unknown-linux-gnu` as a freestanding static target, each
//! crate's `bare-metal` feature, rust-lld as the linker, into target/bare.

use crate::catalog::CrateBinary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target triple the bare-metal binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Code generation for freestanding code: absolute addresses, no red zone (the
/// kernel takes interrupts on the current stack), no unwind tables, baseline
/// x86-64; rust-lld (through the cc driver) as the linker.
fn rustflags(gcc_ld_dir: &Path) -> String {
    [
        "-C relocation-model=static".to_string(),
        "-C no-redzone=yes".into(),
        "-C force-unwind-tables=no".into(),
        "-C target-cpu=x86-64".into(),
        format!("-C link-arg=-B{}", gcc_ld_dir.display()),
        "-C link-arg=-fuse-ld=lld".into(),
    ]
    .join(" ")
}

/// Builds `binaries` (one cargo invocation per distinct feature set) and
/// returns the path of each, in order.
pub fn build(root: &Path, binaries: &[&CrateBinary]) -> Result<Vec<PathBuf>, String> {
    check_declared(root, binaries)?;
    let gcc_ld_dir = gcc_ld_dir()?;
    let mut groups: BTreeMap<&[&str], Vec<&CrateBinary>> = BTreeMap::new();
    for binary in binaries {
        groups.entry(binary.features).or_default().push(binary);
    }
    let mut paths = BTreeMap::new();
    for (features, members) in groups {
        let target_dir = target_dir(root, features);
        let mut command = crate::cargo::command(root);
        command
            .args(["build", "--release", "--target", TARGET, "--target-dir"])
            .arg(&target_dir)
            .env("RUSTFLAGS", rustflags(&gcc_ld_dir))
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        for member in &members {
            command.args(["-p", member.package, "--bin", member.bin]);
        }
        command
            .arg("--features")
            .arg(feature_list(members.iter().copied()).join(","));
        let status = command
            .status()
            .map_err(|error| format!("cannot run cargo: {error}"))?;
        if !status.success() {
            let names: Vec<&str> = members.iter().map(|member| member.bin).collect();
            return Err(format!(
                "bare-metal build of {} failed ({status})",
                names.join(", ")
            ));
        }
        for member in members {
            let path = target_dir.join(TARGET).join("release").join(member.bin);
            if !path.is_file() {
                return Err(format!(
                    "cargo reported success but {} is missing",
                    path.display()
                ));
            }
            paths.insert((member.package, member.bin, member.features), path);
        }
    }
    Ok(binaries
        .iter()
        .map(|binary| paths[&(binary.package, binary.bin, binary.features)].clone())
        .collect())
}

/// The cargo features `binaries` are built with: each crate's `bare-metal`
/// and its extra features, as `package/feature`, sorted, without repeats.
pub fn feature_list<'a>(binaries: impl IntoIterator<Item = &'a CrateBinary>) -> Vec<String> {
    let mut features = Vec::new();
    for binary in binaries {
        features.push(format!("{}/bare-metal", binary.package));
        features.extend(
            binary
                .features
                .iter()
                .map(|feature| format!("{}/{feature}", binary.package)),
        );
    }
    features.sort();
    features.dedup();
    features
}

/// target/bare for plain builds; a separate directory per extra feature set so
/// that variants do not rebuild each other.
fn target_dir(root: &Path, features: &[&str]) -> PathBuf {
    let base = root.join("target").join("bare");
    if features.is_empty() {
        base
    } else {
        base.join(format!("features-{}", features.join("+")))
    }
}

/// rust-lld's `ld.lld` shim for the cc driver, from the active toolchain.
fn gcc_ld_dir() -> Result<PathBuf, String> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let dir = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("bin/gcc-ld");
    if dir.join("ld.lld").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "rust-lld not found at {}: is the toolchain complete?",
            dir.display()
        ))
    }
}

/// Fails with a clear message when a crate does not declare the binary (not
/// written yet, or named differently), before cargo gives a terser one.
fn check_declared(root: &Path, binaries: &[&CrateBinary]) -> Result<(), String> {
    let packages = crate::cargo::packages(root, &["--no-deps"])?;
    for binary in binaries {
        let Some(package) = packages
            .iter()
            .find(|package| package["name"] == binary.package)
        else {
            return Err(format!(
                "no crate `{}` in the workspace (wanted for binary `{}`)",
                binary.package, binary.bin
            ));
        };
        let declared = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|target| {
                target["name"] == binary.bin
                    && target["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
            });
        if !declared {
            return Err(format!(
                "crate `{}` has no binary `{}` (expected src/bin/{}.rs or a [[bin]] entry with \
                 required-features = [\"bare-metal\"])",
                binary.package, binary.bin, binary.bin
            ));
        }
        let has_feature = package["features"].get("bare-metal").is_some();
        if !has_feature {
            return Err(format!(
                "crate `{}` has no `bare-metal` feature",
                binary.package
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codegen_is_freestanding_and_linked_by_rust_lld() {
        let flags = rustflags(Path::new("/sysroot/gcc-ld"));
        for needed in [
            "-C relocation-model=static",
            "-C no-redzone=yes",
            "-C force-unwind-tables=no",
            "-C link-arg=-B/sysroot/gcc-ld",
            "-C link-arg=-fuse-ld=lld",
        ] {
            assert!(flags.contains(needed), "{needed} missing from {flags}");
        }
    }

    #[test]
    fn feature_variants_build_in_their_own_directory() {
        let root = Path::new("/w");
        assert_eq!(target_dir(root, &[]), Path::new("/w/target/bare"));
        assert_eq!(
            target_dir(root, &["trace"]),
            Path::new("/w/target/bare/features-trace")
        );
    }
}
