//! Layout tests: the offsets both sides of the ABI rely on.

use super::*;
use core::mem::offset_of;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

#[test]
fn exit_message_offsets_are_fixed() {
    assert_eq!(offset_of!(ExitMessage, sequence), 8);
    assert_eq!(offset_of!(ExitMessage, qualification), 24);
    assert_eq!(offset_of!(ExitMessage, guest_linear), 40);
    assert_eq!(offset_of!(ExitMessage, state), 48);
    assert_eq!(offset_of!(GuestState, rip), 128);
    assert_eq!(offset_of!(GuestState, segments), 200);
    assert_eq!(offset_of!(ExitMessage, ldtr), 48 + 376 + 512);
    assert_eq!(size_of::<ExitMessage>(), 48 + 376 + 512 + 24);
}

#[test]
fn reply_offsets_are_fixed() {
    assert_eq!(offset_of!(Reply, sequence), 8);
    assert_eq!(offset_of!(Reply, gprs), 24);
    assert_eq!(offset_of!(Reply, exception), 168);
    assert_eq!(offset_of!(Reply, segment), 184);
    assert_eq!(offset_of!(Reply, vectors), 216);
    assert_eq!(size_of::<Reply>(), 728);
}

#[test]
fn message_and_reply_share_one_page() {
    assert!(size_of::<ExitMessage>() as u64 <= ServiceStart::REPLY_OFFSET);
    assert!(ServiceStart::REPLY_OFFSET + size_of::<Reply>() as u64 <= PAGE_SIZE);
}

#[test]
fn reply_round_trips_through_bytes() {
    let mut reply = Reply::new(42, Action::Resume);
    reply.gprs[Gpr::Rax as usize] = 0x1122_3344_5566_7788;
    reply.changed = ChangedGroups::GPRS;
    let bytes = reply.as_bytes().to_vec();
    let back = Reply::read_from_bytes(&bytes).unwrap();
    assert_eq!(back, reply);
    assert_eq!(&bytes[24..32], &0x1122_3344_5566_7788u64.to_le_bytes());
}

#[test]
fn version_packing() {
    let v = AbiVersion { major: 3, minor: 9 };
    assert_eq!(AbiVersion::unpack(v.pack()), Some(v));
    assert_eq!(AbiVersion::unpack(1 << 40), None);
    assert!(AbiVersion::CURRENT.compatible_with(AbiVersion { major: 1, minor: 7 }));
    assert!(!AbiVersion::CURRENT.compatible_with(AbiVersion { major: 2, minor: 0 }));
}

#[test]
fn raw_enums_reject_unknown_values() {
    assert_eq!(Action::from_raw(0), None);
    assert_eq!(Action::from_raw(5), None);
    assert_eq!(Action::from_raw(2), Some(Action::InjectException));
    assert_eq!(Syscall::from_raw(7), None);
    assert_eq!(Syscall::from_raw(6), Some(Syscall::InitCpu));
    assert_eq!(SyscallError::from_raw(0), None);
    assert_eq!(ExitReason::from_raw(48), Some(ExitReason::EptViolation));
}

#[test]
fn cmpxchg_request_is_plain_bytes() {
    let mut request = CmpxchgRequest::new_zeroed();
    request.width = 8;
    request.offset = 0xffc;
    assert_eq!(request.as_bytes().len(), 72);
    assert_eq!(offset_of!(CmpxchgRequest, expected), 24);
    assert_eq!(offset_of!(CmpxchgRequest, current), 56);
}
