//! Parsing one flow-log line against a [`Format`]: splitting, validation, addresses.

use crate::fields::Kind;
use crate::format::Format;
use crate::json;
use std::fmt;
use std::net::Ipv6Addr;

/// An address found in `srcaddr` or `dstaddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// The field is `-` or absent from the format.
    None,
    /// An IPv4 address as a big-endian integer.
    V4(u32),
    /// An IPv6 address as a big-endian integer.
    V6(u128),
}

/// Why a line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Nothing but whitespace.
    Empty,
    /// More or fewer fields than the format names.
    FieldCount {
        /// Fields the format names.
        expected: usize,
        /// Fields the line holds.
        found: usize,
    },
    /// A numeric field that is not a plain unsigned integer.
    NotANumber {
        /// The field's AWS name.
        field: &'static str,
        /// The offending text (shortened).
        value: String,
    },
    /// A numeric field above its maximum.
    OutOfRange {
        /// The field's AWS name.
        field: &'static str,
        /// The offending text (shortened).
        value: String,
        /// The largest allowed value.
        max: u64,
    },
    /// An address field that is not an IPv4 or IPv6 address.
    BadAddress {
        /// The field's AWS name.
        field: &'static str,
        /// The offending text (shortened).
        value: String,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Empty => write!(f, "empty line"),
            LineError::FieldCount { expected, found } => {
                write!(f, "wrong field count: expected {expected}, found {found}")
            }
            LineError::NotANumber { field, value } => {
                write!(f, "field `{field}`: `{value}` is not an unsigned integer")
            }
            LineError::OutOfRange { field, value, max } => {
                write!(f, "field `{field}`: `{value}` is out of range (max {max})")
            }
            LineError::BadAddress { field, value } => {
                write!(f, "field `{field}`: `{value}` is not an IP address")
            }
        }
    }
}

/// What the enrichment step needs from a parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The source address.
    pub src: Addr,
    /// The destination address.
    pub dst: Addr,
    /// The flow's start time, when present.
    pub start: Option<u64>,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Field separators: space, tab, and carriage return (so CRLF line ends are tolerated).
#[inline(always)]
pub fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

/// A field ends at a separator or at the end of the line.
#[inline(always)]
fn ends_token(b: u8) -> bool {
    is_separator(b) || b == b'\n'
}

/// Length of the token at the start of `s`: up to the first separator or `\n`. Eight
/// bytes at a time with one test per word (bytes up to 0x20 stop the fast loop; a
/// control byte that is not a separator belongs to the token), which keeps the loop
/// count, and wasm's per-iteration interrupt checks, low.
#[inline]
pub fn scan_token(s: &[u8]) -> usize {
    let mut i = 0;
    while i + 8 <= s.len() {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
        // Bit 7 set for bytes below 0x21 (exact for the lowest one, which is all we use).
        let low = w.wrapping_sub(ONES * 0x21) & !w & HIGHS;
        if low != 0 {
            let at = i + (low.trailing_zeros() / 8) as usize;
            if ends_token(s[at]) {
                return at;
            }
            i = at + 1;
            continue;
        }
        i += 8;
    }
    while i < s.len() && !ends_token(s[i]) {
        i += 1;
    }
    i
}

/// Parses `line` and appends its JSON object, without the closing brace, to `out`.
/// On error `out` is left as it was.
pub fn parse_line(line: &[u8], format: &Format, out: &mut Vec<u8>) -> Result<Parsed, LineError> {
    parse_line_at(line, 0, format, out).0
}

