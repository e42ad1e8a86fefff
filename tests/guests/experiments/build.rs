//! Links the bare-metal experiment guests (nothing for host builds).

fn main() {
    guest_support::build_script::link_guest_binaries();
}
