//! demo-guest
#![no_std]