/// Parses the line that starts at `start` in `text` and ends at the next `\n` (or the
/// end of `text`), validating each field and writing the line's JSON object (keys in
/// format order, no closing brace) to `out` in the same pass. Fields are separated by
/// runs of spaces, tabs and carriage returns. Returns the result and the line's end;
/// on error `out` is truncated back to where it was.
#[inline]
pub fn parse_line_at(
    text: &[u8],
    start: usize,
    format: &Format,
    out: &mut Vec<u8>,
) -> (Result<Parsed, LineError>, usize) {
    let mark = out.len();
    let expected = format.len();
    let mut parsed = Parsed {
        src: Addr::None,
        dst: Addr::None,
        start: None,
    };
    let mut pos = 0usize;
    let mut i = start;
    let n = text.len();
    // A wrong field count is the more useful message, so keep counting after a bad value.
    let mut first_error: Option<LineError> = None;
    loop {
        // Skip separators (usually exactly one space); stop at the end of the line.
        if i < n && text[i] == b' ' {
            i += 1;
        }
        while i < n && is_separator(text[i]) {
            i += 1;
        }
        if i == n || text[i] == b'\n' {
            break;
        }
        let begin = i;
        i += scan_token(&text[i..]);
        if pos < expected
            && first_error.is_none()
            && let Err(error) = write_field(format, pos, &text[begin..i], &mut parsed, out)
        {
            first_error = Some(error);
        }
        pos += 1;
    }
    let end = i;
    if pos != expected {
        out.truncate(mark);
        let error = if pos == 0 {
            LineError::Empty
        } else {
            LineError::FieldCount {
                expected,
                found: pos,
            }
        };
        return (Err(error), end);
    }
    if let Some(error) = first_error {
        out.truncate(mark);
        return (Err(error), end);
    }
    (Ok(parsed), end)
}

/// Validates one field and appends `"key":value` to `out`.
#[inline]
fn write_field(
    format: &Format,
    pos: usize,
    value: &[u8],
    parsed: &mut Parsed,
    out: &mut Vec<u8>,
) -> Result<(), LineError> {
    json::put(out, format.key(pos));
    if value == b"-" {
        json::put(out, b"null");
        return Ok(());
    }
    match format.kind(pos) {
        Kind::Text => json::write_str(out, value),
        Kind::UInt(max) => {
            let number = parse_uint(value).ok_or_else(|| LineError::NotANumber {
                field: format.name(pos),
                value: shorten(value),
            })?;
            if number > max {
                return Err(LineError::OutOfRange {
                    field: format.name(pos),
                    value: shorten(value),
                    max,
                });
            }
            if Some(pos) == format.start {
                parsed.start = Some(number);
            }
            if value.len() > 1 && value[0] == b'0' {
                json::write_u64(out, number);
            } else {
                json::put(out, value);
            }
        }
        Kind::Ip => {
            let addr = parse_addr(value).ok_or_else(|| LineError::BadAddress {
                field: format.name(pos),
                value: shorten(value),
            })?;
            if Some(pos) == format.src {
                parsed.src = addr;
            } else if Some(pos) == format.dst {
                parsed.dst = addr;
            }
            // A valid address is digits, hex letters, dots and colons: nothing to escape.
            json::write_quoted(out, value);
        }
    }
    Ok(())
}

/// Parses a plain unsigned decimal integer; `None` on anything else or on overflow.
#[inline]
pub fn parse_uint(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    // Leading zeros do not count towards the 20-digit limit of a u64.
    let zeros = text.iter().take_while(|&&b| b == b'0').count();
    let text = if zeros == text.len() {
        &text[zeros - 1..]
    } else {
        &text[zeros..]
    };
    if text.len() > 20 {
        return None;
    }
    if text.len() == 20 {
        let mut value: u64 = 0;
        for &b in text {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(digit as u64)?;
        }
        return Some(value);
    }
    // Up to 19 digits cannot overflow a u64. Four digits per step keeps the loop (and
    // wasm's per-iteration interrupt check) short: a timestamp takes 2 steps + 2 digits.
    let mut value: u64 = 0;
    let mut chunks = text.chunks_exact(4);
    for chunk in &mut chunks {
        value = value * 10_000 + four_digits(chunk.try_into().expect("4 bytes"))? as u64;
    }
    for &b in chunks.remainder() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + digit as u64;
    }
    Some(value)
}

/// The value of four ASCII digits, or `None` if any byte is not a digit (SWAR).
#[inline(always)]
fn four_digits(bytes: [u8; 4]) -> Option<u32> {
    let w = u32::from_le_bytes(bytes);
    // Every byte in 0x30..=0x39: high nibble 3, and adding 6 keeps it 3.
    if w & 0xF0F0_F0F0 != 0x3030_3030 || (w.wrapping_add(0x0606_0606) & 0xF0F0_F0F0) != 0x3030_3030
    {
        return None;
    }
    let d = w - 0x3030_3030;
    // Byte 0 is the most significant digit: combine neighbours into two-digit pairs.
    let pairs = d * 10 + (d >> 8);
    Some((pairs & 0xFF) * 100 + ((pairs >> 16) & 0xFF))
}

