//! baremetal
#![no_std]
