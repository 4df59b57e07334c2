//! The unit that flows between pipeline components.

use std::sync::Arc;

/// A batch of lines from one stream (a file, stdin, a shard).
#[derive(Debug, Clone)]
pub struct LineBatch {
    /// The lines, each terminated by `\n`.
    pub text: String,
    /// How many lines `text` holds.
    pub lines: usize,
    /// Identity of the stream the lines came from (file path, `stdin`, ...).
    pub stream: Arc<str>,
    /// True on the first batch of the stream: its first line may be an S3 header.
    pub stream_start: bool,
    /// True on the last batch of the stream, so per-stream state (the format set by an
    /// S3 header line) can be dropped.
    pub stream_end: bool,
    /// Acknowledgements released when every holder has dropped this batch (sources with
    /// checkpoints set them; transforms pass them on to what they emit).
    pub acks: Vec<Arc<crate::checkpoint::Ack>>,
}

/// Batches are shared between the consumers of one output.
pub type SharedBatch = Arc<LineBatch>;

/// Appends one raw line (with or without its `\n`) to batch text, replacing invalid UTF-8.
pub fn push_line(text: &mut String, raw: &[u8]) {
    text.push_str(&String::from_utf8_lossy(raw));
    if !text.ends_with('\n') {
        text.push('\n');
    }
}

/// Whether `data` starts with gzip's magic bytes.
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}
