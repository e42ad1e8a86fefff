//! Links the bare-metal demo guest (nothing for host builds).

fn main() {
    guest_support::build_script::link_guest_binaries();
}
