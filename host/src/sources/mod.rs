//! Sources: where flow-log lines come from. Each runs on its own thread and sends
//! [`LineBatch`](crate::batch::LineBatch)es until its input ends or shutdown is requested.
//!
//! Memory never follows the input: a line longer than `max_line_bytes` is not kept (its
//! first [`LINE_PREFIX_BYTES`] go to the source's `<id>.dead_letter` output with its
//! length, counted as `line_too_long`), and a batch is cut at [`BATCH_MAX_BYTES`] whatever
//! its line count, so what a source holds and what waits in the channels stays bounded.

pub mod aws_kinesis;
pub mod aws_s3;
pub mod file;
pub mod stdin;

use crate::batch::LineBatch;
use crate::config::{BoxError, BuildError, Invalid};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::topology::output::Output;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

crate::config::component_enum! {
    /// A source of flow-log lines, by its `type`.
    pub enum SourceConfig: SourceKind {
        /// Files: one file, a directory (read recursively) or a glob; plain or gzip. Each
        /// file is its own stream, so an S3 header line applies to its own file only.
        File(file::Config),
        /// Standard input, read until end of file.
        Stdin(stdin::Config),
        /// A Kinesis data stream of flow logs, every shard; runs until shutdown.
        AwsKinesisStreams(aws_kinesis::Config),
        /// Flow-log objects in S3, announced by S3 event notifications on an SQS queue.
        AwsS3(aws_s3::Config),
    }
}

/// What every kind of source's config does.
pub trait SourceKind: std::fmt::Debug {
    /// Checks the settings; `key` is `sources.<id>`.
    fn validate(&self, key: &str) -> Result<(), Invalid>;
    /// Makes relative paths absolute against `base`, the pipeline file's directory.
    fn resolve_paths(&mut self, _id: &str, _base: &Path) {}
    /// Whether a restart resumes after checkpoints (what it read is not read again).
    fn resumes_from_checkpoints(&self) -> bool {
        false
    }
    /// The running part, checked as far as it can be without reading yet.
    fn build(&self, id: &str) -> Result<BuiltSource, BuildError>;
}

/// A built source: runs on its own thread until its input ends or the pipeline stops.
pub type BuiltSource = Box<dyn FnOnce(SourceContext) -> Result<(), BoxError> + Send>;

/// What a running source sends to and reports to.
pub struct SourceContext {
    /// The source's id.
    pub id: String,
    /// Where its batches go.
    pub output: Output,
    /// Where lines it cannot take go (`<id>.dead_letter`).
    pub dead_letters: Output,
    /// Its counters.
    pub metrics: Arc<ComponentMetrics>,
    /// The pipeline's fate: stop requests, failures.
    pub lifecycle: Arc<Lifecycle>,
}

impl SourceContext {
    /// Where batches of `lines` go.
    pub fn sink<'a>(&'a self, lines: &LineLimits) -> Sink<'a> {
        Sink {
            component: &self.id,
            batch_lines: lines.batch_lines,
            max_line_bytes: lines.max_line_bytes,
            output: &self.output,
            dead_letters: &self.dead_letters,
            metrics: &self.metrics,
        }
    }
}

/// How a source cuts its input into lines and batches (keys of every source).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct LineLimits {
    /// Lines per batch sent downstream (a partial batch is sent when input pauses).
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// Longest line taken, in bytes; a longer line goes to `<id>.dead_letter` with its
    /// first 1 KiB and its length (counted as `line_too_long`).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        LineLimits {
            batch_lines: default_batch_lines(),
            max_line_bytes: default_max_line_bytes(),
        }
    }
}

impl LineLimits {
    /// Both limits are at least 1.
    pub fn validate(&self, key: &str) -> Result<(), Invalid> {
        Invalid::at_least_1(key, "batch_lines", self.batch_lines as u64)?;
        Invalid::at_least_1(key, "max_line_bytes", self.max_line_bytes as u64)
    }
}

