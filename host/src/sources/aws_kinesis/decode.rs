//! Decoding Kinesis records: raw flow-log text (one or many lines) or CloudWatch Logs
//! subscription envelopes (gzip JSON), inflated only up to a limit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Read;

/// How records are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// Gzip records are CloudWatch Logs envelopes; anything else is text.
    #[default]
    Auto,
    /// Every record is a CloudWatch Logs envelope.
    CloudwatchLogs,
    /// Every record is flow-log text, one or many lines.
    Text,
}

/// What one record holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Flow-log lines, one text (each line ends with `\n`; empty lines are left out),
    /// so a record of many short lines costs no allocation per line.
    Lines(String),
    /// A CloudWatch Logs control message: nothing to read.
    Control,
}

/// A CloudWatch Logs envelope, borrowing from the inflated bytes: a message without JSON
/// escapes (every flow-log line) costs no allocation of its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    #[serde(default, borrow)]
    log_events: Vec<LogEvent<'a>>,
}

/// One log event of an envelope; its other keys (`id`, `timestamp`) are skipped unread.
#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

thread_local! {
    /// The inflate buffer, reused from record to record on each reading thread.
    static INFLATED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It inflates beyond `max_record_bytes` (a decompression bomb, or a mistake).
    #[error("record inflates to more than max_record_bytes ({0} bytes)")]
    TooLarge(usize),
    /// Not gzip, not an envelope, or a broken one.
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// The `error_type` it is counted as.
    pub fn error_type(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "record_too_large",
            DecodeError::Invalid(_) => "invalid_record",
        }
    }
}

/// Decodes one record's bytes, or says why it cannot be. Gzip is inflated only up to
/// `max_bytes`: memory never follows what a record claims to hold.
pub fn decode(data: &[u8], format: RecordFormat, max_bytes: usize) -> Result<Decoded, DecodeError> {
    let invalid = |message: String| DecodeError::Invalid(message);
    let gzip = crate::util::is_gzip(data);
    if format == RecordFormat::CloudwatchLogs && !gzip {
        return Err(invalid("not a gzip CloudWatch Logs envelope".into()));
    }
    if !gzip {
        return Ok(Decoded::Lines(text_lines(data)));
    }
    INFLATED.with(|buffer| {
        let mut bytes = buffer.borrow_mut();
        bytes.clear();
        let decoded = decode_gzip(data, format, max_bytes, &mut bytes);
        if bytes.capacity() > KEEP_BUFFER_BYTES {
            *bytes = Vec::new();
        }
        decoded
    })
}

/// The inflate buffer is kept between records only up to this size, so that one large
/// record does not pin its memory on the thread.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// Inflates a gzip record into `bytes` and reads it as text or as an envelope.
fn decode_gzip(
    data: &[u8],
    format: RecordFormat,
    max_bytes: usize,
    bytes: &mut Vec<u8>,
) -> Result<Decoded, DecodeError> {
    let invalid = |message: String| DecodeError::Invalid(message);
    flate2::read::GzDecoder::new(data)
        .take(max_bytes as u64 + 1)
        .read_to_end(bytes)
        .map_err(|e| invalid(format!("cannot gunzip the record: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge(max_bytes));
    }
    if format == RecordFormat::Text {
        return Ok(Decoded::Lines(text_lines(bytes)));
    }
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("not a CloudWatch Logs envelope: {e}")))?;
    match &*envelope.message_type {
        "CONTROL_MESSAGE" => Ok(Decoded::Control),
        "DATA_MESSAGE" => {
            let size = envelope
                .log_events
                .iter()
                .map(|e| e.message.len() + 1)
                .sum();
            let mut text = String::with_capacity(size);
            for line in envelope.log_events.iter().flat_map(|e| e.message.lines()) {
                push_nonempty(&mut text, line);
            }
            Ok(Decoded::Lines(text))
        }
        other => Err(invalid(format!(
            "unknown CloudWatch Logs messageType `{other}`"
        ))),
    }
}

/// Flow-log text, blank lines left out, each line ending with a newline.
fn text_lines(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 1);
    for line in String::from_utf8_lossy(bytes).lines() {
        push_nonempty(&mut text, line);
    }
    text
}

/// Appends `line` and a newline to `text`, unless the line is blank.
fn push_nonempty(text: &mut String, line: &str) {
    if !line.trim().is_empty() {
        text.push_str(line);
        text.push('\n');
    }
}

/// Standard base64, for dead-lettered record bytes.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const MAX: usize = 16 << 20;

    #[test]
    fn decodes_text_envelopes_and_rejects_the_rest() {
        let lines = |v: &[&str]| Decoded::Lines(v.iter().map(|s| format!("{s}\n")).collect());
        assert_eq!(
            decode(b"a b\r\nc d\n\n", RecordFormat::Auto, MAX),
            Ok(lines(&["a b", "c d"]))
        );
        let data = gzip(
            br#"{"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
                 "subscriptionFilters": ["f"], "logEvents": [
                   {"id": "1", "timestamp": 1, "message": "x y"},
                   {"id": "2", "timestamp": 2, "message": "z w"}]}"#,
        );
        assert_eq!(
            decode(&data, RecordFormat::Auto, MAX),
            Ok(lines(&["x y", "z w"]))
        );
        assert_eq!(
            decode(&data, RecordFormat::CloudwatchLogs, MAX),
            Ok(lines(&["x y", "z w"]))
        );
        let control = gzip(br#"{"messageType": "CONTROL_MESSAGE", "logEvents": [{"message": "CWL CONTROL MESSAGE"}]}"#);
        assert_eq!(
            decode(&control, RecordFormat::Auto, MAX),
            Ok(Decoded::Control)
        );
        assert_eq!(
            decode(&gzip(b"p q\n"), RecordFormat::Text, MAX),
            Ok(lines(&["p q"]))
        );
        assert!(decode(b"plain", RecordFormat::CloudwatchLogs, MAX).is_err());
        assert!(decode(&[0x1f, 0x8b, 1, 2, 3], RecordFormat::Auto, MAX).is_err());
        assert!(decode(&gzip(b"not json"), RecordFormat::Auto, MAX).is_err());
        // A bomb: 64 MiB of zeros in a few KiB, refused at the limit without inflating it.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decode(&bomb, RecordFormat::Auto, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        assert_eq!(
            decode(&gzip(b"p q\n"), RecordFormat::Text, 4),
            Ok(lines(&["p q"]))
        );
    }

    #[test]
    fn base64_matches_the_standard() {
        for (data, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (&[0x1f, 0x8b, 0xff][..], "H4v/"),
        ] {
            assert_eq!(base64(data), want);
        }
    }
}
