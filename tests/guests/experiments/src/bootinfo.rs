//! The guest's own command line from the multiboot2 information block (tag 1).

/// Multiboot2 tag type of the command line.
const TAG_COMMAND_LINE: u32 = 1;
/// Multiboot2 end tag.
const TAG_END: u32 = 0;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

/// The command line in a whole multiboot2 information block (`info` starts with its
/// total size), without the terminating NUL; None if absent, malformed or not UTF-8.
pub fn command_line(info: &[u8]) -> Option<&str> {
    let total = (u32_at(info, 0)? as usize).min(info.len());
    let mut offset = 8;
    while offset + 8 <= total {
        let kind = u32_at(info, offset)?;
        let size = u32_at(info, offset + 4)? as usize;
        if kind == TAG_END || size < 8 {
            return None;
        }
        let end = offset.checked_add(size)?;
        if kind == TAG_COMMAND_LINE {
            let text = info.get(offset + 8..end.min(total))?;
            let text = text.split(|byte| *byte == 0).next()?;
            return core::str::from_utf8(text).ok();
        }
        offset = end.checked_add(7)? & !7;
    }
    None
}

/// Whether the whitespace-separated `word` is on `line`.
pub fn has_word(line: &str, word: &str) -> bool {
    line.split_whitespace().any(|candidate| candidate == word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn tag(kind: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&((8 + payload.len()) as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        while bytes.len() % 8 != 0 {
            bytes.push(0);
        }
        bytes
    }

    fn info(tags: &[Vec<u8>]) -> Vec<u8> {
        let mut body: Vec<u8> = tags.concat();
        body.extend(tag(TAG_END, &[]));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend(body);
        bytes
    }

    #[test]
    fn finds_the_command_line_after_other_tags() {
        let block = info(&[tag(6, &[0; 20]), tag(TAG_COMMAND_LINE, b"smp sipi-only\0")]);
        let line = command_line(&block).unwrap();
        assert_eq!(line, "smp sipi-only");
        assert!(has_word(line, "sipi-only"));
        assert!(!has_word(line, "sipi"));
    }

    #[test]
    fn absent_or_malformed() {
        assert_eq!(command_line(&info(&[tag(6, &[0; 4])])), None);
        let mut broken = info(&[tag(TAG_COMMAND_LINE, b"x\0")]);
        broken[12..16].copy_from_slice(&4u32.to_le_bytes()); // tag size below 8
        assert_eq!(command_line(&broken), None);
        assert_eq!(command_line(&[1, 2]), None);
    }
}