fn default_batch_lines() -> usize {
    1000
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

/// Default longest line a source takes, in bytes (`max_line_bytes`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 10;
/// How much of a line over the limit its dead letter keeps.
pub const LINE_PREFIX_BYTES: usize = 1024;
/// A batch is sent once its text reaches this size, whatever its line count.
pub const BATCH_MAX_BYTES: usize = 1 << 20;

/// Reads one line (up to and including `\n`) into `line`, keeping at most `max` bytes of
/// it; returns the line's whole length (0 at the end of input). The rest of a longer
/// line is read and thrown away, so memory stays within `max` whatever the input.
pub fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    line.clear();
    let mut total = 0;
    loop {
        let available = fill(reader)?;
        if available.is_empty() {
            return Ok(total);
        }
        let (used, done) = append_through_newline(available, line, max);
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

/// The reader's buffered bytes (empty at the end of input), reading again when a read
/// is interrupted.
fn fill(reader: &mut impl BufRead) -> std::io::Result<&[u8]> {
    loop {
        match reader.fill_buf() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    // Buffered now: this returns what the last call read.
    reader.fill_buf()
}

/// Appends to `line`, keeping it within `max` bytes, the bytes of `available` up to and
/// including its first newline (all of them when it has none); returns how many bytes
/// that covered and whether it ended with the newline.
fn append_through_newline(available: &[u8], line: &mut Vec<u8>, max: usize) -> (usize, bool) {
    let (chunk, done) = match memchr_newline(available) {
        Some(at) => (&available[..=at], true),
        None => (available, false),
    };
    let keep = chunk.len().min(max.saturating_sub(line.len()));
    line.extend_from_slice(&chunk[..keep]);
    (chunk.len(), done)
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// Reads lines to the end of input as [`read_line_bounded`] reads them one at a time,
/// giving each to `each` (its first `max` bytes at most, and its whole length) until
/// `each` returns false. Lines that lie whole in the reader's buffer are given from
/// there, without a copy; `line` holds one that spans buffers. On an error, what was
/// read of the line at hand is left in `line`.
pub fn read_lines_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
    mut each: impl FnMut(&[u8], usize) -> bool,
) -> std::io::Result<()> {
    line.clear();
    // The whole length of the line in `line` so far (0: none).
    let mut total = 0;
    loop {
        let available = fill(reader)?;
        if available.is_empty() {
            if total > 0 {
                each(line, total);
                line.clear();
            }
            return Ok(());
        }
        let mut used = 0;
        let mut go_on = true;
        if total > 0 {
            // The rest of a line begun in an earlier buffer.
            let done;
            (used, done) = append_through_newline(available, line, max);
            total += used;
            if done {
                go_on = each(line, total);
                line.clear();
                total = 0;
            }
        }
        if total == 0 {
            // Whole lines, straight from the buffer.
            while go_on {
                let Some(at) = memchr_newline(&available[used..]) else {
                    break;
                };
                let whole = &available[used..=used + at];
                go_on = each(&whole[..whole.len().min(max)], whole.len());
                used += whole.len();
            }
            if go_on && used < available.len() {
                // A line that goes on in the next buffer.
                let rest = &available[used..];
                line.extend_from_slice(&rest[..rest.len().min(max)]);
                total = rest.len();
                used = available.len();
            }
        }
        reader.consume(used);
        if !go_on {
            return Ok(());
        }
    }
}

/// The dead letter of a line over the limit: its length and first bytes.
pub fn long_line_letter(
    component: &str,
    stream: &str,
    length: usize,
    max: usize,
    prefix: &[u8],
) -> String {
    let prefix = &prefix[..prefix.len().min(LINE_PREFIX_BYTES)];
    let letter = serde_json::json!({
        "error": format!("line of {length} bytes is longer than max_line_bytes ({max})"),
        "component": component,
        "stream": stream,
        "line_prefix": String::from_utf8_lossy(prefix),
    });
    format!("{letter}\n")
}

/// Accumulates lines of one stream into batches of at most `batch_lines` lines (and
/// about [`BATCH_MAX_BYTES`]).
pub struct Batcher<'a> {
    component: &'a str,
    stream: Arc<str>,
    batch_lines: usize,
    max_line_bytes: usize,
    text: String,
    lines: usize,
    started: bool,
    output: &'a Output,
    dead_letters: &'a Output,
    metrics: &'a ComponentMetrics,
    /// Where each batch's acknowledgement comes from, when the source waits for them.
    acks: Option<BatchAcks>,
}

/// The acknowledgements of one stream's batches: batch `n` gets the ack of batch `n` of
/// `shard` in `store`, whose position is the number of lines read so far.
pub struct BatchAcks {
    /// The store that follows the batches.
    pub store: crate::sources::aws_kinesis::checkpoint::Checkpoints,
    /// The stream's name in the store.
    pub shard: String,
    /// Batches sent so far.
    batches: u64,
    /// Lines taken so far (pushed, including those over the limit).
    lines: u64,
    /// Line counts a batch must end at, ascending (see [`Batcher::ending_at`]).
    boundaries: std::collections::VecDeque<u64>,
}

impl BatchAcks {
    /// Acknowledgements of `shard`'s batches in `store`, from batch 0.
    pub fn new(
        store: crate::sources::aws_kinesis::checkpoint::Checkpoints,
        shard: String,
    ) -> BatchAcks {
        BatchAcks {
            store,
            shard,
            batches: 0,
            lines: 0,
            boundaries: Default::default(),
        }
    }
}

/// Where a source's batches go and how lines are bounded.
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    /// The source's id, for dead letters.
    pub component: &'a str,
    /// Lines per batch.
    pub batch_lines: usize,
    /// Longest line kept.
    pub max_line_bytes: usize,
    /// Where batches go.
    pub output: &'a Output,
    /// Where lines over the limit go.
    pub dead_letters: &'a Output,
    /// The source's counters.
    pub metrics: &'a ComponentMetrics,
}

impl<'a> Batcher<'a> {
    /// A batcher for `stream`.
    pub fn new(stream: &str, to: Sink<'a>) -> Self {
        Batcher {
            component: to.component,
            stream: stream.into(),
            batch_lines: to.batch_lines,
            max_line_bytes: to.max_line_bytes,
            text: String::new(),
            lines: 0,
            started: false,
            output: to.output,
            dead_letters: to.dead_letters,
            metrics: to.metrics,
            acks: None,
        }
    }

    /// Every batch sent from now on carries an acknowledgement from `acks`.
    pub fn with_acks(mut self, acks: BatchAcks) -> Self {
        self.acks = Some(acks);
        self
    }

    /// Batches end (also) where `boundaries` line counts are reached, ascending: a
    /// reading again of a stream whose earlier batches a `druid` sink published ends
    /// its batches where those did, so each is wholly published or wholly not.
    pub fn ending_at(mut self, boundaries: Vec<u64>) -> Self {
        if let Some(acks) = self.acks.as_mut() {
            acks.boundaries = boundaries.into();
        }
        self
    }

    /// Ends the batch when the lines taken reach the next boundary.
    fn end_at_boundary(&mut self) {
        let Some(acks) = self.acks.as_mut() else {
            return;
        };
        while acks.boundaries.front().is_some_and(|&b| b <= acks.lines) {
            let at = acks.boundaries.pop_front();
            if at == Some(acks.lines) {
                self.flush(false);
                return;
            }
        }
    }

    /// Batches sent so far.
    pub fn batches(&self) -> u64 {
        self.acks.as_ref().map_or(0, |a| a.batches)
    }

    /// Adds one raw line (with or without its `\n`) of `length` bytes in all, of which
    /// `raw` holds at most `max_line_bytes`; invalid UTF-8 is replaced. A longer line is
    /// dead-lettered.
    pub fn push(&mut self, raw: &[u8], length: usize) {
        self.metrics.received(1);
        if let Some(acks) = self.acks.as_mut() {
            acks.lines += 1;
        }
        let content = length - usize::from(raw.last() == Some(&b'\n') && raw.len() == length);
        if content > self.max_line_bytes {
            self.metrics.error("line_too_long", 1);
            if self.dead_letters.is_unconnected() {
                self.metrics.discarded(1);
                tracing::warn!(message = "Line over max_line_bytes dropped (no sink takes this source's dead_letter output).", component_id = %self.component, stream = %self.stream, bytes = length);
            } else {
                let letter = long_line_letter(
                    self.component,
                    &self.stream,
                    length,
                    self.max_line_bytes,
                    raw,
                );
                self.dead_letters.send(Arc::new(LineBatch {
                    columns: None,
                    permit: None,
                    text: letter,
                    lines: 1,
                    stream: self.stream.clone(),
                    stream_start: false,
                    stream_end: false,
                    acks: Vec::new(),
                }));
            }
            self.end_at_boundary();
            return;
        }
        crate::batch::push_line(&mut self.text, raw);
        self.lines += 1;
        if self.lines >= self.batch_lines || self.text.len() >= BATCH_MAX_BYTES {
            self.flush(false);
        }
        self.end_at_boundary();
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
        // The next batch's text starts with room for as much as this one and an eighth
        // more: one allocation per batch, not one per doubling (half the batches of
        // lines of one length are a little longer than the one before).
        let room =
            (self.text.len() + self.text.len() / 8).min(BATCH_MAX_BYTES + self.max_line_bytes + 1);
        let acks = match self.acks.as_mut() {
            Some(acks) => {
                let position = format!("{:020}", acks.lines);
                let ack = acks
                    .store
                    .ack(&acks.shard, acks.batches, Some(position), end);
                acks.batches += 1;
                vec![ack]
            }
            None => Vec::new(),
        };
        let batch = LineBatch {
            columns: None,
            permit: None,
            text: std::mem::replace(&mut self.text, String::with_capacity(room)),
            lines: std::mem::take(&mut self.lines),
            stream: self.stream.clone(),
            stream_start: !std::mem::replace(&mut self.started, true),
            stream_end: end,
            acks,
        };
        self.metrics.sent(batch.lines as u64);
        self.output.send(Arc::new(batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_in_bulk_are_the_lines_read_one_at_a_time() {
        let text = "a\n\nlonger line here\nxyz\n0123456789abcdef0123\nlast without newline";
        for capacity in [1, 2, 3, 7, 16, 64, 1024] {
            for max in [1, 4, 10, 100] {
                let reader = || std::io::BufReader::with_capacity(capacity, text.as_bytes());
                let mut one_by_one = Vec::new();
                let (mut r, mut line) = (reader(), Vec::new());
                loop {
                    match read_line_bounded(&mut r, &mut line, max).unwrap() {
                        0 => break,
                        length => one_by_one.push((line.clone(), length)),
                    }
                }
                let mut bulk = Vec::new();
                read_lines_bounded(&mut reader(), &mut line, max, |raw, length| {
                    bulk.push((raw.to_vec(), length));
                    true
                })
                .unwrap();
                assert_eq!(bulk, one_by_one, "buffer of {capacity}, max {max}");
                // Stopped after the second line, it gives no third.
                let mut two = 0;
                read_lines_bounded(&mut reader(), &mut line, max, |_, _| {
                    two += 1;
                    two < 2
                })
                .unwrap();
                assert_eq!(two, 2);
            }
        }
    }

    #[test]
    fn batches_also_end_at_the_boundaries_of_an_earlier_reading() {
        let (sender, receiver) = std::sync::mpsc::sync_channel(64);
        let mut output = Output::default();
        output.connect(sender);
        let (dead_letters, metrics) = (Output::default(), ComponentMetrics::default());
        let to = Sink {
            component: "s3",
            batch_lines: 5,
            max_line_bytes: 10,
            output: &output,
            dead_letters: &dead_letters,
            metrics: &metrics,
        };
        let store = crate::sources::aws_kinesis::checkpoint::Checkpoints::in_memory();
        let mut batcher = Batcher::new("o", to)
            .with_acks(BatchAcks::new(store, "o".into()))
            .ending_at(vec![3, 7, 8]);
        for n in 0..11 {
            // Line 8 is too long (dead-lettered): its boundary ends nothing by itself.
            let line = if n == 7 {
                "x".repeat(20)
            } else {
                format!("l{n}")
            };
            batcher.push(line.as_bytes(), line.len());
        }
        batcher.flush(true);
        drop(output);
        let batches: Vec<(usize, String)> = receiver
            .iter()
            .map(|b| {
                let position = b.acks[0].sequence().unwrap_or_default().to_string();
                (b.lines, position.trim_start_matches('0').to_string())
            })
            .collect();
        let want = [(3, "3"), (4, "7"), (3, "11")];
        let want: Vec<(usize, String)> = want.iter().map(|(n, p)| (*n, p.to_string())).collect();
        assert_eq!(batches, want);
    }

    #[test]
    fn bounded_reads_keep_at_most_the_limit() {
        let input = format!("short\n{}\nlast", "x".repeat(100_000));
        let mut reader = std::io::BufReader::with_capacity(64, input.as_bytes());
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut reader, &mut line, 10).unwrap(), 6);
        assert_eq!(line, b"short\n");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 10).unwrap(),
            100_001
        );
        assert_eq!(line, b"xxxxxxxxxx");
        assert_eq!(read_line_bounded(&mut reader, &mut line, 10).unwrap(), 4);
        assert_eq!(line, b"last");
        assert_eq!(read_line_bounded(&mut reader, &mut line, 10).unwrap(), 0);
    }
}
