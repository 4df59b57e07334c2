//! The fast path for enriched JSON lines: the members of a flat object read in place,
//! without allocating; anything else goes to a full parser.

/// The members of a flat JSON object (no nested objects or arrays), as raw key text
/// (without quotes) and raw value text, given to `member`; `None` when the line is not
/// such an object (then the caller parses it fully). Enriched flows are flat objects, so
/// this is the fast path: nothing is allocated and each byte is looked at once.
pub(super) fn flat_members<'a>(
    line: &'a str,
    mut member: impl FnMut(&'a str, &'a str),
) -> Option<()> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // The end of the string that starts at `at` (a quote), just past its closing quote.
    // Only plain strings take the fast path: a control byte or a `\u` escape sends the
    // line to the full parser (which checks it), and any other escape must be valid.
    let string_end = |mut at: usize| -> Option<usize> {
        at += 1;
        while at < bytes.len() {
            match bytes[at] {
                b'"' => return Some(at + 1),
                b'\\' => match bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    _ => return None,
                },
                0..0x20 => return None,
                _ => at += 1,
            }
        }
        None
    };
    skip(&mut i);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    skip(&mut i);
    if bytes.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        skip(&mut i);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &line[i + 1..key_end - 1];
        if key.as_bytes().contains(&b'\\') {
            // An escaped key is compared decoded by the full parser.
            return None;
        }
        i = key_end;
        skip(&mut i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip(&mut i);
        let value_start = i;
        match bytes.get(i)? {
            b'"' => i = string_end(i)?,
            b'{' | b'[' => return None,
            _ => {
                while i < bytes.len() && !matches!(bytes[i], b',' | b'}') {
                    i += 1;
                }
            }
        }
        let value = line[value_start..i].trim_end();
        if bytes[value_start] != b'"' && !is_scalar(value) {
            return None;
        }
        member(key, value);
        skip(&mut i);
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => {
                i += 1;
                skip(&mut i);
                return (i == bytes.len()).then_some(());
            }
            _ => return None,
        }
    }
}

/// Whether `text` is a JSON number, `true`, `false` or `null`.
fn is_scalar(text: &str) -> bool {
    matches!(text, "true" | "false" | "null") || is_json_number(text.as_bytes())
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &[u8]) -> bool {
    let mut i = usize::from(text.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while text.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == text.len()
}
