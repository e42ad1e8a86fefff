//! Validation of a `cmpxchg` request (the [`CmpxchgRequest`] the core copied out
//! of the service's memory) into a [`CheckedCmpxchg`] the hardware side can
//! execute without further checks: width, offset, page alignment, split rules.

use abi::{CmpxchgRequest, PAGE_SIZE, SyscallError};

/// Why a request was refused (all map to [`SyscallError::BadArgument`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpxchgError {
    /// Width not 1, 2, 4, 8 or 16.
    BadWidth,
    /// Offset 4096 or more.
    OffsetOutOfPage,
    /// A page address not 4 KiB aligned.
    MisalignedPage,
    /// The access runs past the first page but `pages[1]` is 0.
    SplitWithoutSecondPage,
    /// The access fits in the first page but `pages[1]` is not 0.
    SecondPageWithoutSplit,
    /// A 16-byte access whose offset is not a multiple of 16 (CMPXCHG16B
    /// requires natural alignment).
    Misaligned16,
    /// A reserved byte is not 0.
    ReservedNotZero,
}

impl CmpxchgError {
    pub const fn describe(self) -> &'static str {
        match self {
            CmpxchgError::BadWidth => "cmpxchg width not 1, 2, 4, 8 or 16",
            CmpxchgError::OffsetOutOfPage => "cmpxchg offset outside the page",
            CmpxchgError::MisalignedPage => "cmpxchg page address not 4 KiB aligned",
            CmpxchgError::SplitWithoutSecondPage => "cmpxchg split access without a second page",
            CmpxchgError::SecondPageWithoutSplit => {
                "cmpxchg second page given for an access that does not split"
            }
            CmpxchgError::Misaligned16 => "cmpxchg 16-byte access not 16-byte aligned",
            CmpxchgError::ReservedNotZero => "cmpxchg reserved field not zero",
        }
    }

    /// What the syscall returns.
    pub const fn syscall_error(self) -> SyscallError {
        SyscallError::BadArgument
    }
}

/// Operand width of a checked request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpxchgWidth {
    Byte = 1,
    Word = 2,
    Dword = 4,
    Qword = 8,
    Oword = 16,
}

impl CmpxchgWidth {
    pub const fn bytes(self) -> u64 {
        self as u64
    }

    const fn from_raw(raw: u8) -> Option<CmpxchgWidth> {
        match raw {
            1 => Some(CmpxchgWidth::Byte),
            2 => Some(CmpxchgWidth::Word),
            4 => Some(CmpxchgWidth::Dword),
            8 => Some(CmpxchgWidth::Qword),
            16 => Some(CmpxchgWidth::Oword),
            _ => None,
        }
    }
}

/// A request that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedCmpxchg {
    /// Guest-physical page of the first byte.
    pub first_page: u64,
    /// Guest-physical page of the bytes past the end of the first page, if
    /// the access splits.
    pub second_page: Option<u64>,
    /// Offset of the first byte in `first_page` (< 4096).
    pub offset: u64,
    pub width: CmpxchgWidth,
    pub expected: [u8; 16],
    pub new: [u8; 16],
}

impl CheckedCmpxchg {
    /// The guest-physical byte ranges the access touches, as (address, length)
    /// pairs for the capability check: one, or two for a split access.
    pub fn touched(&self) -> [Option<(u64, u64)>; 2] {
        let in_first = self.width.bytes().min(PAGE_SIZE - self.offset);
        let rest = self.width.bytes() - in_first;
        [
            Some((self.first_page + self.offset, in_first)),
            self.second_page.map(|page| (page, rest)),
        ]
    }
}

