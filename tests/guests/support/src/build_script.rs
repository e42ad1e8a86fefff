//! Build-script helper that links a guest's bare-metal binary (one call from build.rs).

extern crate std;

use std::println;

/// Absolute path of the guests' linker script (physical 32 MiB, multiboot2 header first).
pub const LINKER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guest.ld");

/// Emits the link arguments of a freestanding guest binary when the crate is built with
/// its `bare-metal` feature, and nothing otherwise (host builds stay normal).
pub fn link_guest_binaries() {
    println!("cargo:rerun-if-changed={LINKER_SCRIPT}");
    if std::env::var_os("CARGO_FEATURE_BARE_METAL").is_none() {
        return;
    }
    let script = std::format!("-T{LINKER_SCRIPT}");
    let arguments = [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=0x1000",
        &script,
    ];
    for argument in arguments {
        println!("cargo:rustc-link-arg-bins={argument}");
    }
}
