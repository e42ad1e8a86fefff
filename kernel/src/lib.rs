#![no_std]
//! The Cordon core.
