//! The `aws_kinesis_streams` source's settings.

use super::{RecordFormat, leases};
use crate::aws::kinesis::{StartAt, StartConfig, StreamConfig};
use crate::config::{BuildError, Invalid};
use crate::sources::{BuiltSource, LineLimits, SourceKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Kinesis data stream of flow logs, every shard; runs until shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub stream: StreamConfig,
    /// Where shards without a checkpoint start.
    #[serde(flatten)]
    pub start: StartConfig,
    /// `auto` (default: gzip records are CloudWatch Logs envelopes, others text),
    /// `cloudwatch_logs` or `text`.
    #[serde(default)]
    pub record_format: RecordFormat,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub lines: LineLimits,
    /// Pause between polls of the shards, in milliseconds (at least 200).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The checkpoint store (a JSON file, replaced atomically). Default:
    /// `.flowenrich/<source id>.checkpoints.json` next to the pipeline file. Not with
    /// `leases`, which keep the checkpoints in their table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<PathBuf>,
    /// Share the stream with other hosts through a DynamoDB lease table
    /// (`[sources.<id>.leases]`); without it, this host reads every shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<Box<leases::Config>>,
    /// Most bytes one record may inflate to (gzip); a record that inflates further goes
    /// to `<id>.dead_letter` (counted as `record_too_large`). Default 16 MiB.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// The in-flight budget, in MiB, for two things, each bounded by it on its own:
    /// GetRecords answers being read (shards are read at most `max_in_flight_mib / 10`
    /// at a time, since an answer can hold 10 MiB), and the inflated text of this
    /// source's batches that are still anywhere in the pipeline (the source waits
    /// before sending more, counted as `in_flight_budget_waits_total`). Default 256 (25
    /// reads at a time).
    #[serde(default = "default_max_in_flight_mib")]
    pub max_in_flight_mib: usize,
}

fn default_poll_interval_ms() -> u64 {
    200
}

fn default_max_record_bytes() -> usize {
    16 << 20
}

fn default_max_in_flight_mib() -> usize {
    256
}

impl Config {
    /// Where shards without a position start.
    pub fn start(&self) -> StartAt {
        self.start.start_at()
    }

    /// Pause between polling rounds.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The in-flight budget in bytes.
    pub fn max_in_flight_bytes(&self) -> usize {
        self.max_in_flight_mib.saturating_mul(1 << 20)
    }

    /// The checkpoint store file (resolved next to the pipeline file; unused with
    /// `leases`).
    pub fn checkpoints_path(&self) -> PathBuf {
        self.checkpoints.clone().unwrap_or_default()
    }
}

impl SourceKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        self.stream.validate(key)?;
        self.lines.validate(key)?;
        Invalid::at_least_1(key, "max_record_bytes", self.max_record_bytes as u64)?;
        if let Some(leases) = &self.leases {
            if self.checkpoints.is_some() {
                return Err(Invalid::new(
                    format!("{key}.checkpoints"),
                    "cannot be set with `leases`: the checkpoints live in the lease table",
                ));
            }
            leases.validate(&format!("{key}.leases"))?;
        }
        self.start.validate(key)
    }

    fn resolve_paths(&mut self, id: &str, base: &Path) {
        if self.leases.is_none() {
            let path = self
                .checkpoints
                .get_or_insert_with(|| PathBuf::from(format!(".flowenrich/{id}.checkpoints.json")));
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn resumes_from_checkpoints(&self) -> bool {
        true
    }

    fn build(&self, _id: &str) -> Result<BuiltSource, BuildError> {
        let config = self.clone();
        Ok(Box::new(move |cx| {
            super::run(
                &cx.id,
                &config,
                cx.output,
                cx.dead_letters,
                &cx.metrics,
                &cx.lifecycle,
            )
            .map_err(Into::into)
        }))
    }
}
