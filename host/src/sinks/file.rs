//! The `file` sink: lines appended to one file, flushed after every batch.

use crate::batch::SharedBatch;
use crate::metrics::ComponentMetrics;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use tokio::sync::mpsc;

/// Opens `path` (creating parents) and writes every batch to it.
pub fn run(
    path: &Path,
    append: bool,
    mut input: mpsc::Receiver<SharedBatch>,
    metrics: &ComponentMetrics,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    while let Some(batch) = input.blocking_recv() {
        metrics.received(batch.lines as u64);
        writer.write_all(batch.text.as_bytes())?;
        writer.flush()?;
        metrics.sent(batch.lines as u64);
    }
    writer.flush()?;
    writer.get_ref().sync_data()
}
