//! The channels between components: an [`Output`] fans one component's batches out to
//! every component that lists it in `inputs`; each consumer reads its own bounded
//! channel through an [`Input`].
//!
//! A consumer takes responsibility for a batch explicitly. Every batch an [`Input`] hands
//! out is a [`Taken`], which the consumer marks [`Taken::done`] once it has delivered the
//! batch (a sink: written durably; a transform: passed its acknowledgements on to what it
//! emitted). A `Taken` dropped without that, and every batch still queued when an `Input`
//! is dropped before its producers closed it, fails the pipeline (see
//! [`crate::lifecycle`]) before the batch's acknowledgements are released, so a
//! component that stops early (an error, a panic) never acknowledges what it was sent.

use crate::batch::{LineBatch, SharedBatch};
use crate::lifecycle::Lifecycle;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

/// Batches in flight per consumer before the producer waits (backpressure).
pub const CHANNEL_BATCHES: usize = 16;

/// Sends each batch to every consumer of one output.
#[derive(Debug, Default, Clone)]
pub struct Output {
    senders: Vec<SyncSender<SharedBatch>>,
}

impl Output {
    /// Adds a consumer.
    pub fn connect(&mut self, sender: SyncSender<SharedBatch>) {
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
            // A consumer goes away early only when it failed, which halted every
            // checkpoint first: the batch dropped here acknowledges nothing.
            let _ = sender.send(batch.clone());
        }
    }
}

/// One consumer's end of its channel.
pub struct Input {
    receiver: Option<mpsc::Receiver<SharedBatch>>,
    component: String,
    lifecycle: Arc<Lifecycle>,
    /// Every producer has closed its side (the input ended cleanly).
    ended: bool,
}

/// A channel for consumer `component` (its config key, `sinks.<id>`), with its sender.
pub fn channel(component: &str, lifecycle: &Arc<Lifecycle>) -> (SyncSender<SharedBatch>, Input) {
    let (sender, receiver) = mpsc::sync_channel(CHANNEL_BATCHES);
    (
        sender,
        Input {
            receiver: Some(receiver),
            component: component.to_string(),
            lifecycle: lifecycle.clone(),
            ended: false,
        },
    )
}

impl Input {
    fn taken(&self, batch: SharedBatch) -> Taken {
        Taken {
            batch: Some(batch),
            component: self.component.clone(),
            lifecycle: self.lifecycle.clone(),
        }
    }

    /// The next batch, waiting for it; `None` once every producer has closed.
    pub fn recv(&mut self) -> Option<Taken> {
        match self.receiver.as_ref()?.recv() {
            Ok(batch) => Some(self.taken(batch)),
            Err(_) => {
                self.ended = true;
                None
            }
        }
    }

    /// The next batch if one arrives within `wait`: `Ok(None)` on a timeout, `Err(())`
    /// once every producer has closed.
    pub fn recv_timeout(&mut self, wait: Duration) -> Result<Option<Taken>, Ended> {
        let receiver = self.receiver.as_ref().ok_or(Ended)?;
        match receiver.recv_timeout(wait) {
            Ok(batch) => Ok(Some(self.taken(batch))),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Err(Ended)
            }
        }
    }

    /// A batch already waiting, without blocking (`None` when there is none or the
    /// input has ended).
    pub fn try_recv(&mut self) -> Option<Taken> {
        match self.receiver.as_ref()?.try_recv() {
            Ok(batch) => Some(self.taken(batch)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }
}

/// Every producer of an [`Input`] has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

impl Drop for Input {
    fn drop(&mut self) {
        // A consumer that stops before its producers closed its input stops early: what
        // is queued, and whatever is sent after, is never delivered.
        if let Some(receiver) = self.receiver.take() {
            if !self.ended {
                self.lifecycle.dropped_undelivered(&self.component);
            }
            // Dropping the receiver releases what is queued: only after the halt.
            drop(receiver);
        }
    }
}

/// A batch a consumer has taken; see the module docs.
pub struct Taken {
    batch: Option<SharedBatch>,
    component: String,
    lifecycle: Arc<Lifecycle>,
}

impl Taken {
    /// The batch is delivered (or handed on): its acknowledgements may be released.
    pub fn done(mut self) {
        self.batch = None;
    }

    /// The batch will never be delivered here because the lease of its shard is gone (a
    /// `druid` sink in a fleet): its acknowledgements are forsaken, so no checkpoint
    /// passes it, and the shard's next holder reads it again. Fails nothing.
    pub fn forsake(mut self) {
        if let Some(batch) = self.batch.take() {
            for ack in &batch.acks {
                ack.forsake();
            }
        }
    }

    /// Lets the batch's text go and keeps only what acknowledges it, for a consumer
    /// that holds batches until it delivers what it made of them (the rollup).
    pub fn shrink(&mut self) {
        let Some(batch) = &self.batch else { return };
        self.batch = Some(Arc::new(LineBatch {
            columns: None,
            permit: None,
            text: String::new(),
            lines: batch.lines,
            stream: batch.stream.clone(),
            stream_start: batch.stream_start,
            stream_end: batch.stream_end,
            acks: batch.acks.clone(),
        }));
    }

    /// The shared batch, e.g. to keep a held line's acknowledgements.
    pub fn shared(&self) -> &SharedBatch {
        self.batch.as_ref().expect("a taken batch")
    }
}

impl std::ops::Deref for Taken {
    type Target = LineBatch;
    fn deref(&self) -> &LineBatch {
        self.shared()
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.batch.is_some() {
            self.lifecycle.dropped_undelivered(&self.component);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::aws_kinesis::checkpoint::Checkpoints;

    fn batch(acks: Vec<Arc<crate::sources::aws_kinesis::checkpoint::Ack>>) -> SharedBatch {
        Arc::new(LineBatch {
            columns: None,
            permit: None,
            text: "x\n".into(),
            lines: 1,
            stream: "s".into(),
            stream_start: false,
            stream_end: false,
            acks,
        })
    }

    #[test]
    fn a_consumer_that_stops_early_acknowledges_nothing() {
        let lifecycle = Lifecycle::new();
        let store = Checkpoints::in_memory().halted_by(lifecycle.halted());
        let (sender, mut input) = channel("sinks.out", &lifecycle);
        let mut output = Output::default();
        output.connect(sender);
        output.send(batch(vec![store.ack("s", 0, Some("1".into()), false)]));
        output.send(batch(vec![store.ack("s", 1, Some("2".into()), false)]));
        output.send(batch(vec![store.ack("s", 2, Some("3".into()), false)]));
        input.recv().unwrap().done();
        assert_eq!(store.get("s").sequence.as_deref(), Some("1"));
        // The consumer takes the next batch and gives up without writing it.
        drop(input.recv().unwrap());
        assert!(lifecycle.failure().is_some());
        drop(input);
        // Sending after the consumer went away is no delivery either.
        output.send(batch(vec![store.ack("s", 3, Some("4".into()), false)]));
        assert_eq!(store.in_flight(), 0);
        assert_eq!(store.get("s").sequence.as_deref(), Some("1"));
        assert_eq!(lifecycle.failure().unwrap().component, "sinks.out");
    }

    #[test]
    fn an_input_that_ends_cleanly_fails_nothing() {
        let lifecycle = Lifecycle::new();
        let (sender, mut input) = channel("sinks.out", &lifecycle);
        sender.send(batch(Vec::new())).unwrap();
        drop(sender);
        input.recv().unwrap().done();
        assert!(input.recv().is_none());
        drop(input);
        assert!(lifecycle.failure().is_none());
    }
}
