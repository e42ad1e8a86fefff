//! Building the [`Reply`] for each kind of answer, so that a service cannot
//! forget a flag or leave a stale field: what the core accepts is exactly what
//! these produce.

use abi::{Action, ChangedGroups, ExceptionReply, Reply, SegmentLoad};

/// `Resume`: the instruction retired with these GPRs, RIP and RFLAGS; YMMn
/// takes `vectors[n]` for every bit n of `vector_mask`; `segment` is the
/// segment register it loaded, if any.
pub fn resume(
    sequence: u64,
    gprs: &[u64; 16],
    rip: u64,
    rflags: u64,
    vector_mask: u16,
    vectors: &[[u8; 32]; 16],
    segment: Option<&SegmentLoad>,
) -> Reply {
    let mut reply = Reply::new(sequence, Action::Resume);
    reply.changed = ChangedGroups::GPRS | ChangedGroups::RIP | ChangedGroups::RFLAGS;
    reply.gprs = *gprs;
    reply.rip = rip;
    reply.rflags = rflags;
    if vector_mask != 0 {
        reply.changed |= ChangedGroups::VECTORS;
        reply.vector_mask = u32::from(vector_mask);
        for (index, ymm) in reply.vectors.ymm.iter_mut().enumerate() {
            if vector_mask & (1 << index) != 0 {
                *ymm = vectors[index];
            }
        }
    }
    if let Some(load) = segment {
        reply.changed |= ChangedGroups::SEGMENT;
        reply.segment = *load;
    }
    reply
}

/// `InjectException`: the guest takes exception `vector`, with an error code
/// and, for #PF, CR2 when given.
pub fn inject(sequence: u64, vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Reply {
    let mut reply = Reply::new(sequence, Action::InjectException);
    reply.exception.vector = vector;
    if let Some(code) = error_code {
        reply.exception.flags |= ExceptionReply::HAS_ERROR_CODE;
        reply.exception.error_code = code;
    }
    if let Some(cr2) = cr2 {
        reply.exception.flags |= ExceptionReply::SETS_CR2;
        reply.exception.cr2 = cr2;
    }
    reply
}

/// `Retry`: nothing changed, the guest re-executes the instruction.
pub fn retry(sequence: u64) -> Reply {
    Reply::new(sequence, Action::Retry)
}

/// `Stop`: the VM stops.
pub fn stop(sequence: u64) -> Reply {
    Reply::new(sequence, Action::Stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::AbiVersion;

    #[test]
    fn resume_marks_only_what_it_sets() {
        let gprs: [u64; 16] = core::array::from_fn(|i| i as u64 * 3);
        let mut vectors = [[0u8; 32]; 16];
        vectors[2] = [7; 32];
        vectors[3] = [9; 32];
        let reply = resume(5, &gprs, 0x1003, 0x202, 0, &vectors, None);
        assert_eq!(reply.sequence, 5);
        assert_eq!(reply.abi_major, AbiVersion::CURRENT.major);
        assert_eq!(reply.action, Action::Resume as u32);
        assert_eq!(
            reply.changed,
            ChangedGroups::GPRS | ChangedGroups::RIP | ChangedGroups::RFLAGS
        );
        assert_eq!((reply.gprs, reply.rip, reply.rflags), (gprs, 0x1003, 0x202));
        assert_eq!(reply.vector_mask, 0);
        assert_eq!(
            reply.vectors.ymm[2], [0; 32],
            "unchanged vectors are not copied"
        );

        let reply = resume(5, &gprs, 0x1003, 0x202, 1 << 2, &vectors, None);
        assert_eq!(
            reply.changed & ChangedGroups::VECTORS,
            ChangedGroups::VECTORS
        );
        assert_eq!(reply.vector_mask, 4);
        assert_eq!(reply.vectors.ymm[2], [7; 32]);
        assert_eq!(reply.vectors.ymm[3], [0; 32]);
        assert_eq!(reply.exception, ExceptionReply::default());
        assert_eq!(reply.segment, SegmentLoad::default());
    }

    #[test]
    fn resume_carries_a_loaded_segment_register() {
        let load = SegmentLoad {
            value: abi::SegmentRegister {
                selector: 0x2b,
                access_rights: 0xc0f3,
                limit: 0xffff_ffff,
                base: 0x1234_0000,
                ..abi::SegmentRegister::default()
            },
            register: abi::Segment::Ss as u8,
            flags: SegmentLoad::BLOCKS_INTERRUPTS,
            reserved: [0; 6],
        };
        let reply = resume(5, &[0; 16], 0x1003, 0x202, 0, &[[0; 32]; 16], Some(&load));
        assert_eq!(
            reply.changed,
            ChangedGroups::GPRS
                | ChangedGroups::RIP
                | ChangedGroups::RFLAGS
                | ChangedGroups::SEGMENT
        );
        assert_eq!(reply.segment, load);
    }

    #[test]
    fn inject_sets_flags_with_their_fields() {
        let reply = inject(9, 14, Some(6), Some(0xdead_b000));
        assert_eq!(reply.action, Action::InjectException as u32);
        assert_eq!(
            reply.exception,
            ExceptionReply {
                vector: 14,
                flags: ExceptionReply::HAS_ERROR_CODE | ExceptionReply::SETS_CR2,
                reserved: 0,
                error_code: 6,
                cr2: 0xdead_b000,
            }
        );
        assert_eq!(reply.changed, 0);
        let reply = inject(9, 6, None, None);
        assert_eq!(
            reply.exception,
            ExceptionReply {
                vector: 6,
                ..ExceptionReply::default()
            }
        );
    }

    #[test]
    fn retry_and_stop_carry_nothing_else() {
        for (reply, action) in [(retry(3), Action::Retry), (stop(3), Action::Stop)] {
            assert_eq!(reply, Reply::new(3, action));
            assert_eq!((reply.changed, reply.vector_mask), (0, 0));
        }
    }
}
