//! The Cordon ring-3 runtime.
#![no_std]
