//! Checks of user-supplied ranges (a `log` buffer, a `cmpxchg` request): the
//! whole range must lie in the calling service's own mapped memory, with the
//! access the core is about to make, before the core touches a byte. The model
//! is Hubris's `USlice`.

use abi::SyscallError;

/// How the core will access a user range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAccess {
    Read,
    /// The core writes results back (it also reads).
    Write,
}

/// One region of a service's address space, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegion {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    pub writable: bool,
}

/// A user range that passed [`check_user_range`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRange {
    pub address: u64,
    pub len: u64,
}

/// Checks that `[address, address + len)` lies in `regions` (possibly across
/// adjacent ones), each allowing `access`. An empty range is accepted without
/// looking at `address` (the core will read nothing). Errors:
/// [`SyscallError::BadUserPointer`] for a range that wraps past 2^64 or leaves
/// the regions.
pub fn check_user_range(
    regions: &[UserRegion],
    address: u64,
    len: u64,
    access: UserAccess,
) -> Result<UserRange, SyscallError> {
    if len == 0 {
        return Ok(UserRange { address, len });
    }
    let end = address
        .checked_add(len)
        .ok_or(SyscallError::BadUserPointer)?;
    let allows = |region: &UserRegion| access == UserAccess::Read || region.writable;
    // Each step moves `covered` to the end of a region containing it: at most
    // `regions.len()` steps.
    let mut covered = address;
    while covered < end {
        let region = regions
            .iter()
            .find(|region| region.start <= covered && covered < region.end && allows(region))
            .ok_or(SyscallError::BadUserPointer)?;
        covered = region.end;
    }
    Ok(UserRange { address, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: UserRegion = UserRegion {
        start: 0x4000_0000,
        end: 0x4001_0000,
        writable: false,
    };
    const DATA: UserRegion = UserRegion {
        start: 0x4001_0000,
        end: 0x4020_0000,
        writable: true,
    };
    const STACK: UserRegion = UserRegion {
        start: 0x5fff_0000,
        end: 0x6000_0000,
        writable: true,
    };
    const REGIONS: [UserRegion; 3] = [TEXT, DATA, STACK];

    fn check(address: u64, len: u64, access: UserAccess) -> Result<(), SyscallError> {
        check_user_range(&REGIONS, address, len, access).map(|_| ())
    }

    #[test]
    fn ranges_inside_are_accepted() {
        assert_eq!(check(0x4000_0000, 0x10, UserAccess::Read), Ok(()));
        assert_eq!(check(0x5fff_fff8, 8, UserAccess::Write), Ok(()));
        assert_eq!(check(0x4001_0000, 0x1f_0000, UserAccess::Write), Ok(()));
        // Across the adjacent text and data regions, for reading.
        assert_eq!(check(0x4000_fff0, 0x20, UserAccess::Read), Ok(()));
        assert_eq!(
            check_user_range(&REGIONS, 0x4000_0100, 5, UserAccess::Read),
            Ok(UserRange {
                address: 0x4000_0100,
                len: 5
            })
        );
    }

    #[test]
    fn empty_range_is_accepted_anywhere() {
        assert_eq!(check(0xffff_8000_0000_0000, 0, UserAccess::Write), Ok(()));
    }

    #[test]
    fn ranges_outside_are_refused() {
        let bad = Err(SyscallError::BadUserPointer);
        // Kernel memory, below and past the regions, straddling an end, a gap.
        assert_eq!(check(0xffff_8000_0010_0000, 16, UserAccess::Read), bad);
        assert_eq!(check(0x10_0000, 16, UserAccess::Read), bad);
        assert_eq!(check(0x3fff_fff8, 16, UserAccess::Read), bad);
        assert_eq!(check(0x401f_fff8, 16, UserAccess::Read), bad);
        assert_eq!(check(0x5fff_fff8, 9, UserAccess::Read), bad);
        assert_eq!(check(0x4000_0000, 0x2000_0000, UserAccess::Read), bad);
        // Huge lengths and wrap-around.
        assert_eq!(check(0x4000_0000, u64::MAX, UserAccess::Read), bad);
        assert_eq!(check(u64::MAX, 2, UserAccess::Read), bad);
        // Writing into read-only text.
        assert_eq!(check(0x4000_0000, 8, UserAccess::Write), bad);
        assert_eq!(check(0x4000_fff8, 16, UserAccess::Write), bad);
        // No regions at all.
        assert_eq!(
            check_user_range(&[], 0x4000_0000, 1, UserAccess::Read),
            Err(SyscallError::BadUserPointer)
        );
    }
}
