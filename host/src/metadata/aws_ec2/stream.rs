//! Publishing the poller's events to a Kinesis data stream, the changelog a fleet's other
//! hosts read (`aws_kinesis_streams` tables) instead of polling EC2 themselves.
//!
//! Order is what makes a changelog safe to read: a reader must never see a source's
//! `observed` horizon before the events of the poll it ends, or it would extend an old
//! owner past a change. So events go out in segments, each a poll's events followed by
//! its horizon: the events first (packed into records keyed by their source, so one
//! source's records land in one shard), and only when every one of them is in the
//! stream, the horizon, in a request of its own behind them in the same shard. A write
//! that fails keeps its segment and everything after it for the next attempt; a
//! repeated event is harmless (the same `ts` and `op` again). Every
//! `snapshot_interval_secs` a poll also re-asserts every address and interface it saw
//! (an `assign` at the time it was seen), so a host that starts reading at the stream's
//! trim horizon (24 hours back by default) learns every owner, not only the changes it
//! can still read.

use crate::aws::kinesis::{StreamConfig, StreamRef};
use crate::metadata::events::{Event, Op, Target};
use crate::metrics::ComponentMetrics;
use crate::sinks::AttemptError;
use crate::sinks::aws_kinesis::{put_once, requests};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// Where the poller publishes its changelog: the keys every Kinesis stream has, plus how
/// often a poll re-asserts everything it saw.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangelogStream {
    /// The stream and how to reach it.
    #[serde(flatten)]
    pub stream: StreamConfig,
    /// Seconds between polls that re-assert every owner they saw, for readers that start
    /// at the stream's trim horizon; keep it well under the stream's retention.
    #[serde(default = "default_snapshot_interval_secs")]
    pub snapshot_interval_secs: u64,
}

fn default_snapshot_interval_secs() -> u64 {
    3600
}

/// Bytes of event lines packed into one record.
const RECORD_BYTES: usize = 256 << 10;

/// Attempts of one request before the flush gives up until the next poll.
const ATTEMPTS: u32 = 5;

/// Events waiting to be in the stream, written in order.
pub struct StreamWriter {
    client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    pending: VecDeque<Event>,
}

/// The partition key of an event: the source it names (a source's events share a shard).
fn key_of(event: &Event) -> &str {
    match (&event.target, &event.source) {
        (Target::Source(name), _) => name,
        (_, Some(source)) => source,
        _ => "flowenrich",
    }
}

impl StreamWriter {
    /// A writer to the stream of `config` (it connects at the first write).
    pub async fn new(config: &ChangelogStream) -> StreamWriter {
        StreamWriter {
            client: config.stream.client().await,
            stream: config.stream.stream(),
            pending: VecDeque::new(),
        }
    }

    /// Queues a poll's events (ending with its horizon) behind what is still pending.
    pub fn push(&mut self, events: impl IntoIterator<Item = Event>) {
        self.pending.extend(events);
    }

    /// Events not yet known to be in the stream.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes what is pending, segment by segment (a poll's events, then its horizon);
    /// stops at the first segment the stream does not take, which stays pending.
    pub async fn flush(&mut self, metrics: &ComponentMetrics) -> Result<(), String> {
        while !self.pending.is_empty() {
            let end = self
                .pending
                .iter()
                .position(|e| e.op == Op::Observed)
                .map_or(self.pending.len(), |at| at + 1);
            let segment: Vec<&Event> = self.pending.range(..end).collect();
            let (horizon, events) = match segment.split_last() {
                Some((last, rest)) if last.op == Op::Observed => (Some(*last), rest),
                _ => (None, &segment[..]),
            };
            self.put_all(events, metrics).await?;
            if let Some(horizon) = horizon {
                self.put_all(&[horizon], metrics).await?;
            }
            metrics.count("changelog_stream_events_total", end as u64);
            self.pending.drain(..end);
        }
        Ok(())
    }

    /// Puts `events` as records of lines, grouped by source, until every record is in.
    async fn put_all(&self, events: &[&Event], metrics: &ComponentMetrics) -> Result<(), String> {
        let mut records: Vec<(String, String)> = Vec::new();
        let mut by_key: Vec<(&str, String)> = Vec::new();
        for event in events {
            let key = key_of(event);
            let at = match by_key.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    by_key.push((key, String::new()));
                    by_key.len() - 1
                }
            };
            let text = &mut by_key[at].1;
            text.push_str(&event.to_line());
            text.push('\n');
            if text.len() >= RECORD_BYTES {
                records.push((std::mem::take(text), key.to_string()));
            }
        }
        records.extend(
            by_key
                .into_iter()
                .filter(|(_, text)| !text.is_empty())
                .map(|(key, text)| (text, key.to_string())),
        );
        for mut request in requests(records) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut unknown = false;
                match put_once(
                    &self.client,
                    &self.stream,
                    &mut request,
                    metrics,
                    &mut unknown,
                )
                .await
                {
                    Ok(()) => break,
                    Err(AttemptError::Transient(error)) if attempt < ATTEMPTS => {
                        tracing::debug!(message = "Changelog stream write failed; retrying.", error = %error);
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    Err(AttemptError::Transient(error) | AttemptError::Fatal(error)) => {
                        return Err(error.to_string());
                    }
                }
            }
        }
        Ok(())
    }
}
