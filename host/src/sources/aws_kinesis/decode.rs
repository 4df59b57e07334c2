//! Decoding Kinesis records: raw flow-log text (one or many lines) or CloudWatch Logs
//! subscription envelopes (gzip JSON), inflated only up to a limit.

use super::envelope::{MessageType, push_nonempty, read_envelope};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Flow-log lines, appended to the caller's text (each line ends with `\n`; empty
    /// lines are left out), so a record of many short lines costs no allocation per line.
    Lines,
    /// A CloudWatch Logs control message: nothing to read (nothing was appended).
    Control,
}

/// Inflating state kept on each reading thread from record to record.
struct Inflater {
    /// libdeflate's decompressor, made on first use.
    whole: Option<libdeflater::Decompressor>,
    /// The inflated bytes; its length only grows (while within [`KEEP_BUFFER_BYTES`]),
    /// so a record costs neither an allocation nor clearing.
    bytes: Vec<u8>,
}

thread_local! {
    static INFLATER: std::cell::RefCell<Inflater> =
        const { std::cell::RefCell::new(Inflater { whole: None, bytes: Vec::new() }) };
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

/// Decodes one record's bytes, appending its lines to `text`, or says why it cannot be
/// (then `text` is left as it was). Gzip is inflated only up to `max_bytes`: memory
/// never follows what a record claims to hold.
pub fn decode(
    data: &[u8],
    format: RecordFormat,
    max_bytes: usize,
    text: &mut String,
) -> Result<Decoded, DecodeError> {
    let gzip = crate::util::is_gzip(data);
    if format == RecordFormat::CloudwatchLogs && !gzip {
        return Err(DecodeError::Invalid(
            "not a gzip CloudWatch Logs envelope".into(),
        ));
    }
    if !gzip {
        push_text_lines(text, data);
        return Ok(Decoded::Lines);
    }
    INFLATER.with(|inflater| {
        let mut inflater = inflater.borrow_mut();
        let decoded = inflate(data, max_bytes, &mut inflater).and_then(|bytes| {
            if format == RecordFormat::Text {
                push_text_lines(text, bytes);
                return Ok(Decoded::Lines);
            }
            match read_envelope(bytes, text) {
                Ok(MessageType::Data) => Ok(Decoded::Lines),
                Ok(MessageType::Control) => Ok(Decoded::Control),
                Err(e) => Err(DecodeError::Invalid(format!(
                    "not a CloudWatch Logs envelope: {e}"
                ))),
            }
        });
        if inflater.bytes.capacity() > KEEP_BUFFER_BYTES {
            inflater.bytes = Vec::new();
        }
        decoded
    })
}

/// The inflate buffer is kept between records only up to this size, so that one large
/// record does not pin its memory on the thread.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// The most bytes DEFLATE can inflate one byte to (a run of 258-byte matches in 2 bits
/// each), with room for a header: a gzip trailer claiming more is not believed.
const MAX_INFLATE_RATIO: usize = 1032;

/// Inflates a gzip record, at most `max_bytes` of it. One gzip member whose trailer
/// gives its size (every record CloudWatch Logs writes) is inflated whole by
/// libdeflate into a buffer of that size; anything else (a trailer that does not
/// match, several members, a broken stream) is read by the streaming decoder, which
/// stops at the limit and says what is wrong.
fn inflate<'b>(
    data: &[u8],
    max_bytes: usize,
    inflater: &'b mut Inflater,
) -> Result<&'b [u8], DecodeError> {
    let Inflater { whole, bytes } = inflater;
    let claimed = data
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(data[at..].try_into().expect("four bytes")) as usize)
        .filter(|&size| size <= max_bytes && size <= data.len().saturating_mul(MAX_INFLATE_RATIO));
    if let Some(size) = claimed {
        if bytes.len() < size {
            bytes.resize(size, 0);
        }
        let whole = whole.get_or_insert_with(libdeflater::Decompressor::new);
        if let Ok(inflated) = whole.gzip_decompress(data, &mut bytes[..size]) {
            return Ok(&bytes[..inflated]);
        }
    }
    bytes.clear();
    flate2::read::GzDecoder::new(data)
        .take(max_bytes as u64 + 1)
        .read_to_end(bytes)
        .map_err(|e| DecodeError::Invalid(format!("cannot gunzip the record: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge(max_bytes));
    }
    Ok(bytes)
}

/// Appends flow-log text to `text`, blank lines left out, each line ending with a newline.
fn push_text_lines(text: &mut String, bytes: &[u8]) {
    text.reserve(bytes.len() + 1);
    for line in String::from_utf8_lossy(bytes).lines() {
        push_nonempty(text, line);
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

    /// What `decode` appends to a text that holds a line already.
    fn decoded(
        data: &[u8],
        format: RecordFormat,
        max: usize,
    ) -> Result<(Decoded, String), DecodeError> {
        let mut text = String::from("before\n");
        let decoded = decode(data, format, max, &mut text);
        let appended = text
            .strip_prefix("before\n")
            .expect("the text kept")
            .to_string();
        if decoded.is_err() {
            assert_eq!(appended, "", "nothing appended on an error");
        }
        decoded.map(|d| (d, appended))
    }

    fn lines(v: &[&str]) -> Result<(Decoded, String), DecodeError> {
        Ok((Decoded::Lines, v.iter().map(|s| format!("{s}\n")).collect()))
    }

    #[test]
    fn decodes_text_envelopes_and_rejects_the_rest() {
        assert_eq!(
            decoded(b"a b\r\nc d\n\n", RecordFormat::Auto, MAX),
            lines(&["a b", "c d"])
        );
        let data = gzip(
            br#"{"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
                 "subscriptionFilters": ["f"], "logEvents": [
                   {"id": "1", "timestamp": 1, "message": "x y"},
                   {"id": "2", "timestamp": 2, "message": "z w"}]}"#,
        );
        assert_eq!(
            decoded(&data, RecordFormat::Auto, MAX),
            lines(&["x y", "z w"])
        );
        assert_eq!(
            decoded(&data, RecordFormat::CloudwatchLogs, MAX),
            lines(&["x y", "z w"])
        );
        let control = gzip(br#"{"messageType": "CONTROL_MESSAGE", "logEvents": [{"message": "CWL CONTROL MESSAGE"}]}"#);
        assert_eq!(
            decoded(&control, RecordFormat::Auto, MAX),
            Ok((Decoded::Control, String::new()))
        );
        assert_eq!(
            decoded(&gzip(b"p q\n"), RecordFormat::Text, MAX),
            lines(&["p q"])
        );
        assert!(decoded(b"plain", RecordFormat::CloudwatchLogs, MAX).is_err());
        assert!(decoded(&[0x1f, 0x8b, 1, 2, 3], RecordFormat::Auto, MAX).is_err());
        assert_eq!(
            decoded(&gzip(b"not json"), RecordFormat::Auto, MAX),
            Err(DecodeError::Invalid(
                "not a CloudWatch Logs envelope: expected an object at byte 0".into()
            ))
        );
        assert_eq!(
            decoded(&gzip(b"p q\n"), RecordFormat::Text, 4),
            lines(&["p q"])
        );
    }

    #[test]
    fn bombs_and_lying_trailers_are_read_no_further_than_the_limit() {
        // A bomb: 64 MiB of zeros in a few KiB, refused at the limit without inflating it.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decoded(&bomb, RecordFormat::Auto, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        let text = b"p q\nr s\n".repeat(100);
        let good = gzip(&text);
        let expected = || Ok((Decoded::Lines, String::from_utf8(text.clone()).unwrap()));
        // The trailer's size is what the whole-record path trusts; one that says less or
        // more than the stream holds is a broken record, whichever path reads it.
        for size in [0u32, 10, text.len() as u32 + 1, u32::MAX] {
            let mut lying = good.clone();
            let at = lying.len() - 4;
            lying[at..].copy_from_slice(&size.to_le_bytes());
            let error = decoded(&lying, RecordFormat::Text, MAX).unwrap_err();
            assert!(
                matches!(&error, DecodeError::Invalid(m) if m.starts_with("cannot gunzip the record")),
                "{size}: {error}"
            );
        }
        // At the limit exactly, and one byte under it.
        assert_eq!(decoded(&good, RecordFormat::Text, text.len()), expected());
        assert_eq!(
            decoded(&good, RecordFormat::Text, text.len() - 1),
            Err(DecodeError::TooLarge(text.len() - 1))
        );
        // A second member is not read (as before); garbage after the first is ignored.
        let mut two = good.clone();
        two.extend_from_slice(&gzip(b"t u\n"));
        assert_eq!(decoded(&two, RecordFormat::Text, MAX), expected());
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(decoded(&trailing, RecordFormat::Text, MAX), expected());
        // A broken stream with a believable trailer is refused, and the next record reads.
        let mut broken = good.clone();
        broken[12] ^= 0xff;
        assert!(decoded(&broken, RecordFormat::Text, MAX).is_err());
        assert_eq!(decoded(&good, RecordFormat::Text, MAX), expected());
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
