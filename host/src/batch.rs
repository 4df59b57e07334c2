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
}

/// Batches are shared between the consumers of one output.
pub type SharedBatch = Arc<LineBatch>;
