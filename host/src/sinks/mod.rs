//! Sinks: where results go. Each runs on its own thread until all its inputs close, and
//! marks a batch done only once it has delivered it (see [`crate::topology::output`]).
//!
//! Errors are transient (a full disk, an I/O error, throttling, an endpoint away: retried
//! with doubling, jittered pauses, counted, and shown on `/health` while they last) or
//! permanent (the sink returns the error and the pipeline fails; see
//! [`crate::lifecycle`]). Retries give up when the drain deadline passes after a stop.

pub mod aws_kinesis;
pub mod druid;
pub mod file;
pub mod report;
pub mod stdout;

use crate::config::{BoxError, BuildError, Invalid, Upstream};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::topology::output::Input;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

crate::config::component_enum! {
    /// A sink, by its `type`.
    pub enum SinkConfig: SinkKind {
        /// Every line as one record of a Kinesis data stream (PutRecords, retried until
        /// accepted).
        AwsKinesisStreams(aws_kinesis::Config),
        /// Newline-delimited JSON (or whatever lines arrive) to a file.
        File(file::Config),
        /// Flows rolled up per time bucket and dimensions, as Druid rolls them up, and
        /// delivered as JSON rows: to a Kinesis stream that a Druid Kinesis supervisor
        /// ingests (`stream_name`/`stream_arn`; `flowenrich druid-spec` prints that
        /// supervisor's spec), or to NDJSON files per bucket in `path`.
        Druid(druid::Config),
        /// Lines to standard output.
        Stdout(stdout::Config),
        /// A human-readable traffic report written when the pipeline ends: top
        /// application pairs by bytes, cross-region and cross-AZ bytes, rejected flows.
        Report(report::Config),
    }
}

/// What every kind of sink's config does.
pub trait SinkKind: std::fmt::Debug {
    /// Upstream component ids.
    fn inputs(&self) -> &[String];
    /// Checks the settings; `key` is `sinks.<id>`, `upstream` tells what feeds it.
    fn validate(&self, key: &str, upstream: &Upstream) -> Result<(), Invalid>;
    /// Makes relative paths absolute against `base`, the pipeline file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// Whether the sink publishes checkpointed batches exactly once (the `druid` sink):
    /// transforms upstream then send batches with held lines whole.
    fn publishes_exactly_once(&self) -> bool {
        false
    }
    /// What the sink reads of the records it gets (JSON lines unless it says otherwise).
    fn reads(&self) -> Reads {
        Reads::Json
    }
    /// The running part.
    fn build(&self, id: &str) -> Result<BuiltSink, BuildError>;
}

/// What a sink reads of the records it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// Each record's JSON line.
    Json,
    /// These fields (output names) and the owners, as a `wasm` transform's columns;
    /// JSON lines too, for records that come without.
    Columns(Vec<String>),
}

/// A built sink: runs on its own thread until its input ends; returns a report to print
/// on standard output when the pipeline has ended, if it has one.
pub type BuiltSink =
    Box<dyn FnOnce(&mut Input, &SinkContext) -> Result<Option<String>, BoxError> + Send>;

/// What a running sink reports to.
pub struct SinkContext {
    /// The sink's id.
    pub id: String,
    /// Its counters.
    pub metrics: Arc<ComponentMetrics>,
    /// The pipeline's fate: stop requests, the drain deadline, failures.
    pub lifecycle: Arc<Lifecycle>,
}

/// First and longest pause between two attempts of a sink's write.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// An error that names its kind for the metrics (`component_errors_total{error_type}`).
pub trait Labeled: std::error::Error + Send + Sync + 'static {
    /// The stable label of this kind of error.
    fn error_type(&self) -> &'static str;
}

/// Why one attempt at a write failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth trying again (the same write) after a pause.
    Transient(Box<dyn Labeled>),
    /// Trying again cannot help: the sink fails.
    Fatal(Box<dyn Labeled>),
}

/// Why a sink stopped before its input ended.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An error no retry can mend (permissions, a deleted stream, a bad request).
    #[error(transparent)]
    Fatal(BoxError),
    /// The drain deadline passed while a transient error lasted.
    #[error("gave up at the drain deadline, still failing: {0}")]
    GaveUp(#[source] BoxError),
}

impl SinkError {
    /// A permanent failure.
    pub fn fatal(error: impl Into<BoxError>) -> SinkError {
        SinkError::Fatal(error.into())
    }
}

/// Runs `attempt` until it succeeds, pausing between transient failures (each counted
/// under its error's `error_type` and in `component_retries_total`; the
/// `component_retrying` gauge is 1 meanwhile, which `/health` reports). Returns the
/// permanent error, or the last transient one once the drain deadline has passed.
pub fn retrying<T>(
    component_id: &str,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
    mut attempt: impl FnMut() -> Result<T, AttemptError>,
) -> Result<T, SinkError> {
    let mut pause = Duration::ZERO;
    let result = loop {
        match attempt() {
            Ok(value) => break Ok(value),
            Err(AttemptError::Fatal(error)) => {
                metrics.error(error.error_type(), 1);
                break Err(SinkError::Fatal(error));
            }
            Err(AttemptError::Transient(error)) => {
                metrics.error(error.error_type(), 1);
                metrics.count("component_retries_total", 1);
                metrics.gauge("component_retrying", 1);
                pause = (pause * 2).clamp(RETRY_MIN, RETRY_MAX);
                let wait = crate::util::jittered(pause);
                tracing::warn!(message = "Write failed; trying again after a pause.", component_id, %error, pause_ms = wait.as_millis() as u64);
                if !lifecycle.pause(wait) {
                    break Err(SinkError::GaveUp(error));
                }
            }
        }
    };
    if !pause.is_zero() {
        metrics.gauge("component_retrying", 0);
    }
    result
}

/// Whether an I/O error may go away by itself (a full disk, a quota, an I/O error, a
/// timeout), so the write is worth trying again.
pub fn io_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        error.kind(),
        K::StorageFull
            | K::QuotaExceeded
            | K::Interrupted
            | K::WouldBlock
            | K::TimedOut
            | K::OutOfMemory
    ) || error.raw_os_error() == Some(5)
}

/// An I/O error on a path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct PathError {
    /// The file or directory.
    pub path: std::path::PathBuf,
    /// The I/O error.
    #[source]
    pub error: std::io::Error,
}

impl Labeled for PathError {
    fn error_type(&self) -> &'static str {
        "write_failed"
    }
}

impl PathError {
    /// `error` on `path`.
    pub fn new(path: &Path, error: std::io::Error) -> PathError {
        PathError {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// An I/O error on `path` as an attempt's error, transient or fatal by its kind.
pub fn io_attempt(path: &Path, error: std::io::Error) -> AttemptError {
    let transient = io_transient(&error);
    let error = Box::new(PathError::new(path, error));
    if transient {
        AttemptError::Transient(error)
    } else {
        AttemptError::Fatal(error)
    }
}
