//! The Cordon core: the ring-0 VMX hypervisor that owns the CPU and the EPT and
//! forwards EPT-violation exits to ring-3 services.
//!
//! Pure logic (EPT construction, policy checks) compiles and is tested on the
//! host; the hardware side is built only with the `bare-metal` feature.
#![cfg_attr(not(test), no_std)]

pub mod acpi;
pub mod arch;
pub mod ept;
pub mod policy;
pub mod single_step;

#[cfg(feature = "bare-metal")]
mod control_regs;
#[cfg(feature = "bare-metal")]
mod cpu;
#[cfg(feature = "bare-metal")]
mod exits;
#[cfg(feature = "bare-metal")]
mod forward;
#[cfg(feature = "bare-metal")]
mod guest;
#[cfg(feature = "bare-metal")]
mod hypercall;
#[cfg(feature = "bare-metal")]
mod memory;
#[cfg(feature = "bare-metal")]
mod platform;
#[cfg(feature = "bare-metal")]
mod regs;
#[cfg(feature = "bare-metal")]
mod service;
#[cfg(feature = "bare-metal")]
mod smp;
#[cfg(feature = "bare-metal")]
mod vm;
#[cfg(feature = "bare-metal")]
mod vmx;
#[cfg(feature = "bare-metal")]
mod xstate;

#[cfg(feature = "bare-metal")]
pub use platform::start;
#[cfg(feature = "bare-metal")]
use platform::{config, finish, is_ram, platform, ymm_upper_offset};