/// Parses an IPv4 (dotted quad, no leading zeros) or IPv6 address.
#[inline]
pub fn parse_addr(text: &[u8]) -> Option<Addr> {
    if let Some(v4) = parse_v4(text) {
        return Some(Addr::V4(v4));
    }
    if text.contains(&b':') {
        let text = std::str::from_utf8(text).ok()?;
        let v6: Ipv6Addr = text.parse().ok()?;
        return Some(Addr::V6(u128::from(v6)));
    }
    None
}

#[inline]
fn parse_v4(text: &[u8]) -> Option<u32> {
    // Unrolled (no inner loops): at most 3 digits per octet, no leading zeros.
    let mut i = 0;
    let mut value: u32 = 0;
    for octet_index in 0..4 {
        let octet = octet(text, &mut i)?;
        value = (value << 8) | octet;
        if octet_index < 3 {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == text.len()).then_some(value)
}

#[inline(always)]
fn octet(text: &[u8], i: &mut usize) -> Option<u32> {
    let digit = |at: usize| {
        text.get(at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
    };
    let first = digit(*i)? as u32;
    let Some(second) = digit(*i + 1) else {
        *i += 1;
        return Some(first);
    };
    if first == 0 {
        return None; // leading zero
    }
    let Some(third) = digit(*i + 2) else {
        *i += 2;
        return Some(first * 10 + second as u32);
    };
    let value = first * 100 + second as u32 * 10 + third as u32;
    *i += 3;
    (value <= 255).then_some(value)
}

fn shorten(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    if text.chars().count() > 64 {
        let mut short: String = text.chars().take(64).collect();
        short.push('…');
        short
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(line: &str) -> Result<(Parsed, String), LineError> {
        let format = Format::default();
        let mut out = b"previous".to_vec();
        let parsed = parse_line(line.as_bytes(), &format, &mut out);
        let json = String::from_utf8(out).unwrap();
        let json = json
            .strip_prefix("previous")
            .expect("earlier output is kept");
        if parsed.is_err() {
            assert_eq!(json, "", "a rejected line leaves no output");
        }
        Ok((parsed?, json.to_string()))
    }

    #[test]
    fn default_line() {
        let (parsed, fields) =
            parse("2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK").unwrap();
        assert_eq!(
            fields,
            r#"{"version":2,"account_id":"123456789010","interface_id":"eni-1235b8ca123456789","srcaddr":"172.31.16.139","dstaddr":"172.31.16.21","srcport":20641,"dstport":22,"protocol":6,"packets":20,"bytes":4249,"start":1418530010,"end":1418530070,"action":"ACCEPT","log_status":"OK""#
        );
        assert_eq!(
            parsed.src,
            Addr::V4(u32::from(Ipv4Addr::new(172, 31, 16, 139)))
        );
        assert_eq!(parsed.start, Some(1418530010));
    }

    #[test]
    fn runs_of_spaces_and_nodata() {
        let (parsed, fields) =
            parse("2  123 eni-1   - - - - - - - 1431280876 1431280934 - NODATA").unwrap();
        assert!(fields.contains(r#","srcaddr":null,"#), "{fields}");
        assert_eq!(parsed.src, Addr::None);
        assert_eq!(parsed.start, Some(1431280876));
    }

    #[test]
    fn rejections() {
        assert_eq!(parse("").unwrap_err(), LineError::Empty);
        assert_eq!(parse("   ").unwrap_err(), LineError::Empty);
        assert_eq!(
            parse("2 123 eni-1").unwrap_err(),
            LineError::FieldCount {
                expected: 14,
                found: 3
            }
        );
        let bad_port = parse("2 1 e 10.0.0.1 10.0.0.2 70000 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
        assert!(matches!(
            bad_port,
            LineError::OutOfRange {
                field: "srcport",
                max: 65535,
                ..
            }
        ));
        let bad_bytes =
            parse("2 1 e 10.0.0.1 10.0.0.2 1 22 6 1 99999999999999999999 1 2 ACCEPT OK")
                .unwrap_err();
        assert!(matches!(
            bad_bytes,
            LineError::NotANumber { field: "bytes", .. }
        ));
        let neg = parse("2 1 e 10.0.0.1 10.0.0.2 -1 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
        assert!(matches!(
            neg,
            LineError::NotANumber {
                field: "srcport",
                ..
            }
        ));
        let bad_ip = parse("2 1 e 10.0.0.256 10.0.0.2 1 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
        assert!(matches!(
            bad_ip,
            LineError::BadAddress {
                field: "srcaddr",
                ..
            }
        ));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr(b"0.0.0.0"), Some(Addr::V4(0)));
        assert_eq!(parse_addr(b"255.255.255.255"), Some(Addr::V4(u32::MAX)));
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.4x",
            "1..2.3",
            "",
            "1234.1.1.1",
            ":::",
            "abc",
        ] {
            assert_eq!(parse_addr(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            parse_addr(b"2001:db8::1"),
            Some(Addr::V6(u128::from(
                "2001:db8::1".parse::<Ipv6Addr>().unwrap()
            )))
        );
    }

    #[test]
    fn scan_token_finds_the_end() {
        for text in [
            "",
            "a",
            "abc def",
            "abcdefgh",
            "abcdefghi j",
            "0123456789abcdef\tx",
            "ünïcode-ид x",
            "a\"b c",
            "abcdefg\\ h",
            "abcdefgh\"",
            "abcdefghijklmno\n",
            "ab\u{1}cdefghijk\u{7f}lm\u{1f}\r",
            "abc\u{0}defghijklmnopqrstu\u{1}vwxyz x",
        ] {
            let bytes = text.as_bytes();
            let want = bytes
                .iter()
                .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(bytes.len());
            assert_eq!(scan_token(bytes), want, "{text:?}");
        }
    }

    #[test]
    fn uint_agrees_with_the_standard_parser() {
        let mut cases: Vec<String> = vec![
            "0".into(),
            "9".into(),
            "10".into(),
            "65535".into(),
            "1700000000".into(),
            "0000".into(),
            "0123".into(),
            "99999999".into(),
            "1234567890123456789".into(),
            u64::MAX.to_string(),
            "18446744073709551616".into(),
            "99999999999999999999".into(),
        ];
        for bad in [
            "12a4",
            "1/34",
            "12:4",
            "1234567\u{0}",
            "ab",
            "-1",
            "+1",
            "1 2",
            "١٢",
        ] {
            cases.push(bad.into());
        }
        let mut x = 1u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            cases.push((x >> (x % 60)).to_string());
            let mut s = (x >> 7).to_string();
            let at = (x % s.len() as u64) as usize;
            s.replace_range(at..at + 1, [":", "/", "a", " "][(x % 4) as usize]);
            cases.push(s);
        }
        for case in cases {
            let want = if case.bytes().all(|b| b.is_ascii_digit()) {
                case.parse::<u64>().ok()
            } else {
                None
            };
            assert_eq!(parse_uint(case.as_bytes()), want, "{case:?}");
        }
    }

    #[test]
    fn v4_agrees_with_the_standard_parser() {
        let mut x = 7u64;
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            "1.2.3.4 ",
            "1000.1.1.1",
            "1.2.3.255",
            "1.2.3.256",
            "9.99.199.249",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let octets: Vec<String> = (0..4)
                .map(|k| ((x >> (k * 16)) % 300).to_string())
                .collect();
            let mut s = octets.join(".");
            if x.is_multiple_of(5) {
                s.insert(
                    ((x >> 40) % s.len() as u64) as usize,
                    "0.x".as_bytes()[(x % 3) as usize] as char,
                );
            }
            cases.push(s);
        }
        for case in cases {
            let want = case.parse::<Ipv4Addr>().ok().map(u32::from);
            assert_eq!(parse_v4(case.as_bytes()), want, "{case:?}");
        }
    }

    #[test]
    fn uint() {
        assert_eq!(parse_uint(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_uint(b"18446744073709551616"), None);
        assert_eq!(parse_uint(b"+1"), None);
        assert_eq!(parse_uint(b""), None);
    }
}
