//! Link setup for a Cordon service binary (linked at 0x4000_0000 by
//! `service.ld`), for the service's build.rs: with `service-link` as a
//! build-dependency, build.rs is `fn main() { service_link::link_service(); }`.
//!
//! Applies only when the service is built with its `bare-metal` feature; a
//! host build (`cargo test`) links normally.

/// The linker script every service uses (links at 0x4000_0000).
pub const LINKER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/service.ld");

/// Emits the link arguments of a freestanding service executable.
pub fn link_service() {
    println!("cargo:rerun-if-changed={LINKER_SCRIPT}");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_BARE_METAL");
    if std::env::var_os("CARGO_FEATURE_BARE_METAL").is_none() {
        return;
    }
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{LINKER_SCRIPT}");
}
