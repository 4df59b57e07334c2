//! A metadata table fed by a changelog stream: contract-3 events read from a Kinesis data
//! stream ("stream + cache + stream": no database on the hot path).
//!
//! A reader thread polls every shard of the stream, folds the events it reads into the
//! changelog (after any bootstrap files), and at most once per poll interval builds a new
//! table off the hot path and swaps it in. Each record holds one or more JSON lines; a
//! line that is not a valid event is logged and counted and the rest are used. With a
//! retention window the changelog it keeps is compacted to what the window needs, so
//! memory follows the window, not the stream's age. The stream is read from its start
//! (`trim_horizon`) or from new records only (`latest`); metadata needs no checkpoints,
//! since a restart reads the changelog again.

use super::event_log::EventLog;
use super::events::{BadLine, Event};
use super::{MetadataKind, SharedTable, TableOptions, TableSpec, file::Fingerprint};
use crate::aws::kinesis::{MIN_POLL, RELIST, ShardCursor, StartAt, StartConfig, StreamConfig};
use crate::config::Invalid;
use crate::metrics::ComponentMetrics;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `aws_kinesis_streams` table's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bootstrap snapshot (`path`, `paths`, read once) and the options of every
    /// build.
    #[serde(flatten)]
    pub table: TableOptions,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub stream: StreamConfig,
    /// Where the changelog is read from (by default the whole retained changelog).
    #[serde(flatten)]
    pub start: StartConfig,
    /// Pause between polls of the shards, and the shortest time between two table
    /// builds, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_interval_ms() -> u64 {
    250
}

impl Config {
    /// Where the changelog stream is and how to read it.
    pub fn stream_spec(&self) -> StreamSpec {
        StreamSpec {
            stream: self.stream.clone(),
            start: self.start.start_at(),
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(1)),
        }
    }
}

impl MetadataKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        self.stream.validate(key)?;
        self.start.validate(key)
    }

    fn table(&self) -> &TableOptions {
        &self.table
    }

    fn table_mut(&mut self) -> &mut TableOptions {
        &mut self.table
    }

    fn follow(
        &self,
        name: &str,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
        _seen: Fingerprint,
    ) -> Option<Box<dyn Send>> {
        let (table, spec, stream) = (name.to_string(), self.table.spec(), self.stream_spec());
        // Reads the stream into `shared`, on top of `spec` (its files are the bootstrap
        // snapshot; its retention and AWS ranges apply to every build).
        Some(Box::new(super::Follower::start(name, move |stop| {
            read(table, spec, stream, shared, metrics, stop)
        })))
    }
}

/// Where a changelog stream is and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream and how to reach it.
    pub stream: StreamConfig,
    /// Where shards start: the oldest record, or only new ones.
    pub start: StartAt,
    /// Pause between polling rounds, and the shortest time between two table builds.
    pub poll_interval: Duration,
}

async fn read(
    name: String,
    spec: TableSpec,
    stream: StreamSpec,
    shared: Arc<SharedTable>,
    metrics: Arc<ComponentMetrics>,
    stop: Arc<AtomicBool>,
) {
    let client = stream.stream.client().await;
    let stream_ref = &stream.stream.stream();
    let mut shards: HashMap<String, ShardCursor> = HashMap::new();
    let mut log = EventLog::bootstrap(spec);
    let mut listed_at: Option<Instant> = None;
    let mut dirty = false;
    let mut built_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if listed_at.is_none_or(|at| at.elapsed() >= RELIST) {
            match crate::aws::kinesis::list_shards(&client, stream_ref).await {
                Ok(listed) => {
                    for shard in listed {
                        shards.entry(shard.id).or_default();
                    }
                    listed_at = Some(Instant::now());
                }
                Err(error) => {
                    metrics.error("stream_list_failed", 1);
                    tracing::warn!(message = "Cannot list the changelog stream's shards; retrying.", table = %name, %error);
                }
            }
        }
        for (shard_id, state) in shards.iter_mut().filter(|(_, s)| !s.finished) {
            match state
                .poll(&client, stream_ref, shard_id, stream.start)
                .await
            {
                Ok(records) => {
                    for record in records {
                        let text = String::from_utf8_lossy(&record.data);
                        for (number, line) in text.lines().enumerate() {
                            if line.trim().is_empty() {
                                continue;
                            }
                            metrics.received(1);
                            match Event::parse(line) {
                                Ok(event) => {
                                    log.push(event);
                                    dirty = true;
                                }
                                Err(error) => {
                                    metrics.error(error.error_type(), 1);
                                    let bad = BadLine {
                                        line_number: number + 1,
                                        line: line.to_string(),
                                        error,
                                    };
                                    tracing::warn!(message = "Rejected changelog event.", table = %name, shard = %shard_id, line = %bad.line, error = %bad.error);
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    metrics.error("stream_read_failed", 1);
                    tracing::warn!(message = "Changelog read failed; the shard is read again from its last record.", table = %name, shard = %shard_id, %error);
                    state.reset();
                }
            }
        }
        if dirty && built_at.elapsed() >= stream.poll_interval {
            built_at = Instant::now();
            if log.rebuild(&name, "the changelog stream", &shared, &metrics) {
                dirty = false;
            }
        }
        tokio::time::sleep(stream.poll_interval.max(MIN_POLL)).await;
        shared.reap();
    }
}
