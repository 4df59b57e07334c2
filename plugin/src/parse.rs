//! Parsing one flow-log line against a [`Format`]: splitting, validation, addresses.

use crate::format::{Column, Format, KEY_BYTES};
use crate::json;
use std::fmt;
use std::mem::MaybeUninit;

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

/// Field separators: space, tab, and carriage return (so CRLF line ends are tolerated).
#[inline(always)]
pub fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

/// Parses `line` and appends its JSON object, without the closing brace, to `out`.
/// On error `out` is left as it was.
pub fn parse_line(line: &[u8], format: &Format, out: &mut Vec<u8>) -> Result<Parsed, LineError> {
    parse_line_at(line, 0, format, out).0
}

impl Parsed {
    /// Nothing found yet: no addresses, no start.
    pub const EMPTY: Parsed = Parsed {
        src: Addr::None,
        dst: Addr::None,
        start: None,
    };
}

/// Most fields a format can name (each field at most once).
const MAX_FIELDS: usize = crate::fields::FIELDS.len();

/// Parses the line that starts at `start` in `text` and ends at the next `\n` (or the
/// end of `text`), validating each field and writing the line's JSON object (keys in
/// format order, no closing brace) to `out`. Fields are separated by runs of spaces,
/// tabs and carriage returns. Returns the result and the line's end; on error `out` is
/// left as it was.
///
/// Two small loops instead of one big one: the first finds the fields' bounds (and
/// counts them, so a wrong field count wins over a bad value), the second validates and
/// writes them into room reserved once per line. Few values stay live in each loop,
/// which matters in wasm, where the compiler spills what does not fit in registers.
#[inline]
pub fn parse_line_at(
    text: &[u8],
    start: usize,
    format: &Format,
    out: &mut Vec<u8>,
) -> (Result<Parsed, LineError>, usize) {
    let mut parsed = Parsed::EMPTY;
    let (result, end) =
        parse_line_with::<true, false>(text, start, format, out, &mut [], &mut parsed);
    (result.map(|()| parsed), end)
}

/// A column value that stands for null (`-`).
pub const NULL: u64 = u64::MAX;

/// [`parse_line_at`], writing the JSON only when `JSON`, and with `VALUES` each line
/// position's value to `values` (which then holds one slot per position of `format`):
/// an integer field's number, any other field's byte range in `text` as
/// `begin << 32 | end`, [`NULL`] for `-`. What the enrichment needs is written to
/// `parsed` (set to [`Parsed::EMPTY`] first). On error `values` and `parsed` hold
/// nothing useful.
///
/// `parsed` is written in place, field by field, rather than returned: in wasm a
/// returned struct travels through memory, and copying it whole right after its fields
/// were stored one by one stalls the processor (a wide load cannot take its bytes from
/// several narrower stores still in flight).
#[inline]
pub fn parse_line_with<const JSON: bool, const VALUES: bool>(
    text: &[u8],
    start: usize,
    format: &Format,
    out: &mut Vec<u8>,
    values: &mut [u64],
    parsed: &mut Parsed,
) -> (Result<(), LineError>, usize) {
    let expected = format.len();
    let mut bounds = [MaybeUninit::<(u32, u32)>::uninit(); MAX_FIELDS];
    let (found, end) = tokenize(text, start, &mut bounds[..expected]);
    if found != expected {
        let error = if found == 0 {
            LineError::Empty
        } else {
            LineError::FieldCount { expected, found }
        };
        return (Err(error), end);
    }
    // SAFETY: `tokenize` wrote the first `found` (= `expected`) entries.
    let bounds = unsafe {
        &*(&bounds[..expected] as *const [MaybeUninit<(u32, u32)>] as *const [(u32, u32)])
    };
    let mark = out.len();
    *parsed = Parsed::EMPTY;
    if VALUES && !JSON {
        if read_values(text, format, bounds, values, parsed) {
            return (Ok(()), end);
        }
        // A bad value or a long integer: the field-by-field pass reads the line (and
        // names the first bad position).
        *parsed = Parsed::EMPTY;
    }
    let result =
        write_fields::<JSON, VALUES>(text, end - start, format, bounds, out, values, parsed)
            .map_err(|pos| bad_value(format, bounds, pos, text));
    if JSON && result.is_err() {
        // A value that needed escaping or normalising may have been written already.
        out.truncate(mark);
    }
    (result, end)
}

