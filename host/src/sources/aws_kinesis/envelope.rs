//! Reading a CloudWatch Logs subscription envelope without building it: a strict JSON
//! scanner that appends each log event's message lines to the caller's text and
//! skips everything else (`owner`, `logGroup`, each event's `id`, `timestamp`, ...).
//!
//! It accepts exactly what a JSON parser accepts (strings with their escapes, numbers,
//! nesting up to a limit, nothing after the value) and asks for what the envelope
//! needs: an object with a string `messageType` and, for data, an array `logEvents` of
//! objects each with a string `message`. A message without escapes (every flow-log
//! line CloudWatch Logs sends) is copied once, straight into the text.

/// What an envelope says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// `DATA_MESSAGE`: its messages' lines were appended.
    Data,
    /// `CONTROL_MESSAGE`: nothing to read (nothing was appended).
    Control,
}

/// Why bytes are not a CloudWatch Logs envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {at}")]
pub struct EnvelopeError {
    /// What is wrong.
    pub message: String,
    /// Where in the inflated bytes it was found.
    pub at: usize,
}

/// Nesting deeper than this is refused (as JSON parsers do), so that a hostile record
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Reads the envelope in `json` and appends its log events' lines to `out`: each line of
/// each message (split as `str::lines` does), blank lines left out, each ending with
/// `\n`. Nothing is appended for a control message, or when the bytes are not an
/// envelope (`out` is left as it was).
pub fn read_envelope(json: &[u8], out: &mut String) -> Result<MessageType, EnvelopeError> {
    let start = out.len();
    let read = std::str::from_utf8(json)
        .map_err(|e| EnvelopeError {
            message: "invalid UTF-8".into(),
            at: e.valid_up_to(),
        })
        .and_then(|text| Scanner::new(text).envelope(out));
    match read {
        Ok(MessageType::Data) => {}
        Ok(MessageType::Control) | Err(_) => out.truncate(start),
    }
    read
}

/// A position in the envelope's text.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

