//! Invalid replies: each starts from a valid reply to the pending exit and
//! breaks exactly one rule, so the core's refusal names that rule. All are
//! refused with `SyscallError::BadReply`, and the exit stays pending.

use abi::{
    Action, ChangedGroups, ExceptionReply, ExitMessage, Reply, Segment, SegmentLoad,
    SegmentRegister,
};

/// One invalid reply and what it tries.
#[derive(Clone, Copy, Debug)]
pub struct ReplyAttack {
    pub name: &'static str,
    pub reply: Reply,
}

/// A valid `Resume` that changes nothing: RIP and RFLAGS as at the exit.
pub fn valid_resume(exit: &ExitMessage) -> Reply {
    let mut reply = Reply::new(exit.sequence, Action::Resume);
    reply.changed = ChangedGroups::RIP | ChangedGroups::RFLAGS;
    reply.rip = exit.state.rip;
    reply.rflags = exit.state.rflags;
    reply
}

/// Flat 4 GiB read/write data (accessed, present, G = 1, D/B = 1), DPL 0.
const FLAT_DATA_RIGHTS: u32 = 0xc093;

/// A valid `Resume` that retires the instruction (RIP one byte on) and loads
/// DS with flat data: what the segment attacks break one rule of. At the
/// exits the attacks answer, the guest is at CPL 0 outside virtual-8086 mode.
pub fn valid_segment_load(exit: &ExitMessage) -> Reply {
    let mut reply = valid_resume(exit);
    reply.changed |= ChangedGroups::SEGMENT;
    reply.rip = exit.state.rip.wrapping_add(1);
    reply.segment = SegmentLoad {
        value: SegmentRegister {
            selector: 0x10,
            reserved0: 0,
            access_rights: FLAT_DATA_RIGHTS,
            limit: 0xffff_ffff,
            reserved1: 0,
            base: 0,
        },
        register: Segment::Ds as u8,
        flags: 0,
        reserved: [0; 6],
    };
    reply
}

/// A valid injection of exception `vector` (no error code, no CR2).
fn inject(exit: &ExitMessage, vector: u8) -> Reply {
    let mut reply = Reply::new(exit.sequence, Action::InjectException);
    reply.exception.vector = vector;
    reply
}

fn with_error_code(mut reply: Reply, code: u32) -> Reply {
    reply.exception.flags |= ExceptionReply::HAS_ERROR_CODE;
    reply.exception.error_code = code;
    reply
}

fn with_cr2(mut reply: Reply, cr2: u64) -> Reply {
    reply.exception.flags |= ExceptionReply::SETS_CR2;
    reply.exception.cr2 = cr2;
    reply
}

/// RFLAGS at the exit with `bit` flipped.
fn rflags_flipped(exit: &ExitMessage, bit: u32) -> Reply {
    let mut reply = valid_resume(exit);
    reply.rflags ^= 1 << bit;
    reply
}

/// Number of reply attacks.
pub const REPLY_ATTACKS: usize = 66;