/// Finds the fields of the line at `start`: stores the first `bounds.len()` as
/// (begin, end) offsets and returns how many there are, and where the line ends.
///
/// Works on 64-byte windows: one bit per byte for "separator" and for "newline"
/// (16 bytes per SIMD compare), then token starts and ends fall out of two shifts, and
/// each field costs a few bit operations instead of a byte loop. Not inlined, so that
/// its loop gets the registers to itself.
#[inline(never)]
fn tokenize(text: &[u8], start: usize, bounds: &mut [MaybeUninit<(u32, u32)>]) -> (usize, usize) {
    let mut window = start;
    // Whether the byte before the window separates (the line start does).
    let mut after_separator = true;
    // A field that started in an earlier window and has not ended yet.
    let mut open = false;
    let mut found = 0usize;
    loop {
        let (separators, newlines) = window_masks(text, window);
        // Everything from the first newline on ends the line.
        let line_end = newlines.trailing_zeros();
        let split = separators | u64::MAX.checked_shl(line_end).unwrap_or(0);
        let before = (split << 1) | u64::from(after_separator);
        if open && split != 0 {
            // The open field ends at this window's first separator.
            let end = window + split.trailing_zeros() as usize;
            if let Some(slot) = bounds.get_mut(found - 1) {
                // SAFETY: the open field's start was written when it was found.
                unsafe { (*slot.as_mut_ptr()).1 = end as u32 };
            }
            open = false;
        }
        // One step per field: its end is the first separator after its start. Two
        // fields per turn of the loop, since in wasm every turn also checks for an
        // interruption (the same done for `write_fields`' loop made it slower).
        let mut starts = !split & before;
        let mut field = |starts: u64| {
            let at = starts.trailing_zeros();
            let rest = split >> at;
            let end = if rest == 0 {
                open = true;
                0
            } else {
                window + (at + rest.trailing_zeros()) as usize
            };
            if let Some(slot) = bounds.get_mut(found) {
                slot.write(((window + at as usize) as u32, end as u32));
            }
            found += 1;
        };
        while starts != 0 {
            field(starts);
            starts &= starts - 1;
            if starts == 0 {
                break;
            }
            field(starts);
            starts &= starts - 1;
        }
        if line_end < 64 {
            return (found, window + line_end as usize);
        }
        after_separator = split >> 63 != 0;
        window += 64;
    }
}

/// Bit `i` of the two masks: whether `text[at + i]` is a field separator (space, tab,
/// carriage return), and whether it is a newline. The end of `text` counts as a newline.
#[inline(always)]
fn window_masks(text: &[u8], at: usize) -> (u64, u64) {
    let mut padded = [b'\n'; 64];
    let window: &[u8; 64] = match text.get(at..at + 64) {
        Some(bytes) => bytes.try_into().expect("64 bytes"),
        None => {
            let rest = &text[at.min(text.len())..];
            padded[..rest.len()].copy_from_slice(rest);
            &padded
        }
    };
    let mut separators = 0u64;
    let mut newlines = 0u64;
    for (k, chunk) in window.chunks_exact(16).enumerate() {
        let (s, n) = masks16(chunk.try_into().expect("16 bytes"));
        separators |= u64::from(s) << (16 * k);
        newlines |= u64::from(n) << (16 * k);
    }
    (separators, newlines)
}

/// Separator and newline masks of 16 bytes (wasm SIMD).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn masks16(chunk: &[u8; 16]) -> (u16, u16) {
    use core::arch::wasm32::*;
    // SAFETY: `chunk` is 16 readable bytes; v128 loads need no alignment.
    let v = unsafe { v128_load(chunk.as_ptr().cast::<v128>()) };
    let separators = v128_or(
        v128_or(
            u8x16_eq(v, u8x16_splat(b' ')),
            u8x16_eq(v, u8x16_splat(b'\t')),
        ),
        u8x16_eq(v, u8x16_splat(b'\r')),
    );
    let newlines = u8x16_eq(v, u8x16_splat(b'\n'));
    (u8x16_bitmask(separators), u8x16_bitmask(newlines))
}

/// Separator and newline masks of 16 bytes (SSE2, part of every x86_64).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks16(chunk: &[u8; 16]) -> (u16, u16) {
    use core::arch::x86_64::*;
    // SAFETY: SSE2 is always present on x86_64; `chunk` is 16 readable bytes and
    // `loadu` needs no alignment.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        let separators = _mm_or_si128(_mm_or_si128(eq(b' '), eq(b'\t')), eq(b'\r'));
        (
            _mm_movemask_epi8(separators) as u16,
            _mm_movemask_epi8(eq(b'\n')) as u16,
        )
    }
}

