//! Just enough ELF64 to load a static executable: the file header and the
//! PT_LOAD program headers, read with bounds checks from a boot module.

use zerocopy::{FromBytes, Immutable, KnownLayout};

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct FileHeader {
    ident: [u8; 16],
    kind: u16,
    machine: u16,
    version: u32,
    entry: u64,
    program_headers: u64,
    section_headers: u64,
    flags: u32,
    header_size: u16,
    program_header_size: u16,
    program_header_count: u16,
    section_header_size: u16,
    section_header_count: u16,
    section_names: u16,
}

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct ProgramHeader {
    kind: u32,
    flags: u32,
    offset: u64,
    virtual_address: u64,
    physical_address: u64,
    file_size: u64,
    memory_size: u64,
    align: u64,
}

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf64,
    NotStaticX86_64Executable,
    HeaderOutOfBounds,
    SegmentOutOfBounds,
}

/// One loadable segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub virtual_address: u64,
    pub physical_address: u64,
    pub memory_size: u64,
    /// The bytes from the file (`memory_size - data.len()` zero bytes follow).
    pub data: &'a [u8],
    pub writable: bool,
    pub executable: bool,
}

/// A checked ELF image.
pub struct Image<'a> {
    bytes: &'a [u8],
    header: &'a FileHeader,
}

impl<'a> Image<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Image<'a>, ElfError> {
        let (header, _) = FileHeader::ref_from_prefix(bytes).map_err(|_| ElfError::NotElf64)?;
        if header.ident[..4] != *b"\x7fELF" || header.ident[4] != 2 || header.ident[5] != 1 {
            return Err(ElfError::NotElf64);
        }
        if header.kind != ET_EXEC || header.machine != EM_X86_64 {
            return Err(ElfError::NotStaticX86_64Executable);
        }
        if usize::from(header.program_header_size) != size_of::<ProgramHeader>() {
            return Err(ElfError::HeaderOutOfBounds);
        }
        let image = Image { bytes, header };
        image.program_headers()?;
        Ok(image)
    }

    pub fn entry(&self) -> u64 {
        self.header.entry
    }

    fn program_headers(&self) -> Result<&'a [ProgramHeader], ElfError> {
        let start = usize::try_from(self.header.program_headers)
            .map_err(|_| ElfError::HeaderOutOfBounds)?;
        let table = self.bytes.get(start..).ok_or(ElfError::HeaderOutOfBounds)?;
        let count = usize::from(self.header.program_header_count);
        <[ProgramHeader]>::ref_from_prefix_with_elems(table, count)
            .map(|(headers, _)| headers)
            .map_err(|_| ElfError::HeaderOutOfBounds)
    }

    /// The PT_LOAD segments, each checked to lie within the file.
    pub fn segments(&self) -> impl Iterator<Item = Result<Segment<'a>, ElfError>> + 'a {
        let bytes = self.bytes;
        self.program_headers()
            .unwrap_or(&[])
            .iter()
            .filter(|h| h.kind == PT_LOAD)
            .map(move |h| {
                let start = usize::try_from(h.offset).map_err(|_| ElfError::SegmentOutOfBounds)?;
                let size =
                    usize::try_from(h.file_size).map_err(|_| ElfError::SegmentOutOfBounds)?;
                let data = start
                    .checked_add(size)
                    .and_then(|end| bytes.get(start..end))
                    .ok_or(ElfError::SegmentOutOfBounds)?;
                if h.memory_size < h.file_size
                    || h.virtual_address.checked_add(h.memory_size).is_none()
                {
                    return Err(ElfError::SegmentOutOfBounds);
                }
                Ok(Segment {
                    virtual_address: h.virtual_address,
                    physical_address: h.physical_address,
                    memory_size: h.memory_size,
                    data,
                    writable: h.flags & PF_W != 0,
                    executable: h.flags & PF_X != 0,
                })
            })
    }
}
