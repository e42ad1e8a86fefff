//! A short log of the guest-physical reads one emulation made, kept by a
//! tracing service to show which instruction bytes were fetched: the fetch is
//! the read that starts at the page offset of the instruction's linear
//! address (preferring a read longer than a page-table entry), continued by
//! the read at the start of the next page when the fetch crossed it.

/// Most reads remembered per emulation.
pub const READ_LOG_CAPACITY: usize = 16;
/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LEN: usize = 15;

const PAGE_SIZE: u64 = 4096;
/// Longest page-table entry read (a fetch of more bytes is not a walk).
const PAGE_TABLE_ENTRY_SIZE: usize = 8;

/// One read: where, how long, and its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Read {
    gpa: u64,
    len: usize,
    bytes: [u8; MAX_INSTRUCTION_LEN],
}

/// The reads of one emulation, in order (the first [`READ_LOG_CAPACITY`]).
#[derive(Clone, Debug, Default)]
pub struct ReadLog {
    reads: [Option<Read>; READ_LOG_CAPACITY],
    count: usize,
    fetched: [u8; MAX_INSTRUCTION_LEN],
}

impl ReadLog {
    /// Records a read of `data` at `gpa` (ignored once the log is full).
    pub fn record(&mut self, gpa: u64, data: &[u8]) {
        if let Some(slot) = self.reads.get_mut(self.count) {
            let mut bytes = [0; MAX_INSTRUCTION_LEN];
            let kept = data.len().min(MAX_INSTRUCTION_LEN);
            bytes[..kept].copy_from_slice(&data[..kept]);
            *slot = Some(Read {
                gpa,
                len: data.len(),
                bytes,
            });
            self.count += 1;
        }
    }

    /// The instruction bytes fetched for an instruction at `linear_rip`, at
    /// most `length` of them (pass [`MAX_INSTRUCTION_LEN`] if unknown); empty
    /// if no recorded read matches.
    pub fn instruction_bytes(&mut self, linear_rip: u64, length: usize) -> &[u8] {
        let offset = linear_rip % PAGE_SIZE;
        let reads = &self.reads[..self.count];
        let at_rip = |read: &Read| read.gpa % PAGE_SIZE == offset;
        let position = reads
            .iter()
            .position(|read| read.is_some_and(|r| at_rip(&r) && r.len > PAGE_TABLE_ENTRY_SIZE))
            .or_else(|| {
                reads
                    .iter()
                    .position(|read| read.is_some_and(|r| at_rip(&r)))
            });
        let Some((index, Some(first))) = position.map(|index| (index, reads[index])) else {
            return &[];
        };
        let wanted = length.min(MAX_INSTRUCTION_LEN);
        let mut have = first.len.min(wanted);
        self.fetched[..have].copy_from_slice(&first.bytes[..have]);
        let reaches_page_end = offset + first.len as u64 == PAGE_SIZE;
        if let Some(Some(next)) = reads.get(index + 1)
            && reaches_page_end
            && next.gpa % PAGE_SIZE == 0
        {
            let take = next.len.min(wanted - have);
            self.fetched[have..have + take].copy_from_slice(&next.bytes[..take]);
            have += take;
        }
        &self.fetched[..have]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: [u8; 15] = [
        0x8b, 0x35, 0x20, 0x00, 0xe0, 0xfe, 0x9c, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn finds_the_fetch_among_page_walk_reads() {
        let mut log = ReadLog::default();
        // A 4-level walk for the fetch (8-byte entries; one at the same page
        // offset as RIP), the fetch itself, then the operand's walk and access.
        log.record(0x1000 + 0x05f, &[1; 8]);
        log.record(0x2000 + 0x008, &[2; 8]);
        log.record(0x20_005f, &CODE);
        log.record(0x3000, &[3; 8]);
        log.record(0xfee0_0020, &[4; 4]);
        assert_eq!(log.instruction_bytes(0x4000_005f, 6), &CODE[..6]);
        assert_eq!(
            log.instruction_bytes(0x4000_005f, MAX_INSTRUCTION_LEN),
            &CODE[..]
        );
        assert_eq!(log.instruction_bytes(0x4000_005f, 99), &CODE[..]);
    }

    #[test]
    fn joins_a_fetch_that_crosses_a_page() {
        let mut log = ReadLog::default();
        log.record(0x20_0ffd, &[0x48, 0x89, 0x07]);
        log.record(0x9_0000, &[0x90; 12]);
        let bytes = log.instruction_bytes(0xffd, 5);
        assert_eq!(bytes, &[0x48, 0x89, 0x07, 0x90, 0x90]);
    }

    #[test]
    fn short_reads_count_when_nothing_longer_matches() {
        let mut log = ReadLog::default();
        log.record(0x5008, &[0xa1, 0x30]);
        assert_eq!(log.instruction_bytes(0x8, 2), &[0xa1, 0x30]);
    }

    #[test]
    fn nothing_matching_gives_nothing_and_the_log_is_bounded() {
        let mut log = ReadLog::default();
        assert_eq!(log.instruction_bytes(0x10, 15), &[] as &[u8]);
        for page in 0..100u64 {
            log.record(page * 0x1000 + 0x10, &[page as u8; 15]);
        }
        assert_eq!(log.instruction_bytes(0x10, 15), &[0; 15]);
        assert_eq!(log.instruction_bytes(0x11, 15), &[] as &[u8]);
    }
}