/// Separator and newline masks of 16 bytes (other targets).
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
#[inline(always)]
fn masks16(chunk: &[u8; 16]) -> (u16, u16) {
    masks16_portable(chunk)
}

/// Separator and newline masks of 16 bytes, one byte at a time (the reference).
#[cfg_attr(
    any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    ),
    allow(dead_code)
)]
#[inline(always)]
fn masks16_portable(chunk: &[u8; 16]) -> (u16, u16) {
    let (mut separators, mut newlines) = (0u16, 0u16);
    for (k, &b) in chunk.iter().enumerate() {
        separators |= u16::from(is_separator(b)) << k;
        newlines |= u16::from(b == b'\n') << k;
    }
    (separators, newlines)
}

/// Validates every field and, with `JSON`, appends `"key":value` for each to `out`, all
/// or nothing; with `VALUES`, stores each position's value in `values`. The addresses
/// and start go to `parsed` (which comes in empty). A bad field's error is its position
/// in the format (the message is made by the caller, off the hot path).
#[inline(never)]
fn write_fields<const JSON: bool, const VALUES: bool>(
    text: &[u8],
    line_len: usize,
    format: &Format,
    bounds: &[(u32, u32)],
    out: &mut Vec<u8>,
    values: &mut [u64],
    parsed: &mut Parsed,
) -> Result<(), usize> {
    // Enough for every key, every value as it stands (numbers with leading zeros only
    // get shorter), `null` for `-`, quotes, and the 32-byte blocks that key and value
    // copies may write past their end. A value that needs escaping grows `out` itself
    // and renews this reservation.
    let room = format.keys_len + line_len + 4 * bounds.len() + 2 * KEY_BYTES;
    if JSON {
        out.reserve(room);
    }
    let mut w = out.len();
    if VALUES {
        debug_assert_eq!(values.len(), bounds.len());
    }
    for (pos, (column, &(begin, end))) in format.columns.iter().zip(bounds).enumerate() {
        let (begin, end) = (begin as usize, end as usize);
        // SAFETY (every raw write below): the reservation above covers what this line
        // can write, including the overlap of the fixed-size block copies.
        if JSON {
            unsafe {
                let dst = out.as_mut_ptr().add(w);
                std::ptr::copy_nonoverlapping(column.key.as_ptr(), dst, KEY_BYTES);
                w += column.key_len as usize;
            }
        }
        let value = &text[begin..end];
        if value == b"-" {
            if JSON {
                unsafe {
                    std::ptr::copy_nonoverlapping(b"null".as_ptr(), out.as_mut_ptr().add(w), 4)
                };
                w += 4;
            }
            if VALUES {
                values[pos] = NULL;
            }
            continue;
        }
        if VALUES {
            values[pos] = (begin as u64) << 32 | end as u64;
        }
        match column.kind {
            Column::UINT => {
                let number = match value.len() {
                    1..=16 => digits16(text, begin, value.len()),
                    _ => parse_uint(value),
                }
                .ok_or(pos)?;
                if number > column.max {
                    return Err(pos);
                }
                if column.role == Column::START {
                    parsed.start = Some(number);
                }
                if VALUES {
                    values[pos] = number;
                }
                if !JSON {
                    continue;
                }
                if value.len() > 1 && value[0] == b'0' {
                    // Leading zeros: write the number itself.
                    // SAFETY: `out` is valid up to `w`, within the reservation.
                    unsafe { out.set_len(w) };
                    json::write_u64(out, number);
                    w = out.len();
                } else {
                    w = copy_value(text, begin, end, out, w, false);
                }
            }
            Column::IP => {
                // IPv4 inline; IPv6, rarer and longer to read, out of line.
                let addr = match parse_v4(value) {
                    Some(v4) => Addr::V4(v4),
                    None => Addr::V6(parse_v6(value).ok_or(pos)?),
                };
                match column.role {
                    Column::SRC => parsed.src = addr,
                    Column::DST => parsed.dst = addr,
                    _ => {}
                }
                // A valid address is digits, hex letters, dots and colons: nothing to escape.
                if JSON {
                    w = copy_value(text, begin, end, out, w, true);
                }
            }
            _ if !JSON => {}
            _ => {
                if json::needs_escape(value) {
                    // SAFETY: `out` is valid up to `w`, within the reservation.
                    unsafe { out.set_len(w) };
                    json::write_str(out, value);
                    out.reserve(room);
                    w = out.len();
                } else {
                    w = copy_value(text, begin, end, out, w, true);
                }
            }
        }
    }
    if JSON {
        // SAFETY: every byte up to `w` was written above.
        unsafe { out.set_len(w) };
    }
    Ok(())
}

