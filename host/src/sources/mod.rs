//! Sources: where flow-log lines come from. Each runs on its own thread and sends
//! [`LineBatch`](crate::batch::LineBatch)es until its input ends or shutdown is requested.

pub mod file;
pub mod kinesis;
pub mod stdin;

use crate::batch::LineBatch;
use crate::metrics::ComponentMetrics;
use crate::topology::output::Output;
use std::sync::Arc;

/// Accumulates lines of one stream into batches of at most `batch_lines` lines.
pub struct Batcher<'a> {
    stream: Arc<str>,
    batch_lines: usize,
    text: String,
    lines: usize,
    started: bool,
    output: &'a Output,
    metrics: &'a ComponentMetrics,
}

impl<'a> Batcher<'a> {
    /// A batcher for `stream`.
    pub fn new(
        stream: &str,
        batch_lines: usize,
        output: &'a Output,
        metrics: &'a ComponentMetrics,
    ) -> Self {
        Batcher {
            stream: stream.into(),
            batch_lines,
            text: String::new(),
            lines: 0,
            started: false,
            output,
            metrics,
        }
    }

    /// Adds one raw line (with or without its `\n`); invalid UTF-8 is replaced.
    pub fn push(&mut self, raw: &[u8]) {
        crate::batch::push_line(&mut self.text, raw);
        self.lines += 1;
        self.metrics.received(1);
        if self.lines >= self.batch_lines {
            self.flush(false);
        }
    }

    /// True when lines are waiting.
    pub fn is_pending(&self) -> bool {
        self.lines > 0
    }

    /// Sends what is pending; `end` marks the last batch of the stream (sent even empty).
    pub fn flush(&mut self, end: bool) {
        if self.lines == 0 && !end {
            return;
        }
        let batch = LineBatch {
            text: std::mem::take(&mut self.text),
            lines: std::mem::take(&mut self.lines),
            stream: self.stream.clone(),
            stream_start: !std::mem::replace(&mut self.started, true),
            stream_end: end,
            acks: Vec::new(),
        };
        self.metrics.sent(batch.lines as u64);
        self.output.send(Arc::new(batch));
    }
}
