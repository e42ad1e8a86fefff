//! Formatted console output through the `log` syscall: [`log!`](crate::log!)
//! formats one line into a stack buffer and hands it to the core in chunks of
//! at most `LOG_MAX` bytes (no heap, so it works inside the panic handler).

use abi::syscall::LOG_MAX;
use core::fmt;

/// Collects formatted text and passes it to `sink` in chunks of at most
/// `LOG_MAX` bytes.
pub struct ChunkWriter<F: FnMut(&[u8])> {
    buffer: [u8; LOG_MAX as usize],
    used: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> ChunkWriter<F> {
    pub fn new(sink: F) -> Self {
        ChunkWriter {
            buffer: [0; LOG_MAX as usize],
            used: 0,
            sink,
        }
    }

    /// Hands what is buffered to the sink.
    pub fn flush(&mut self) {
        if self.used > 0 {
            (self.sink)(&self.buffer[..self.used]);
            self.used = 0;
        }
    }
}

impl<F: FnMut(&[u8])> fmt::Write for ChunkWriter<F> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            if self.used == self.buffer.len() {
                self.flush();
            }
            let take = rest.len().min(self.buffer.len() - self.used);
            self.buffer[self.used..self.used + take].copy_from_slice(&rest[..take]);
            self.used += take;
            rest = &rest[take..];
        }
        Ok(())
    }
}

/// Writes `args` and a newline to the console. Errors of the `log` syscall
/// are dropped: there is nowhere else to report them.
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut writer = ChunkWriter::new(|chunk| {
        let _ = crate::syscall::log(chunk);
    });
    let _ = fmt::Write::write_fmt(&mut writer, args);
    let _ = fmt::Write::write_str(&mut writer, "\n");
    writer.flush();
}

/// `log!("x = {}", x)`: one formatted line on the console.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::write_line(::core::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    #[test]
    fn long_text_is_cut_into_log_max_chunks() {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        {
            let mut writer = ChunkWriter::new(|chunk: &[u8]| chunks.push(chunk.to_vec()));
            for i in 0..300 {
                write!(writer, "{i:04},").unwrap();
            }
            writer.flush();
        }
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 512, 476]);
        let all: Vec<u8> = chunks.concat();
        assert_eq!(&all[..10], b"0000,0001,");
        assert_eq!(&all[all.len() - 5..], b"0299,");
    }

    #[test]
    fn nothing_buffered_means_nothing_sent() {
        let mut calls = 0;
        {
            let mut writer = ChunkWriter::new(|_: &[u8]| calls += 1);
            writer.flush();
            writer.write_str("").unwrap();
            writer.flush();
        }
        assert_eq!(calls, 0);
    }
}
