//! QEMU's "modified UTF-8" decoding (util/unicode.c), used by its JSON parser and writer:
//! `C0 80` stands for U+0000, and surrogates, noncharacters, overlong forms and code points
//! beyond U+10FFFF are invalid.

/// Whether QEMU accepts `cp` as a character.
pub fn is_valid_codepoint(cp: u32) -> bool {
    cp <= 0x10FFFF
        && (cp & 0xFFFF_F800) != 0xD800
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && (cp & 0xFFFE) != 0xFFFE
}

/// Decodes the character at the start of `bytes` (non-empty): its code point (`None` when
/// invalid) and how many bytes QEMU consumes for it either way.
pub fn mod_utf8_codepoint(bytes: &[u8]) -> (Option<u32>, usize) {
    const MIN_CP: [u32; 5] = [0x80, 0x800, 0x10000, 0x20_0000, 0x400_0000];
    let first = bytes[0];
    if first < 0x80 {
        return (Some(first.into()), 1);
    }
    if first >= 0xFE || first & 0x40 == 0 {
        // 0xFE/0xFF never occur; a continuation byte cannot start a character.
        return (None, 1);
    }
    let len = first.leading_ones() as usize;
    let mut cp = u32::from(first) & ((0x80u32 >> len) - 1);
    for i in 1..len {
        match bytes.get(i) {
            Some(&b) if b & 0xC0 == 0x80 => cp = (cp << 6) | u32::from(b & 0x3F),
            _ => return (None, i),
        }
    }
    let overlong = cp < MIN_CP[len - 2] && !(cp == 0 && len == 2);
    if !is_valid_codepoint(cp) || overlong {
        return (None, len);
    }
    (Some(cp), len)
}

/// `bytes` as text, each invalid sequence replaced by U+FFFD the way QEMU's writer does.
pub fn lossy(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (cp, len) = mod_utf8_codepoint(&bytes[pos..]);
        pos += len;
        out.push(cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(mod_utf8_codepoint(b"a"), (Some(0x61), 1));
        assert_eq!(mod_utf8_codepoint("é".as_bytes()), (Some(0xE9), 2));
        assert_eq!(mod_utf8_codepoint(b"\xC0\x80"), (Some(0), 2));
        assert_eq!(mod_utf8_codepoint(b"\xC1\x81"), (None, 2));
        assert_eq!(mod_utf8_codepoint(b"\xC3"), (None, 1));
        assert_eq!(mod_utf8_codepoint(b"\xC3x"), (None, 1));
        assert_eq!(mod_utf8_codepoint(b"\xFF"), (None, 1));
        assert_eq!(mod_utf8_codepoint(b"\x80"), (None, 1));
        assert_eq!(mod_utf8_codepoint(b"\xED\xA0\x80"), (None, 3));
        assert_eq!(mod_utf8_codepoint("\u{FFFE}".as_bytes()), (None, 3));
        assert_eq!(mod_utf8_codepoint("😀".as_bytes()), (Some(0x1F600), 4));
        assert_eq!(lossy(b"a\xffb"), "a\u{FFFD}b");
    }
}
