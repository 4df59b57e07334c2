//! The `stdout` sink: lines to standard output.

use crate::batch::SharedBatch;
use crate::metrics::ComponentMetrics;
use std::io::Write;
use tokio::sync::mpsc;

/// Writes every batch to standard output.
pub fn run(
    mut input: mpsc::Receiver<SharedBatch>,
    metrics: &ComponentMetrics,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    while let Some(batch) = input.blocking_recv() {
        metrics.received(batch.lines as u64);
        let mut out = stdout.lock();
        out.write_all(batch.text.as_bytes())?;
        out.flush()?;
        metrics.sent(batch.lines as u64);
    }
    Ok(())
}
