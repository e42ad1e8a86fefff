//! A polling writer for the first serial port (COM1, a 16550 UART at 0x3f8).
//!
//! Used by the kernel's console and by guests and services that own the port
//! (under Cordon, guest COM1 I/O is passed through). No interrupts, no input.

use crate::port;

/// The first serial port of a PC.
#[derive(Debug)]
pub struct Com1 {
    _private: (),
}

const BASE: u16 = 0x3f8;
const DATA: u16 = BASE;
const INTERRUPT_ENABLE: u16 = BASE + 1;
const FIFO_CONTROL: u16 = BASE + 2;
const LINE_CONTROL: u16 = BASE + 3;
const MODEM_CONTROL: u16 = BASE + 4;
const LINE_STATUS: u16 = BASE + 5;
const LINE_STATUS_TRANSMIT_EMPTY: u8 = 1 << 5;
const LINE_STATUS_TRANSMITTER_IDLE: u8 = 1 << 6;
/// Bounds the wait for the transmitter, so a missing UART cannot hang the CPU.
const TRANSMIT_POLL_LIMIT: u32 = 100_000;

impl Com1 {
    /// Programs the UART for 115200 baud, 8 data bits, no parity, one stop bit,
    /// FIFOs on, interrupts off.
    ///
    /// # Safety
    /// The caller must own COM1: nothing else may program the UART concurrently.
    pub unsafe fn init() -> Com1 {
        // SAFETY: the caller owns the UART; these are the standard 16550 set-up writes.
        unsafe {
            port::write_u8(INTERRUPT_ENABLE, 0x00);
            port::write_u8(LINE_CONTROL, 0x80); // divisor latch access
            port::write_u8(DATA, 0x01); // divisor 1 = 115200 baud (low byte)
            port::write_u8(INTERRUPT_ENABLE, 0x00); // divisor high byte
            port::write_u8(LINE_CONTROL, 0x03); // 8N1, latch off
            port::write_u8(FIFO_CONTROL, 0xc7); // enable and clear FIFOs, 14-byte threshold
            port::write_u8(MODEM_CONTROL, 0x03); // DTR + RTS, no loopback
        }
        Com1 { _private: () }
    }

    /// Returns a writer for a UART that someone already initialised.
    ///
    /// # Safety
    /// The caller must ensure that writes from this handle do not interleave with
    /// another writer in a way that matters (a lock, or a single CPU).
    pub unsafe fn already_initialised() -> Com1 {
        Com1 { _private: () }
    }

    /// Sends one byte, waiting (boundedly) for the transmitter to have room.
    pub fn write_byte(&mut self, byte: u8) {
        for _ in 0..TRANSMIT_POLL_LIMIT {
            // SAFETY: reading the line status register has no side effect; `self`
            // proves the caller owns the UART.
            if unsafe { port::read_u8(LINE_STATUS) } & LINE_STATUS_TRANSMIT_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: writing the data register sends a byte; `self` proves ownership.
        unsafe { port::write_u8(DATA, byte) };
    }

    /// Waits (boundedly) until every byte written has left the UART, so that
    /// nothing is lost when the machine stops right after.
    pub fn flush(&mut self) {
        for _ in 0..TRANSMIT_POLL_LIMIT {
            // SAFETY: reading the line status register has no side effect; `self`
            // proves the caller owns the UART.
            if unsafe { port::read_u8(LINE_STATUS) } & LINE_STATUS_TRANSMITTER_IDLE != 0 {
                break;
            }
        }
    }

    /// Sends a string, turning `\n` into `\r\n` as terminals expect.
    pub fn write_str_raw(&mut self, text: &str) {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
    }
}

impl core::fmt::Write for Com1 {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        self.write_str_raw(text);
        Ok(())
    }
}