/// Checks `request`.
pub fn check_cmpxchg(request: &CmpxchgRequest) -> Result<CheckedCmpxchg, CmpxchgError> {
    if request.reserved != [0; 5] {
        return Err(CmpxchgError::ReservedNotZero);
    }
    let width = CmpxchgWidth::from_raw(request.width).ok_or(CmpxchgError::BadWidth)?;
    let offset = u64::from(request.offset);
    if offset >= PAGE_SIZE {
        return Err(CmpxchgError::OffsetOutOfPage);
    }
    if width == CmpxchgWidth::Oword && offset % 16 != 0 {
        return Err(CmpxchgError::Misaligned16);
    }
    let [first_page, second_page] = request.pages;
    if first_page % PAGE_SIZE != 0 || second_page % PAGE_SIZE != 0 {
        return Err(CmpxchgError::MisalignedPage);
    }
    // offset < 4096 and width <= 16: no overflow.
    let splits = offset + width.bytes() > PAGE_SIZE;
    let second_page = match (splits, second_page) {
        (true, 0) => return Err(CmpxchgError::SplitWithoutSecondPage),
        (true, page) => Some(page),
        (false, 0) => None,
        (false, _) => return Err(CmpxchgError::SecondPageWithoutSplit),
    };
    Ok(CheckedCmpxchg {
        first_page,
        second_page,
        offset,
        width,
        expected: request.expected,
        new: request.new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pages: [u64; 2], offset: u16, width: u8) -> CmpxchgRequest {
        CmpxchgRequest {
            pages,
            offset,
            width,
            ..CmpxchgRequest::default()
        }
    }

    #[test]
    fn plain_requests_are_accepted() {
        for width in [1, 2, 4, 8, 16] {
            let checked = check_cmpxchg(&request([0x20_0000, 0], 0xff0, width)).unwrap();
            assert_eq!(checked.width.bytes(), u64::from(width));
            assert_eq!(checked.second_page, None);
            assert_eq!(
                checked.touched(),
                [Some((0x20_0ff0, u64::from(width))), None]
            );
        }
        let mut with_values = request([0, 0], 0, 8);
        with_values.expected[0] = 1;
        with_values.new[15] = 2;
        let checked = check_cmpxchg(&with_values).unwrap();
        assert_eq!((checked.expected[0], checked.new[15]), (1, 2));
        // An unaligned access that stays inside the page.
        assert!(check_cmpxchg(&request([0x1000, 0], 0xff9, 4)).is_ok());
    }

    #[test]
    fn split_requests_name_both_pages() {
        let checked = check_cmpxchg(&request([0x5000, 0x9000], 0xffc, 8)).unwrap();
        assert_eq!(checked.second_page, Some(0x9000));
        assert_eq!(checked.touched(), [Some((0x5ffc, 4)), Some((0x9000, 4))]);
        let checked = check_cmpxchg(&request([0x5000, 0x9000], 0xfff, 2)).unwrap();
        assert_eq!(checked.touched(), [Some((0x5fff, 1)), Some((0x9000, 1))]);
    }

    #[test]
    fn every_refusal() {
        let cases = [
            (request([0x1000, 0], 0, 3), CmpxchgError::BadWidth),
            (request([0x1000, 0], 0, 0), CmpxchgError::BadWidth),
            (request([0x1000, 0], 0, 32), CmpxchgError::BadWidth),
            (request([0x1000, 0], 4096, 1), CmpxchgError::OffsetOutOfPage),
            (
                request([0x1000, 0], u16::MAX, 1),
                CmpxchgError::OffsetOutOfPage,
            ),
            (request([0x1000, 0], 8, 16), CmpxchgError::Misaligned16),
            (
                request([0x1000, 0x3000], 0xff8, 16),
                CmpxchgError::Misaligned16,
            ),
            (request([0x1001, 0], 0, 4), CmpxchgError::MisalignedPage),
            (
                request([0x1000, 0x2800], 0xffe, 4),
                CmpxchgError::MisalignedPage,
            ),
            (
                request([0x1000, 0], 0xffe, 4),
                CmpxchgError::SplitWithoutSecondPage,
            ),
            (
                request([0x1000, 0x2000], 0xff0, 4),
                CmpxchgError::SecondPageWithoutSplit,
            ),
        ];
        for (req, error) in cases {
            assert_eq!(check_cmpxchg(&req), Err(error), "{req:?}");
            assert_eq!(error.syscall_error(), SyscallError::BadArgument);
            assert!(!error.describe().is_empty());
        }
        for index in 0..5 {
            let mut req = request([0x1000, 0], 0, 4);
            req.reserved[index] = 1;
            assert_eq!(check_cmpxchg(&req), Err(CmpxchgError::ReservedNotZero));
        }
    }
}
