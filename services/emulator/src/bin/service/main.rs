//! The emulator service: a ring-3 program that answers the core's forwarded
//! EPT-violation exits by emulating the faulting instruction (see
//! `exit_server.rs`). Built with the `trace` feature it logs every emulated
//! instruction: the same core boots either binary, chosen by the module line.
#![no_std]
#![no_main]

mod exit_server;

use exit_server::ExitServer;
use rt::abi::ServiceStart;

/// Log every emulated instruction (the `trace` cargo feature).
const TRACE: bool = cfg!(feature = "trace");

fn main(start: ServiceStart) -> ! {
    let name = if TRACE { "emulator-trace" } else { "emulator" };
    rt::log!("{name}: cpu {}: serving exits", start.cpu);
    // SAFETY: `start` is what `_start` received, and this is the only
    // ExitServer of this thread.
    let mut server = unsafe { ExitServer::new(&start, name, TRACE) };
    let first = server.first_exit();
    server.serve(first)
}

rt::entry!(main);
