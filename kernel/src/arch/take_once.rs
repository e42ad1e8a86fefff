//! `TakeOnce`: a static whose contents can be borrowed mutably exactly once, for
//! hardware structures that must live for ever (descriptor tables, stacks).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value in a `static` that hands out one `&'static mut` to its contents.
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the contents are reachable only through the single reference `take`
// hands out, so sharing the wrapper between CPUs is sound when `T` may move
// between them.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> TakeOnce<T> {
        TakeOnce {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The one mutable reference to the contents; `None` after the first call.
    #[allow(
        clippy::mut_from_ref,
        reason = "the `taken` flag makes the reference unique"
    )]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so no other reference exists and none
        // will be created: this is the only `&mut` ever made.
        Some(unsafe { &mut *self.value.get() })
    }
}