/// What [`write_fields`] finds without JSON, kind by kind instead of field by field:
/// every position's range (or [`NULL`]) in one loop, then the integers, then the
/// addresses, each loop with one body and few live values. Returns false if a value is
/// bad or an integer longer than 16 digits, leaving [`write_fields`] to read the line
/// (and to say which value is bad).
#[inline(never)]
fn read_values(
    text: &[u8],
    format: &Format,
    bounds: &[(u32, u32)],
    values: &mut [u64],
    parsed: &mut Parsed,
) -> bool {
    ranges(text, bounds, values);
    for &(pos, max) in &format.uints {
        let range = values[pos as usize];
        if range == NULL {
            continue;
        }
        let (begin, end) = ((range >> 32) as usize, range as u32 as usize);
        // Longer integers (rare) go the long way: an `Option` returned from a call
        // would travel through memory on every line.
        if end - begin > 16 {
            return false;
        }
        match digits16(text, begin, end - begin) {
            Some(number) if number <= max => values[pos as usize] = number,
            _ => return false,
        }
    }
    if let Some(pos) = format.start
        && values[pos] != NULL
    {
        parsed.start = Some(values[pos]);
    }
    for &(pos, role) in &format.ips {
        let range = values[pos as usize];
        if range == NULL {
            continue;
        }
        let value = &text[(range >> 32) as usize..range as u32 as usize];
        let addr = match parse_v4(value) {
            Some(v4) => Addr::V4(v4),
            None => match parse_v6(value) {
                Some(v6) => Addr::V6(v6),
                None => return false,
            },
        };
        match role {
            Column::SRC => parsed.src = addr,
            Column::DST => parsed.dst = addr,
            _ => {}
        }
    }
    true
}

/// Each position's byte range in `text` as `begin << 32 | end`, or [`NULL`] for `-`.
#[inline(always)]
fn ranges(text: &[u8], bounds: &[(u32, u32)], values: &mut [u64]) {
    for (value, &(begin, end)) in values.iter_mut().zip(bounds) {
        *value = if end - begin == 1 && text[begin as usize] == b'-' {
            NULL
        } else {
            (begin as u64) << 32 | end as u64
        };
    }
}

/// Copies `text[begin..end]` to `out` at `w` (in quotes when `quoted`), in 16-byte
/// blocks where `text` is long enough to read them whole; returns the new end.
#[inline(always)]
fn copy_value(
    text: &[u8],
    begin: usize,
    end: usize,
    out: &mut Vec<u8>,
    mut w: usize,
    quoted: bool,
) -> usize {
    let len = end - begin;
    // SAFETY: the caller reserved room for the value, its quotes and a 32-byte overlap;
    // reads stay inside `text` (checked before the block loop).
    unsafe {
        let base = out.as_mut_ptr();
        if quoted {
            *base.add(w) = b'"';
            w += 1;
        }
        if len <= 32 && begin + 32 <= text.len() {
            // Most values: two fixed 16-byte copies, no loop (a 32-byte `memcpy` would
            // become a `memory.copy` call in wasm).
            let (src, dst) = (text.as_ptr().add(begin), base.add(w));
            std::ptr::copy_nonoverlapping(src, dst, 16);
            std::ptr::copy_nonoverlapping(src.add(16), dst.add(16), 16);
        } else {
            std::ptr::copy_nonoverlapping(text.as_ptr().add(begin), base.add(w), len);
        }
        w += len;
        if quoted {
            *base.add(w) = b'"';
            w += 1;
        }
    }
    w
}

/// The error for the value at position `pos` of `format`.
#[cold]
#[inline(never)]
fn bad_value(format: &Format, bounds: &[(u32, u32)], pos: usize, text: &[u8]) -> LineError {
    let column = &format.columns[pos];
    let (begin, end) = bounds[pos];
    let value = &text[begin as usize..end as usize];
    let field = format.name(pos);
    match column.kind {
        Column::IP => LineError::BadAddress {
            field,
            value: shorten(value),
        },
        _ => match parse_uint(value) {
            Some(_) => LineError::OutOfRange {
                field,
                value: shorten(value),
                max: column.max,
            },
            None => LineError::NotANumber {
                field,
                value: shorten(value),
            },
        },
    }
}

