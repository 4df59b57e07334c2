//! `flowenrich enrich`: flow-log lines on stdin, enriched JSON on stdout, rejected lines
//! on stderr as `{"error": ..., "line": ...}`.

use crate::metadata::Table;
use crate::runtime::{CallError, RuntimeError, Worker};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;

/// Counts of one `enrich` run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EnrichStats {
    /// Lines read (headers included).
    pub lines: u64,
    /// JSON objects written.
    pub emitted: u64,
    /// Lines rejected.
    pub rejected: u64,
}

/// Lines per batch handed to the component.
pub const BATCH_LINES: usize = 1024;

/// Streams `input` through `worker`, writing results to `out` and rejections to `errors`.
///
/// A batch is sent to the component when it is full or when no more input is buffered
/// (before the next read could block), so interactive use sees output promptly.
pub fn run<R: Read>(
    worker: &mut Worker,
    table: &Arc<Table>,
    format: Option<String>,
    input: &mut BufReader<R>,
    out: &mut impl Write,
    errors: &mut impl Write,
) -> Result<EnrichStats, EnrichError> {
    let mut stats = EnrichStats::default();
    let mut stream = StreamState {
        format,
        started: false,
    };
    let mut batch = String::new();
    let mut lines = 0usize;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = input.read_until(b'\n', &mut raw).map_err(EnrichError::Io)?;
        if n > 0 {
            crate::batch::push_line(&mut batch, &raw);
            lines += 1;
        }
        let drained = input.buffer().is_empty();
        if lines > 0 && (n == 0 || lines >= BATCH_LINES || drained) {
            process_batch(worker, table, &mut stream, &batch, out, errors, &mut stats)?;
            stats.lines += lines as u64;
            batch.clear();
            lines = 0;
        }
        if n == 0 {
            return Ok(stats);
        }
    }
}

/// Where the input stream stands: the format in effect and whether a batch was sent.
struct StreamState {
    format: Option<String>,
    started: bool,
}

fn process_batch(
    worker: &mut Worker,
    table: &Arc<Table>,
    stream: &mut StreamState,
    batch: &str,
    out: &mut impl Write,
    errors: &mut impl Write,
    stats: &mut EnrichStats,
) -> Result<(), EnrichError> {
    let stream_start = !std::mem::replace(&mut stream.started, true);
    match worker.process(stream.format.as_deref(), batch, stream_start, table) {
        Ok(result) => {
            out.write_all(result.output.as_bytes())
                .map_err(EnrichError::Io)?;
            out.flush().map_err(EnrichError::Io)?;
            stats.emitted += result.emitted as u64;
            let lines: Vec<&str> = if result.errors.is_empty() {
                Vec::new()
            } else {
                batch.lines().collect()
            };
            for error in &result.errors {
                let line = lines.get(error.line as usize).copied().unwrap_or_default();
                write_error(errors, &error.message, line)?;
                stats.rejected += 1;
            }
            errors.flush().map_err(EnrichError::Io)?;
            stream.format = Some(result.format);
            Ok(())
        }
        // `--format` was checked before any batch: this is the stream's S3 header naming
        // a field nobody documents. None of the stream can be read safely: its lines are
        // rejected, and the header stays its format so every later batch is too.
        Err(CallError::InvalidFormat(message)) => {
            if stream_start && let Some(header) = batch.lines().next() {
                stream.format = Some(header.trim().to_string());
            }
            let message = format!("invalid format: {message}");
            for line in batch.lines() {
                write_error(errors, &message, line)?;
                stats.rejected += 1;
            }
            errors.flush().map_err(EnrichError::Io)?;
            Ok(())
        }
        Err(CallError::Runtime(error)) => {
            // The component failed twice on this batch: reject its lines, keep going.
            let message = format!("component failed on this batch twice: {error}");
            for line in batch.lines() {
                write_error(errors, &message, line)?;
                stats.rejected += 1;
            }
            errors.flush().map_err(EnrichError::Io)?;
            Ok(())
        }
    }
}

fn write_error(errors: &mut impl Write, message: &str, line: &str) -> Result<(), EnrichError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let record = serde_json::json!({ "error": message, "line": line });
    writeln!(errors, "{record}").map_err(EnrichError::Io)
}

/// Why `enrich` stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// Reading stdin or writing stdout/stderr failed.
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    /// The component could not be used at all.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
