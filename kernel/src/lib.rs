//! The Cordon core: the ring-0 VMX hypervisor that owns the CPU and the EPT and
//! forwards EPT-violation exits to ring-3 services.
//!
//! Pure logic (EPT construction, policy checks) compiles and is tested on the
//! host; the hardware side is built only with the `bare-metal` feature.
#![cfg_attr(not(test), no_std)]

pub mod ept;

#[cfg(feature = "bare-metal")]
pub mod arch;
