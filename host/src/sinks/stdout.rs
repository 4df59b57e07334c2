//! The `stdout` sink: lines to standard output. A batch is done once it is written and
//! flushed; a write error (the reader went away: `EPIPE`) fails the pipeline.

use crate::metrics::ComponentMetrics;
use crate::topology::output::Input;
use std::io::Write;

/// Writes every batch to standard output until the input ends.
pub fn run(input: &mut Input, metrics: &ComponentMetrics) -> Result<(), String> {
    let stdout = std::io::stdout();
    while let Some(batch) = input.recv() {
        metrics.received(batch.lines as u64);
        let mut out = stdout.lock();
        if let Err(error) = out
            .write_all(batch.text.as_bytes())
            .and_then(|()| out.flush())
        {
            metrics.error("write_failed", 1);
            return Err(format!("standard output: {error}"));
        }
        metrics.sent(batch.lines as u64);
        batch.done();
    }
    Ok(())
}
