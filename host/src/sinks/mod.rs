//! Sinks: where results go. Each runs on its own thread until all its inputs close, and
//! marks a batch done only once it has delivered it (see [`crate::topology::output`]).
//!
//! Errors are transient (a full disk, an I/O error, throttling, an endpoint away: retried
//! with doubling, jittered pauses, counted, and shown on `/health` while they last) or
//! permanent (the sink returns the error and the pipeline fails; see
//! [`crate::lifecycle`]). Retries give up when the drain deadline passes after a stop.

pub mod druid;
pub mod file;
pub mod kinesis;
pub mod report;
pub mod stdout;

use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use std::time::Duration;

/// First and longest pause between two attempts of a sink's write.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why one attempt at a write failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth trying again (the same write) after a pause.
    Transient(String),
    /// Trying again cannot help: the sink fails.
    Fatal(String),
}

/// Runs `attempt` until it succeeds, pausing between transient failures (each counted
/// as an `error_type` error and in `component_retries_total`; the `component_retrying`
/// gauge is 1 meanwhile, which `/health` reports). Returns the permanent error, or the
/// last transient one once the drain deadline has passed.
pub fn retrying<T>(
    component_id: &str,
    error_type: &'static str,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
    mut attempt: impl FnMut() -> Result<T, AttemptError>,
) -> Result<T, String> {
    let mut pause = Duration::ZERO;
    let result = loop {
        match attempt() {
            Ok(value) => break Ok(value),
            Err(AttemptError::Fatal(error)) => {
                metrics.error(error_type, 1);
                break Err(error);
            }
            Err(AttemptError::Transient(error)) => {
                metrics.error(error_type, 1);
                metrics.count("component_retries_total", 1);
                metrics.gauge("component_retrying", 1);
                pause = (pause * 2).clamp(RETRY_MIN, RETRY_MAX);
                let wait = crate::kinesis::jittered(pause);
                tracing::warn!(message = "Write failed; trying again after a pause.", component_id, %error, pause_ms = wait.as_millis() as u64);
                if !lifecycle.pause(wait) {
                    break Err(format!(
                        "gave up at the drain deadline, still failing: {error}"
                    ));
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

/// An I/O error as an attempt's error, transient or fatal by its kind.
pub fn io_attempt(context: impl std::fmt::Display, error: std::io::Error) -> AttemptError {
    let message = format!("{context}: {error}");
    if io_transient(&error) {
        AttemptError::Transient(message)
    } else {
        AttemptError::Fatal(message)
    }
}
