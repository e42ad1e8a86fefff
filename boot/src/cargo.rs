//! Running cargo from the tool: the same cargo that runs `cargo boot`, in the
//! workspace root, and its package metadata.

use std::path::Path;
use std::process::Command;

/// A `cargo` command in `root` (the cargo that started us, if any).
pub fn command(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

/// The `packages` of `cargo metadata --format-version 1 <extra>`.
pub fn packages(root: &Path, extra: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let output = command(root)
        .args(["metadata", "--format-version", "1"])
        .args(extra)
        .output()
        .map_err(|error| format!("cannot run cargo metadata: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo metadata printed invalid JSON: {error}"))?;
    Ok(metadata["packages"].as_array().cloned().unwrap_or_default())
}