/// Invalid reply number `index` (0..[`REPLY_ATTACKS`]) for `exit` (a guest
/// exit in protected or long mode); built one at a time to keep the
/// service's stack small.
pub fn reply_attack(exit: &ExitMessage, index: usize) -> Option<ReplyAttack> {
    let resume = valid_resume(exit);
    let attack = |name, reply| ReplyAttack { name, reply };
    let edit = |name, change: &dyn Fn(&mut Reply)| {
        let mut reply = resume;
        change(&mut reply);
        ReplyAttack { name, reply }
    };
    Some(match index {
        0 => edit("reply with non-canonical RIP 0x8000000000000000", &|r| {
            r.rip = 0x8000_0000_0000_0000
        }),
        1 => edit("reply with non-canonical RIP 0xdead000000000000", &|r| {
            r.rip = 0xdead_0000_0000_0000
        }),
        2 => attack("reply with RFLAGS bit 1 clear", rflags_flipped(exit, 1)),
        3 => attack(
            "reply with RFLAGS reserved bit 3 set",
            rflags_flipped(exit, 3),
        ),
        4 => attack(
            "reply with RFLAGS reserved bit 5 set",
            rflags_flipped(exit, 5),
        ),
        5 => attack(
            "reply with RFLAGS reserved bit 15 set",
            rflags_flipped(exit, 15),
        ),
        6 => attack(
            "reply with RFLAGS reserved bit 22 set",
            rflags_flipped(exit, 22),
        ),
        7 => attack(
            "reply with RFLAGS reserved bit 63 set",
            rflags_flipped(exit, 63),
        ),
        8 => attack("reply changing RFLAGS.TF", rflags_flipped(exit, 8)),
        9 => attack("reply changing RFLAGS.IF", rflags_flipped(exit, 9)),
        10 => attack("reply changing RFLAGS.DF", rflags_flipped(exit, 10)),
        11 => attack("reply changing RFLAGS.IOPL", rflags_flipped(exit, 12)),
        12 => attack("reply changing RFLAGS.VM", rflags_flipped(exit, 17)),
        13 => attack("reply changing RFLAGS.AC", rflags_flipped(exit, 18)),
        14 => edit("reply with unknown action 0", &|r| r.action = 0),
        15 => edit("reply with unknown action 5", &|r| r.action = 5),
        16 => edit("reply with unknown action 0xffffffff", &|r| {
            r.action = u32::MAX
        }),
        17 => attack("inject vector 2 (NMI)", inject(exit, 2)),
        18 => attack("inject reserved vector 9", inject(exit, 9)),
        19 => attack("inject reserved vector 15", inject(exit, 15)),
        20 => attack("inject vector 18 (#MC)", inject(exit, 18)),
        21 => attack("inject reserved vector 22", inject(exit, 22)),
        22 => attack("inject vector 32", inject(exit, 32)),
        23 => attack("inject vector 255", inject(exit, 255)),
        24 => attack("inject #DF without error code", inject(exit, 8)),
        25 => attack(
            "inject #DF with nonzero error code",
            with_error_code(inject(exit, 8), 1),
        ),
        26 => attack(
            "inject #UD with an error code",
            with_error_code(inject(exit, 6), 0),
        ),
        27 => attack(
            "inject #GP with a 17-bit error code",
            with_error_code(inject(exit, 13), 0x1_0000),
        ),
        28 => attack(
            "inject #PF without CR2",
            with_error_code(inject(exit, 14), 2),
        ),
        29 => attack(
            "inject #GP with CR2",
            with_cr2(with_error_code(inject(exit, 13), 0), 0x1000),
        ),
        30 => attack(
            "inject #PF with non-canonical CR2",
            with_cr2(with_error_code(inject(exit, 14), 2), 0x8000_0000_0000_0000),
        ),
        31 => edit("inject with unknown exception flags", &|r| {
            *r = with_error_code(inject(exit, 13), 0);
            r.exception.flags |= 1 << 7;
        }),
        32 => edit("inject with an error code but no flag", &|r| {
            *r = inject(exit, 6);
            r.exception.error_code = 4;
        }),
        33 => edit("reply with Reply.segment.reserved[0] nonzero", &|r| {
            r.segment.reserved[0] = 1
        }),
        34 => edit("reply with Reply.segment.reserved[5] nonzero", &|r| {
            r.segment.reserved[5] = 0x80
        }),
        35 => edit("inject with exception.reserved nonzero", &|r| {
            *r = with_error_code(inject(exit, 13), 0);
            r.exception.reserved = 1;
        }),
        36 => edit("reply with wrong ABI major", &|r| {
            r.abi_major = r.abi_major.wrapping_add(1)
        }),
        37 => edit("reply with wrong sequence (next)", &|r| {
            r.sequence = r.sequence.wrapping_add(1)
        }),
        38 => edit("reply with wrong sequence (previous)", &|r| {
            r.sequence = r.sequence.wrapping_sub(1)
        }),
        39 => edit("reply with changed bit 5 (outside ALL)", &|r| {
            r.changed |= 1 << 5
        }),
        40 => edit("reply with changed bit 31 (outside ALL)", &|r| {
            r.changed |= 1 << 31
        }),
        41 => edit("reply with vector mask but no VECTORS", &|r| {
            r.vector_mask = 1
        }),
        42 => edit("reply with vector mask above YMM15", &|r| {
            r.changed |= ChangedGroups::VECTORS;
            r.vector_mask = 1 << 16;
        }),
        43 => edit("retry reply with changed groups", &|r| {
            r.action = Action::Retry as u32
        }),
        44 => edit("resume reply with exception fields", &|r| {
            r.exception.vector = 13
        }),
        45.. => return segment_attack(exit, index - 45),
    })
}