/// The value of the 1 to 16 ASCII digits at `text[at..at + len]`, or `None` if any byte
/// is not a digit: eight digits per step (SWAR), no loop.
#[inline(always)]
fn digits16(text: &[u8], at: usize, len: usize) -> Option<u64> {
    if len <= 8 {
        return digits8(load8(text, at, len), len);
    }
    let high = digits8(load8(text, at, len - 8), len - 8)?;
    let low = digits8(load8(text, at + len - 8, 8), 8)?;
    Some(high * 100_000_000 + low)
}

/// Up to 8 bytes of `text` from `at` in the low bytes of a little-endian word; the
/// bytes above `len` are unspecified (they are shifted out by [`digits8`]).
#[inline(always)]
fn load8(text: &[u8], at: usize, len: usize) -> u64 {
    if at + 8 <= text.len() {
        u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"))
    } else {
        let mut word = [0u8; 8];
        word[..len].copy_from_slice(&text[at..at + len]);
        u64::from_le_bytes(word)
    }
}

/// The value of the `len` (1 to 8) ASCII digits in the low bytes of `word` (first digit
/// lowest), or `None` if any of them is not a digit.
#[inline(always)]
fn digits8(word: u64, len: usize) -> Option<u64> {
    // Move the digits to the top and fill the bytes below with '0', which adds nothing.
    let pad = 8 * (8 - len) as u32;
    let fill = ONES
        .wrapping_mul(b'0' as u64)
        .checked_shr(64 - pad)
        .unwrap_or(0);
    let word = word.checked_shl(pad).unwrap_or(0) | fill;
    // Every byte in 0x30..=0x39: high nibble 3, and adding 6 keeps it 3.
    if word & 0xF0F0_F0F0_F0F0_F0F0 != 0x3030_3030_3030_3030
        || word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0 != 0x3030_3030_3030_3030
    {
        return None;
    }
    // Combine neighbours: pairs, then fours, then all eight (first digit most significant).
    let d = word - 0x3030_3030_3030_3030;
    let d = (d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d * 100 + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((d * 10_000 + (d >> 32)) & 0xFFFF_FFFF)
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
    match parse_v4(text) {
        Some(v4) => Some(Addr::V4(v4)),
        None => parse_v6(text).map(Addr::V6),
    }
}

/// An IPv6 address as a big-endian integer, read by the rules of the standard
/// library's `Ipv6Addr` parser (which accepts exactly the same texts; a test compares
/// the two), in one pass without its backtracking: up to eight groups of one to four
/// hex digits between colons, at most one `::` standing for one or more zero groups,
/// and a dotted IPv4 address (no leading zeros) in place of the last two groups.
#[inline(never)]
fn parse_v6(text: &[u8]) -> Option<u128> {
    // The longest address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
    if text.len() > 45 {
        return None;
    }
    let mut groups = [0u16; 8];
    let mut found = 0usize;
    // Where `::` stands, counted in groups before it.
    let mut gap: Option<usize> = None;
    let mut i = 0usize;
    if text.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < text.len() {
        // One group: its hex digits (up to 4), or an IPv4 address that ends the text.
        let begin = i;
        let mut group = 0u32;
        while i < text.len() && i - begin < 4 {
            let digit = match text[i] {
                b @ b'0'..=b'9' => b - b'0',
                b @ b'a'..=b'f' => b - b'a' + 10,
                b @ b'A'..=b'F' => b - b'A' + 10,
                _ => break,
            };
            group = group << 4 | u32::from(digit);
            i += 1;
        }
        if text.get(i) == Some(&b'.') {
            // The last two groups as IPv4 (decimal digits only, checked by parse_v4).
            let v4 = parse_v4(&text[begin..])?;
            if found > 6 {
                return None;
            }
            groups[found] = (v4 >> 16) as u16;
            groups[found + 1] = v4 as u16;
            found += 2;
            i = text.len();
            break;
        }
        if i == begin || found == 8 {
            return None;
        }
        groups[found] = group as u16;
        found += 1;
        if i == text.len() {
            break;
        }
        if text[i] != b':' {
            return None;
        }
        i += 1;
        if text.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(found);
            i += 1;
        } else if i == text.len() {
            // A single trailing colon.
            return None;
        }
    }
    debug_assert_eq!(i, text.len());
    let groups = match gap {
        // `::` stands for at least one group.
        Some(at) if found < 8 => {
            let mut all = [0u16; 8];
            all[..at].copy_from_slice(&groups[..at]);
            all[8 - (found - at)..].copy_from_slice(&groups[at..found]);
            all
        }
        None if found == 8 => groups,
        _ => return None,
    };
    Some(
        groups
            .iter()
            .fold(0u128, |value, &g| value << 16 | u128::from(g)),
    )
}

#[inline(always)]
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
mod tests;
