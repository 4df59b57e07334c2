//! The `stdin` source: lines from standard input until end of file or shutdown.

use super::Batcher;
use crate::metrics::ComponentMetrics;
use crate::topology::output::Output;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long a partial batch may wait for more input before it is sent.
const LINGER: Duration = Duration::from_millis(100);

/// Reads stdin on a helper thread (a blocked read cannot be interrupted) and batches
/// here, so shutdown is honoured even while no input arrives.
pub fn run(batch_lines: usize, output: &Output, metrics: &ComponentMetrics, stop: &AtomicBool) {
    let (lines_tx, lines_rx) = mpsc::sync_channel::<Vec<u8>>(batch_lines.max(1) * 4);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if lines_tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn stdin reader");
    let mut batcher = Batcher::new("stdin", batch_lines, output, metrics);
    while !stop.load(Ordering::Relaxed) {
        match lines_rx.recv_timeout(LINGER) {
            Ok(line) => batcher.push(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => batcher.flush(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Lines already read are sent too: shutdown drains, it does not drop.
    while let Ok(line) = lines_rx.try_recv() {
        batcher.push(&line);
    }
    batcher.flush(true);
}
