//! Host tests of the emulator against an in-memory guest.
