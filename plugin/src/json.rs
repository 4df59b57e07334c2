//! Minimal, allocation-free JSON writing helpers for the hot path.

/// Appends `bytes`; cheaper than `extend_from_slice` for the short pieces JSON is made
/// of (keys, numbers, ids), which would otherwise each pay a `memcpy` call.
#[inline(always)]
pub fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 16 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` guarantees room for `n` more bytes after `len`; every read below
    // stays inside `bytes` (the two 8-, 4- or 2-byte windows overlap when `n` is not a
    // multiple of their size), and every write stays inside the reserved room.
    unsafe {
        let src = bytes.as_ptr();
        let dst = out.as_mut_ptr().add(len);
        if n >= 8 {
            let head = src.cast::<u64>().read_unaligned();
            let tail = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let head = src.cast::<u32>().read_unaligned();
            let tail = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n >= 2 {
            let head = src.cast::<u16>().read_unaligned();
            let tail = src.add(n - 2).cast::<u16>().read_unaligned();
            dst.cast::<u16>().write_unaligned(head);
            dst.add(n - 2).cast::<u16>().write_unaligned(tail);
        } else if n == 1 {
            *dst = *src;
        }
        out.set_len(len + n);
    }
}

/// Appends `text` as a JSON string (with quotes), escaping only what JSON requires.
#[inline]
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    if needs_escape(text) {
        out.push(b'"');
        write_escaped(out, text);
        out.push(b'"');
    } else {
        write_quoted(out, text);
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is `"`, `\\` or a control byte below 0x20 (SWAR: each test
/// flags exactly when some byte matches, false positives only sit above true ones).
#[inline(always)]
fn word_needs_escape(w: u64) -> bool {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    (zero(w ^ (ONES * b'"' as u64))
        | zero(w ^ (ONES * b'\\' as u64))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS))
        != 0
}

/// Whether `text` holds a byte that JSON strings must escape; eight bytes at a time.
#[inline]
pub fn needs_escape(text: &[u8]) -> bool {
    let n = text.len();
    let word = |at: usize| u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"));
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            if word_needs_escape(word(at)) {
                return true;
            }
            at += 8;
        }
        // The last (possibly overlapping) word.
        return word_needs_escape(word(n - 8));
    }
    if n >= 4 {
        let half = |at: usize| u32::from_le_bytes(text[at..at + 4].try_into().expect("4 bytes"));
        return word_needs_escape(u64::from(half(0)) | u64::from(half(n - 4)) << 32);
    }
    text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `text`, known to need no escaping, in quotes.
#[inline]
pub fn write_quoted(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    put(out, text);
    out.push(b'"');
}

#[cold]
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
}

/// Appends `value` in decimal.
#[inline]
pub fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser_shape() {
        assert_eq!(s("eni-1"), "\"eni-1\"");
        assert_eq!(s("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(s("x\u{1}y\tz"), "\"x\\u0001y\\tz\"");
        assert_eq!(s("zoë"), "\"zoë\"");
    }

    #[test]
    fn needs_escape_agrees_with_a_byte_loop() {
        let base = b"abcdefghijklmnopqrstuvwxyz0123";
        for n in 0..base.len() {
            assert!(!needs_escape(&base[..n]), "length {n}");
            for at in 0..n {
                for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                    let mut text = base[..n].to_vec();
                    text[at] = special;
                    assert!(needs_escape(&text), "{text:?}");
                }
                let mut text = base[..n].to_vec();
                text[at] = 0xc3;
                assert!(!needs_escape(&text), "{text:?}");
            }
        }
    }

    #[test]
    fn put_copies_every_length() {
        let source: Vec<u8> = (0..40u8).collect();
        for n in 0..=40 {
            let mut out = vec![9u8];
            put(&mut out, &source[..n]);
            assert_eq!(&out[1..], &source[..n], "length {n}");
        }
    }

    #[test]
    fn numbers() {
        for v in [0u64, 7, 10, 65535, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }
}
