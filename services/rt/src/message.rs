//! The per-CPU message page: the exit message at offset 0, the reply at
//! `ServiceStart::REPLY_OFFSET`. Another CPU (or the core) may write the page
//! at any time, so it is only ever copied with volatile accesses, never
//! referenced.

use crate::syscall::{self, Error};
use abi::{AbiVersion, ExitMessage, Reply, ServiceStart};

/// This CPU's message page.
#[derive(Debug)]
pub struct MessagePage {
    address: u64,
}

impl MessagePage {
    /// # Safety
    /// `address` must be the message page the core gave this thread in
    /// `ServiceStart::message_page` (4 KiB, readable and writable, shared with
    /// the core only).
    pub unsafe fn new(address: u64) -> MessagePage {
        MessagePage { address }
    }

    /// Waits for the first exit (no reply yet) and returns a copy of it.
    pub fn first_exit(&mut self) -> Result<ExitMessage, Error> {
        syscall::reply_recv(false, AbiVersion::CURRENT.pack())?;
        Ok(self.read_exit())
    }

    /// Writes `reply`, answers the pending exit and waits for the next one.
    /// On error (for instance `BadReply`) the exit stays pending.
    pub fn reply_and_wait(&mut self, reply: &Reply) -> Result<ExitMessage, Error> {
        self.write_reply(reply);
        syscall::reply_recv(true, AbiVersion::CURRENT.pack())?;
        Ok(self.read_exit())
    }

    /// A copy of the exit message in the page.
    pub fn read_exit(&self) -> ExitMessage {
        // SAFETY: the page is valid for reads (constructor contract), aligned
        // to 4 KiB, and ExitMessage accepts any bit pattern (FromBytes); the
        // volatile copy never creates a reference into shared memory.
        unsafe { core::ptr::read_volatile(self.address as *const ExitMessage) }
    }

    /// Copies `reply` into the page at `REPLY_OFFSET`.
    pub fn write_reply(&mut self, reply: &Reply) {
        let target = (self.address + ServiceStart::REPLY_OFFSET) as *mut Reply;
        // SAFETY: REPLY_OFFSET + size_of::<Reply>() <= 4096 (abi tests) and
        // REPLY_OFFSET is 8-aligned; the page is writable (constructor
        // contract); nothing references it.
        unsafe { core::ptr::write_volatile(target, *reply) }
    }
}