/// The segment-load attacks (ABI 1.3): each breaks one rule of
/// [`valid_segment_load`].
fn segment_attack(exit: &ExitMessage, index: usize) -> Option<ReplyAttack> {
    let edit = |name, change: &dyn Fn(&mut Reply)| {
        let mut reply = valid_segment_load(exit);
        change(&mut reply);
        Some(ReplyAttack { name, reply })
    };
    let rights = |name, access_rights: u32| {
        edit(name, &move |r: &mut Reply| {
            r.segment.value.access_rights = access_rights
        })
    };
    let cpl = (exit.state.cpl & 3) as u16;
    match index {
        0 => edit("segment load into CS", &|r| {
            r.segment.register = Segment::Cs as u8
        }),
        1 => edit("segment load into register 6", &|r| r.segment.register = 6),
        2 => edit("segment load with unknown flag bit 1", &|r| {
            r.segment.flags = 1 << 1
        }),
        3 => edit("segment load blocking interrupts on DS", &|r| {
            r.segment.flags = SegmentLoad::BLOCKS_INTERRUPTS
        }),
        4 => rights(
            "segment load with access-rights bit 8 set",
            FLAT_DATA_RIGHTS | 1 << 8,
        ),
        5 => rights(
            "segment load with access-rights bit 31 set",
            FLAT_DATA_RIGHTS | 1 << 31,
        ),
        6 => rights("segment load not accessed", FLAT_DATA_RIGHTS & !1),
        7 => rights("segment load of execute-only code", 0xc099),
        8 => rights("segment load of a system descriptor (S = 0)", 0xc083),
        9 => rights("segment load not present", 0xc013),
        10 => edit("segment load with G = 1 and limit 0xfffff000", &|r| {
            r.segment.value.limit = 0xffff_f000
        }),
        11 => edit("segment load with G = 0 and limit 0x100000", &|r| {
            r.segment.value.access_rights &= !SegmentRegister::AR_G;
            r.segment.value.limit = 0x10_0000;
        }),
        12 => edit("SS load of a code segment", &|r| {
            r.segment.register = Segment::Ss as u8;
            r.segment.value.access_rights = 0xc09b;
        }),
        13 => edit("SS load with a DPL other than the CPL", &move |r| {
            let other = u32::from(cpl ^ 3);
            r.segment.register = Segment::Ss as u8;
            r.segment.value.selector = 0x10 | cpl;
            r.segment.value.access_rights =
                FLAT_DATA_RIGHTS | other << SegmentRegister::AR_DPL_SHIFT;
        }),
        14 => edit("SS load with an RPL other than the CPL", &move |r| {
            r.segment.register = Segment::Ss as u8;
            r.segment.value.selector = 0x10 | (cpl ^ 3);
            r.segment.value.access_rights =
                FLAT_DATA_RIGHTS | u32::from(cpl) << SegmentRegister::AR_DPL_SHIFT;
        }),
        15 => edit("FS load with non-canonical base", &|r| {
            r.segment.register = Segment::Fs as u8;
            r.segment.value.base = 0x8000_0000_0000;
        }),
        16 => edit("GS load with non-canonical base", &|r| {
            r.segment.register = Segment::Gs as u8;
            r.segment.value.base = 0xdead_0000_0000_0000;
        }),
        17 => edit("DS load with a base above 4 GiB", &|r| {
            r.segment.value.base = 1 << 32
        }),
        18 => edit("segment load without a new RIP", &|r| {
            r.rip = exit.state.rip
        }),
        19 => edit("segment load on a retry reply", &|r| {
            r.action = Action::Retry as u32;
            r.changed = ChangedGroups::SEGMENT;
        }),
        20 => edit("segment load with SegmentLoad.reserved[2] nonzero", &|r| {
            r.segment.reserved[2] = 1
        }),
        _ => None,
    }
}
