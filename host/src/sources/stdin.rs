//! The `stdin` source: lines from standard input until end of file or shutdown.

use super::{
    BATCH_MAX_BYTES, Batcher, BuiltSource, LineLimits, Sink, SourceKind, read_line_bounded,
};
use crate::config::{BuildError, Invalid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The `stdin` source's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub lines: LineLimits,
}

impl SourceKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        self.lines.validate(key)
    }

    fn build(&self, _id: &str) -> Result<BuiltSource, BuildError> {
        let lines = self.lines.clone();
        Ok(Box::new(move |cx| {
            run(cx.sink(&lines), cx.lifecycle.stop_flag());
            Ok(())
        }))
    }
}

/// How long a partial batch may wait for more input before it is sent.
const LINGER: Duration = Duration::from_millis(100);

/// Reads stdin on a helper thread (a blocked read cannot be interrupted) and batches
/// here, so shutdown is honoured even while no input arrives.
pub fn run(to: Sink<'_>, stop: &AtomicBool) {
    // Lines read ahead are bounded in bytes too: about 4 MiB of the longest lines.
    let read_ahead = (4 * BATCH_MAX_BYTES / (to.max_line_bytes + 1))
        .min(to.batch_lines.max(1) * 4)
        .max(4);
    let (lines_tx, lines_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(read_ahead);
    let limit = to.max_line_bytes + 1;
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = Vec::new();
                match read_line_bounded(&mut stdin, &mut line, limit) {
                    Ok(0) | Err(_) => return,
                    Ok(length) => {
                        if lines_tx.send((line, length)).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn stdin reader");
    let mut batcher = Batcher::new("stdin", to);
    while !stop.load(Ordering::Relaxed) {
        match lines_rx.recv_timeout(LINGER) {
            Ok((line, length)) => batcher.push(&line, length),
            Err(mpsc::RecvTimeoutError::Timeout) => batcher.flush(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Lines already read are sent too: shutdown drains, it does not drop.
    while let Ok((line, length)) = lines_rx.try_recv() {
        batcher.push(&line, length);
    }
    batcher.flush(true);
}
