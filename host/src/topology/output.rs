//! Fan-out of one component output to all the components that list it in `inputs`.

use crate::batch::SharedBatch;
use tokio::sync::mpsc;

/// Batches in flight per consumer before the producer waits (backpressure).
pub const CHANNEL_BATCHES: usize = 16;

/// Sends each batch to every consumer of one output.
#[derive(Debug, Default, Clone)]
pub struct Output {
    senders: Vec<mpsc::Sender<SharedBatch>>,
}

impl Output {
    /// Adds a consumer.
    pub fn connect(&mut self, sender: mpsc::Sender<SharedBatch>) {
        self.senders.push(sender);
    }

    /// True when nobody consumes this output.
    pub fn is_unconnected(&self) -> bool {
        self.senders.is_empty()
    }

    /// Sends to every consumer, waiting while their queues are full. Blocking: call it
    /// from a worker thread, not from async code.
    pub fn send(&self, batch: SharedBatch) {
        for sender in &self.senders {
            // A consumer only goes away after its inputs close, so a failure here means
            // the pipeline is already tearing down after a panic; nothing to add.
            let _ = sender.blocking_send(batch.clone());
        }
    }
}