/// A string value as it stands in the text: its contents between the quotes, and
/// whether they hold escapes (then [`Scanner::unescape`] gives the value).
struct Raw<'a> {
    contents: &'a str,
    escaped: bool,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner { text, at: 0 }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, EnvelopeError> {
        Err(EnvelopeError {
            message: message.into(),
            at: self.at,
        })
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not taken.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// Takes `byte` after whitespace, or says what was expected.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), EnvelopeError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.error(format!("expected {what}"))
        }
    }

    /// After an object's or array's first member: whether another follows (a comma was
    /// taken) or the container ended (`close` was taken).
    fn more(&mut self, close: u8) -> Result<bool, EnvelopeError> {
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.at += 1;
                Ok(false)
            }
            _ => self.error(format!("expected `,` or `{}`", close as char)),
        }
    }

    /// Takes `open` and tells whether the container is empty (its `close` taken too).
    fn open(&mut self, open: u8, close: u8, what: &str) -> Result<bool, EnvelopeError> {
        self.expect(open, what)?;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// The envelope: one object, then nothing but whitespace.
    fn envelope(&mut self, out: &mut String) -> Result<MessageType, EnvelopeError> {
        let (mut kind, mut events) = (None, false);
        if !self.open(b'{', b'}', "an object")? {
            loop {
                let key = self.string()?;
                self.expect(b':', "`:`")?;
                match &*self.unescape(&key)? {
                    "messageType" => {
                        if kind.is_some() {
                            return self.error("duplicate field `messageType`");
                        }
                        let value = self.string()?;
                        kind = Some(match &*self.unescape(&value)? {
                            "DATA_MESSAGE" => MessageType::Data,
                            "CONTROL_MESSAGE" => MessageType::Control,
                            other => {
                                return self.error(format!(
                                    "unknown CloudWatch Logs messageType `{other}`"
                                ));
                            }
                        });
                    }
                    "logEvents" => {
                        if events {
                            return self.error("duplicate field `logEvents`");
                        }
                        events = true;
                        self.log_events(out)?;
                    }
                    _ => self.skip_value(1)?,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        if self.peek().is_some() {
            return self.error("trailing characters");
        }
        match kind {
            Some(kind) => Ok(kind),
            None => self.error("missing field `messageType`"),
        }
    }

    /// `logEvents`: an array of objects, each with a string `message`.
    fn log_events(&mut self, out: &mut String) -> Result<(), EnvelopeError> {
        if self.open(b'[', b']', "`logEvents` as an array")? {
            return Ok(());
        }
        loop {
            if self.standard_event(out) {
                if !self.more(b']')? {
                    return Ok(());
                }
                continue;
            }
            let mut message = false;
            if !self.open(b'{', b'}', "a log event object")? {
                loop {
                    let key = self.string()?;
                    self.expect(b':', "`:`")?;
                    if self.unescape(&key)? == "message" {
                        if message {
                            return self.error("duplicate field `message`");
                        }
                        message = true;
                        let value = self.string()?;
                        self.push_lines(&value, out)?;
                    } else {
                        self.skip_value(2)?;
                    }
                    if !self.more(b'}')? {
                        break;
                    }
                }
            }
            if !message {
                return self.error("missing field `message`");
            }
            if !self.more(b']')? {
                return Ok(());
            }
        }
    }

    /// A log event as CloudWatch Logs writes it, `{"id":"…","timestamp":…,"message":"…"}`
    /// with no whitespace and nothing to unescape, read in one go (its message
    /// appended to `out`, unless blank). False, with nothing taken, for anything else,
    /// which the general path then reads (and refuses, if it must).
    fn standard_event(&mut self, out: &mut String) -> bool {
        let bytes = self.bytes();
        let mut at = self.at;
        let literal = |at: &mut usize, text: &[u8]| {
            let found = bytes[*at..].starts_with(text);
            if found {
                *at += text.len();
            }
            found
        };
        // A string's contents without escapes or control characters: where they end,
        // and `at` past the closing quote.
        let plain = |at: &mut usize| {
            let end = *at + crate::util::json_special_offset(&bytes[*at..]);
            let closed = bytes.get(end) == Some(&b'"');
            if closed {
                *at = end + 1;
            }
            closed.then_some(end)
        };
        if !literal(&mut at, br#"{"id":""#)
            || plain(&mut at).is_none()
            || !literal(&mut at, br#","timestamp":"#)
        {
            return false;
        }
        // An integer as JSON writes it.
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                at += 1;
                while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
            }
            _ => return false,
        }
        if !literal(&mut at, br#","message":""#) {
            return false;
        }
        let start = at;
        let Some(end) = plain(&mut at) else {
            return false;
        };
        if !literal(&mut at, b"}") {
            return false;
        }
        // No escapes: no newline either, so the message is one line.
        push_nonempty(out, &self.text[start..end]);
        self.at = at;
        true
    }

    /// Appends a message's lines to `out`, blank ones left out.
    fn push_lines(&self, value: &Raw<'_>, out: &mut String) -> Result<(), EnvelopeError> {
        if !value.escaped {
            // No escapes: no newline or carriage return either (JSON has none raw in a
            // string), so the message is one line.
            push_nonempty(out, value.contents);
            return Ok(());
        }
        for line in self.unescape(value)?.lines() {
            push_nonempty(out, line);
        }
        Ok(())
    }

    /// A string: its contents, checked (no raw control characters, valid escapes).
    fn string(&mut self) -> Result<Raw<'a>, EnvelopeError> {
        self.expect(b'"', "a string")?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += crate::util::json_special_offset(&self.bytes()[self.at..]);
            match self.bytes().get(self.at) {
                Some(b'"') => {
                    let contents = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Raw { contents, escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    match self.bytes().get(self.at) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            self.at += 1;
                            self.hex4()?;
                        }
                        _ => return self.error("invalid escape"),
                    }
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    /// Four hex digits, taken; their value.
    fn hex4(&mut self) -> Result<u32, EnvelopeError> {
        let digits = self.bytes().get(self.at..self.at + 4);
        let value = digits
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match value {
            Some(value) => {
                self.at += 4;
                Ok(value)
            }
            None => self.error("invalid `\\u` escape"),
        }
    }

    /// The value of a string (borrowed when it has no escapes).
    #[inline(always)]
    fn unescape(&self, raw: &Raw<'a>) -> Result<std::borrow::Cow<'a, str>, EnvelopeError> {
        if !raw.escaped {
            return Ok(raw.contents.into());
        }
        self.unescape_escaped(raw).map(Into::into)
    }

    /// The value of a string with escapes.
    #[inline(never)]
    fn unescape_escaped(&self, raw: &Raw<'a>) -> Result<String, EnvelopeError> {
        let mut value = String::with_capacity(raw.contents.len());
        // The contents were checked by `string`; only surrogates are left to check.
        let base = raw.contents.as_ptr() as usize - self.text.as_ptr() as usize;
        let mut inner = Scanner {
            text: self.text,
            at: base,
        };
        let end = base + raw.contents.len();
        while inner.at < end {
            let next =
                memchr::memchr(b'\\', &inner.bytes()[inner.at..end]).map_or(end, |i| inner.at + i);
            value.push_str(&inner.text[inner.at..next]);
            if next == end {
                break;
            }
            inner.at = next + 2;
            let c = match inner.bytes()[next + 1] {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => inner.code_point()?,
                other => other as char,
            };
            value.push(c);
        }
        Ok(value)
    }

    /// The character of a `\u` escape (its `\u` taken), a surrogate pair whole.
    fn code_point(&mut self) -> Result<char, EnvelopeError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.bytes().get(self.at..self.at + 2) != Some(b"\\u") {
                    return self.error("lone leading surrogate in hex escape");
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return self.error("lone leading surrogate in hex escape");
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return self.error("lone trailing surrogate in hex escape"),
            _ => first,
        };
        char::from_u32(code).map_or_else(|| self.error("invalid `\\u` escape"), Ok)
    }

    /// Any value, checked and passed over; `depth` is the nesting it stands at.
    fn skip_value(&mut self, depth: usize) -> Result<(), EnvelopeError> {
        if depth > MAX_DEPTH {
            return self.error("recursion limit exceeded");
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => {
                if self.open(b'{', b'}', "an object")? {
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.expect(b':', "`:`")?;
                    self.skip_value(depth + 1)?;
                    if !self.more(b'}')? {
                        return Ok(());
                    }
                }
            }
            Some(b'[') => {
                if self.open(b'[', b']', "an array")? {
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if !self.more(b']')? {
                        return Ok(());
                    }
                }
            }
            Some(b't') => self.word("true"),
            Some(b'f') => self.word("false"),
            Some(b'n') => self.word("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.error("expected a value"),
        }
    }

    fn word(&mut self, word: &str) -> Result<(), EnvelopeError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    /// A number as JSON writes it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), EnvelopeError> {
        if self.bytes().get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes().get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.error("invalid number"),
        }
        if self.bytes().get(self.at) == Some(&b'.') {
            self.at += 1;
            if !self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
                return self.error("invalid number");
            }
            self.digits();
        }
        if matches!(self.bytes().get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes().get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
                return self.error("invalid number");
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }
}

/// Appends `line` and a newline to `text`, unless the line is blank.
pub fn push_nonempty(text: &mut String, line: &str) {
    if !line.trim().is_empty() {
        text.push_str(line);
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<(MessageType, String), String> {
        let mut out = String::from("kept\n");
        let read = read_envelope(json.as_bytes(), &mut out);
        match read {
            Ok(kind) => Ok((kind, out["kept\n".len()..].to_string())),
            Err(e) => {
                assert_eq!(out, "kept\n", "nothing appended on error");
                Err(e.message)
            }
        }
    }

    #[test]
    fn reads_data_and_control_messages() {
        let data = r#"{"owner":"1","messageType":"DATA_MESSAGE","logGroup":"g","subscriptionFilters":["f"],
            "logEvents":[{"id":"1","timestamp":1700000000000,"message":"2 a b"},
                         {"message":"  ","id":"2"},{"message":""},
                         {"extractedFields":{"x":[1,-2.5e3,true,false,null,{}]},"message":"line \"q\" \u00e9\ud83d\ude00"},
                         {"message":"one\ntwo\r\n\nthree\\"}]} "#;
        assert_eq!(
            read(data),
            Ok((
                MessageType::Data,
                "2 a b\nline \"q\" é😀\none\ntwo\nthree\\\n".into()
            ))
        );
        let control = r#"{"messageType":"CONTROL_MESSAGE","logEvents":[{"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;
        assert_eq!(read(control), Ok((MessageType::Control, String::new())));
        assert_eq!(
            read(r#"{"logEvents":[],"messageType":"DATA_MESSAGE"}"#),
            Ok((MessageType::Data, String::new()))
        );
        assert_eq!(
            read(r#"{"messageType":"DATA_MESSAGE"}"#),
            Ok((MessageType::Data, String::new()))
        );
        // An escaped value of messageType is read as its value.
        assert_eq!(
            read(r#"{"messageType":"DATA\u005fMESSAGE","logEvents":[{"message":"x"}]}"#),
            Ok((MessageType::Data, "x\n".into()))
        );
    }

    #[test]
    fn refuses_what_json_or_the_envelope_does_not_allow() {
        for (json, why) in [
            ("", "expected an object"),
            ("[]", "expected an object"),
            (r#"{"messageType":"DATA_MESSAGE"} x"#, "trailing characters"),
            (r#"{"messageType":"DATA_MESSAGE",}"#, "expected a string"),
            (
                r#"{"messageType":"OTHER"}"#,
                "unknown CloudWatch Logs messageType `OTHER`",
            ),
            (r#"{"logEvents":[]}"#, "missing field `messageType`"),
            (r#"{"messageType":1}"#, "expected a string"),
            (
                r#"{"messageType":"DATA_MESSAGE","messageType":"DATA_MESSAGE"}"#,
                "duplicate field `messageType`",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":{}}"#,
                "expected `logEvents` as an array",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1"}]}"#,
                "missing field `message`",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":2}]}"#,
                "expected a string",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"a","message":"b"}]}"#,
                "duplicate field `message`",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"a"},]}"#,
                "expected a log event object",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"a"}"#,
                "expected `,` or `]`",
            ),
            (
                "{\"messageType\":\"DATA_MESSAGE\",\"logEvents\":[{\"message\":\"a\tb\"}]}",
                "control character in a string",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"a\x"}]}"#,
                "invalid escape",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"\u12"}]}"#,
                "invalid `\\u` escape",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"\ud83d"}]}"#,
                "lone leading surrogate in hex escape",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"\ude00"}]}"#,
                "lone trailing surrogate in hex escape",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"a"#,
                "unterminated string",
            ),
            (
                r#"{"messageType":"DATA_MESSAGE","x":01}"#,
                "expected `,` or `}`",
            ),
            (r#"{"messageType":"DATA_MESSAGE","x":-}"#, "invalid number"),
            (r#"{"messageType":"DATA_MESSAGE","x":1.}"#, "invalid number"),
            (r#"{"messageType":"DATA_MESSAGE","x":1e}"#, "invalid number"),
            (
                r#"{"messageType":"DATA_MESSAGE","x":tru}"#,
                "expected a value",
            ),
            (r#"{"messageType":"DATA_MESSAGE","x":}"#, "expected a value"),
        ] {
            assert_eq!(read(json), Err(why.to_string()), "{json}");
        }
        let deep = format!(
            r#"{{"messageType":"DATA_MESSAGE","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(read(&deep), Err("recursion limit exceeded".into()));
        let shallow = format!(
            r#"{{"messageType":"DATA_MESSAGE","x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(read(&shallow), Ok((MessageType::Data, String::new())));
        let mut out = String::new();
        let error = read_envelope(b"{\"messageType\":\"\xff\"}", &mut out).unwrap_err();
        assert_eq!((error.message.as_str(), error.at), ("invalid UTF-8", 16));
    }

    /// What serde_json makes of `json` read as an envelope (the reading the scanner
    /// replaces): the kind and lines, or that it is not one.
    fn serde_reading(json: &[u8]) -> Option<(MessageType, String)> {
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope<'a> {
            #[serde(borrow)]
            message_type: Cow<'a, str>,
            #[serde(default, borrow)]
            log_events: Vec<LogEvent<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct LogEvent<'a> {
            #[serde(borrow)]
            message: Cow<'a, str>,
        }
        // serde_json lets invalid UTF-8 through in keys it ignores; the scanner refuses
        // it anywhere (JSON text is UTF-8).
        std::str::from_utf8(json).ok()?;
        let envelope: Envelope = serde_json::from_slice(json).ok()?;
        let kind = match &*envelope.message_type {
            "DATA_MESSAGE" => MessageType::Data,
            "CONTROL_MESSAGE" => return Some((MessageType::Control, String::new())),
            _ => return None,
        };
        let mut text = String::new();
        for line in envelope.log_events.iter().flat_map(|e| e.message.lines()) {
            push_nonempty(&mut text, line);
        }
        Some((kind, text))
    }

    /// Envelopes with a few random edits (bytes inserted, deleted, replaced, the end
    /// cut): the scanner accepts exactly what serde_json accepts, and reads the same
    /// lines from it.
    #[test]
    fn agrees_with_serde_json_on_mutated_envelopes() {
        let seeds = [
            r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"3","timestamp":1700000000000,"message":"2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 ACCEPT OK"},{"id":"4","timestamp":-1.5e3,"message":"a\tb \"q\" \u00e9\ud83d\ude00 \\ / \n next"}]}"#,
            r#" { "logEvents" : [ { "message" : "x" , "extractedFields" : { "a" : [ 1 , true , false , null , { } , [ ] ] } } ] , "messageType" : "DATA_MESSAGE" } "#,
            r#"{"messageType":"CONTROL_MESSAGE","logEvents":[{"id":"","timestamp":0,"message":"CWL CONTROL MESSAGE"}]}"#,
            // As CloudWatch Logs writes events (the scanner's quick path).
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"31","timestamp":1700000000000,"message":"2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 ACCEPT OK"},{"id":"32","timestamp":0,"message":"  "},{"id":"","timestamp":17,"message":""},{"id":"33","timestamp":9,"message":"x"}]}"#,
        ];
        let alphabet: &[u8] =
            b"{}[]\",:\\ \t\n0123456789-+.eEuabfnrt/_DATMESGlogvnsy\xc3\xa9\xff\x01";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..6000 {
            let mut json = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(json.len() + 1);
                match next(4) {
                    0 => json.insert(at, alphabet[next(alphabet.len())]),
                    1 if at < json.len() => {
                        json.remove(at);
                    }
                    2 if at < json.len() => json[at] = alphabet[next(alphabet.len())],
                    3 => json.truncate(at),
                    _ => {}
                }
            }
            let mut out = String::new();
            let scanned = read_envelope(&json, &mut out).ok().map(|kind| (kind, out));
            assert_eq!(
                scanned,
                serde_reading(&json),
                "on {:?}",
                String::from_utf8_lossy(&json)
            );
            if scanned.is_some() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both kinds of input were tried.
        assert!(
            accepted > 500 && refused > 500,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// Events a byte or two away from the layout CloudWatch Logs writes (which the
    /// scanner reads on a quick path): the scanner and serde_json agree on each.
    #[test]
    fn agrees_with_serde_json_next_to_the_quick_path() {
        let events = [
            r#"{"id":"1","timestamp":17,"message":"a b"}"#,
            r#"{"id":"1","timestamp":017,"message":"a b"}"#,
            r#"{"id":"1","timestamp":0,"message":"a b"}"#,
            r#"{"id":"1","timestamp":-1,"message":"a b"}"#,
            r#"{"id":"1","timestamp":1.5,"message":"a b"}"#,
            r#"{"id":"1","timestamp":1e3,"message":"a b"}"#,
            r#"{"id":"1","timestamp":,"message":"a b"}"#,
            r#"{"id":"1","timestamp":17 ,"message":"a b"}"#,
            r#"{ "id":"1","timestamp":17,"message":"a b"}"#,
            r#"{"id":"1\"","timestamp":17,"message":"a b"}"#,
            r#"{"id":"1","timestamp":17,"message":"a\nb"}"#,
            "{\"id\":\"1\",\"timestamp\":17,\"message\":\"a\tb\"}",
            "{\"id\":\"1\u{1}\",\"timestamp\":17,\"message\":\"a b\"}",
            r#"{"id":"1","timestamp":17,"message":"a b","message":"c"}"#,
            r#"{"id":"1","timestamp":17,"message":"a b","x":1}"#,
            r#"{"id":"1","timestamp":17,"message":"a b""#,
            r#"{"id":"1","timestamp":17,"message":"a b"]"#,
            r#"{"id":"1","timestamp":17,"message":1}"#,
            r#"{"id":1,"timestamp":17,"message":"a b"}"#,
            r#"{"id":"1","timestamp":17,"message":"a b"},"#,
        ];
        for event in events {
            for json in [
                format!(r#"{{"messageType":"DATA_MESSAGE","logEvents":[{event}]}}"#),
                format!(r#"{{"messageType":"DATA_MESSAGE","logEvents":[{event},{event}]}}"#),
            ] {
                let mut out = String::new();
                let scanned = read_envelope(json.as_bytes(), &mut out)
                    .ok()
                    .map(|kind| (kind, out));
                assert_eq!(scanned, serde_reading(json.as_bytes()), "on {json}");
            }
        }
    }

    /// The scanner and serde_json agree on envelopes serde_json writes, escapes and all.
    #[test]
    fn agrees_with_serde_json_on_what_it_writes() {
        let messages = [
            "2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 ACCEPT OK",
            "tab\there, quote \" backslash \\ slash / bell \u{7} nul \u{0}",
            "lines\nin\r\none\n\n",
            "é€😀",
            "",
        ];
        let events: Vec<_> = messages
            .iter()
            .map(|m| serde_json::json!({"id": "1", "timestamp": 1, "message": m}))
            .collect();
        let json =
            serde_json::json!({"messageType": "DATA_MESSAGE", "logEvents": events}).to_string();
        let mut expected = String::new();
        for line in messages.iter().flat_map(|m| m.lines()) {
            push_nonempty(&mut expected, line);
        }
        assert_eq!(read(&json), Ok((MessageType::Data, expected)));
    }
}
