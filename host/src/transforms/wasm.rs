//! The `wasm` transform: every batch goes through the enrichment component against one
//! metadata snapshot. Enriched JSON goes to the transform's output; rejected lines go to
//! `<id>.dead_letter` as `{"error", "line", "component", "stream"}` objects.

use crate::batch::{LineBatch, SharedBatch};
use crate::metadata::{SharedTable, Table};
use crate::metrics::ComponentMetrics;
use crate::runtime::Worker;
use crate::topology::output::Output;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many dead letters are logged when no sink takes them (all are counted).
const LOGGED_DEAD_LETTERS: u64 = 20;

/// A running `wasm` transform.
pub struct WasmTransform {
    /// Component id, for dead letters and logs.
    pub id: String,
    /// The component instance.
    pub worker: Worker,
    /// Metadata to attribute with; `None` leaves every flow unattributed.
    pub table: Option<Arc<SharedTable>>,
    /// Configured format (`None` = AWS default).
    pub format: Option<String>,
    /// Where enriched JSON goes.
    pub output: Output,
    /// Where rejected lines go.
    pub dead_letters: Output,
    /// This transform's counters.
    pub metrics: Arc<ComponentMetrics>,
}

impl WasmTransform {
    /// Processes batches until every input has closed.
    pub fn run(mut self, mut input: mpsc::Receiver<SharedBatch>) {
        let empty = Arc::new(Table::default());
        // Format per stream, set by S3 header lines.
        let mut formats: HashMap<Arc<str>, String> = HashMap::new();
        let mut unlogged_dead_letters = LOGGED_DEAD_LETTERS;
        while let Some(batch) = input.blocking_recv() {
            self.metrics.received(batch.lines as u64);
            let table = self
                .table
                .as_ref()
                .map_or_else(|| empty.clone(), |t| t.snapshot());
            let format = formats
                .get(&batch.stream)
                .cloned()
                .or_else(|| self.format.clone());
            let (output, rejected) = match self.worker.process(
                format.as_deref(),
                &batch.text,
                batch.stream_start,
                &table,
            ) {
                Ok(Ok(result)) => {
                    if !batch.stream_end {
                        formats.insert(batch.stream.clone(), result.format);
                    }
                    let lines: Vec<&str> = if result.errors.is_empty() {
                        Vec::new()
                    } else {
                        batch.text.lines().collect()
                    };
                    let rejected: Vec<(String, &str)> = result
                        .errors
                        .into_iter()
                        .map(|e| {
                            (
                                e.message,
                                lines.get(e.line as usize).copied().unwrap_or_default(),
                            )
                        })
                        .collect();
                    self.metrics.error("invalid_line", rejected.len() as u64);
                    ((result.output, result.emitted as usize), rejected)
                }
                Ok(Err(message)) => {
                    self.metrics.error("invalid_format", batch.lines as u64);
                    let reason = format!("invalid format: {message}");
                    (
                        (String::new(), 0),
                        batch.text.lines().map(|l| (reason.clone(), l)).collect(),
                    )
                }
                Err(error) => {
                    self.metrics.error(error.error_type(), batch.lines as u64);
                    let reason = format!("component failed on this batch twice: {error}");
                    tracing::error!(message = "Dead-lettering a batch the component could not process.", component_id = %self.id, %error, lines = batch.lines);
                    (
                        (String::new(), 0),
                        batch.text.lines().map(|l| (reason.clone(), l)).collect(),
                    )
                }
            };
            if batch.stream_end {
                formats.remove(&batch.stream);
            }
            let (text, emitted) = output;
            self.metrics.sent(emitted as u64);
            if emitted > 0 || batch.stream_end {
                self.output.send(Arc::new(LineBatch {
                    text,
                    lines: emitted,
                    stream: batch.stream.clone(),
                    stream_start: batch.stream_start,
                    stream_end: batch.stream_end,
                }));
            }
            if !rejected.is_empty() {
                if self.dead_letters.is_unconnected() {
                    self.metrics.discarded(rejected.len() as u64);
                    for (error, line) in rejected.iter().take(unlogged_dead_letters as usize) {
                        tracing::warn!(message = "Rejected line (no sink takes this transform's dead_letter output).", component_id = %self.id, stream = %batch.stream, %error, line);
                    }
                    unlogged_dead_letters =
                        unlogged_dead_letters.saturating_sub(rejected.len() as u64);
                } else {
                    let mut text = String::new();
                    for (error, line) in &rejected {
                        let record = serde_json::json!({
                            "error": error,
                            "line": line.trim_end_matches('\r'),
                            "component": self.id,
                            "stream": &*batch.stream,
                        });
                        text.push_str(&record.to_string());
                        text.push('\n');
                    }
                    self.dead_letters.send(Arc::new(LineBatch {
                        text,
                        lines: rejected.len(),
                        stream: batch.stream.clone(),
                        stream_start: false,
                        stream_end: false,
                    }));
                }
            }
        }
    }
}
