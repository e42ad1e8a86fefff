//! Link setup of the service binary (only with the `bare-metal` feature).
fn main() {
    service_link::link_service();
}
