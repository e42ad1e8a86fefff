//! hostile-service
#![no_std]
