//! Link arguments for the bare-metal kernel binary: a freestanding static ELF at
//! 1 MiB laid out by `link.ld`. Host builds (tests, clippy) get none of this.

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_BARE_METAL");
    if std::env::var_os("CARGO_FEATURE_BARE_METAL").is_none() {
        return;
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=0x1000",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/link.ld");
}
