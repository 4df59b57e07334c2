//! Pipeline configuration: Vector-style TOML with `[metadata.*]`, `[sources.*]`,
//! `[transforms.*]` and `[sinks.*]`, wired together by `inputs`.
//!
//! Relative paths are resolved against the directory of the pipeline file, so a
//! pipeline runs the same from any working directory.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Suffix of a transform's dead-letter output (`<transform>.dead_letter`).
pub const DEAD_LETTER: &str = "dead_letter";

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Metadata tables, by name; transforms refer to them with `metadata = "<name>"`.
    #[serde(default)]
    pub metadata: BTreeMap<String, MetadataConfig>,
    /// Where lines come from, by component id.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// What happens to lines, by component id.
    #[serde(default)]
    pub transforms: BTreeMap<String, TransformConfig>,
    /// Where results go, by component id.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The admin endpoint (`/metrics`, `/health`); off when the table is absent.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// After SIGINT/SIGTERM (or a failure), how long sinks may go on retrying what they
    /// could not write yet, in seconds. When it passes they give up, nothing they did not
    /// write is acknowledged, and `run` exits 1.
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
}

fn default_drain_timeout_secs() -> u64 {
    30
}

/// The admin endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where it listens; only loopback by default. Port 0 picks a free port (logged).
    #[serde(default = "default_api_address")]
    pub address: std::net::SocketAddr,
}

fn default_api_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8686))
}

/// A metadata table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `file`: changelog files, re-read when they change. `aws_kinesis_streams`: a
    /// changelog stream (with optional files read once as a bootstrap snapshot).
    #[serde(rename = "type")]
    pub kind: MetadataKind,
    /// One changelog file (plain or `.gz`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Several changelog files, applied in this order (after `path`).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// AWS's published `ip-ranges.json` (a local copy): AWS addresses get `app = "aws"`,
    /// `service` and `region`; a changelog event for the same network overrides it.
    #[serde(default)]
    pub aws_ip_ranges: Option<PathBuf>,
    /// Public addresses that nothing else covers get `app = "internet"`. Default: on
    /// when `aws_ip_ranges` is set, off otherwise.
    #[serde(default)]
    pub internet: Option<bool>,
    /// Seconds of history kept behind the newest event; flows older than that are left
    /// unattributed. 0 keeps all history. Default 3600.
    #[serde(default = "default_retention_secs")]
    pub retention_secs: u64,
    /// `file` tables: how often the files are checked for changes, in milliseconds; a
    /// change rebuilds the table and swaps it in. 0 never re-reads. Default 1000.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// `aws_kinesis_streams`: the changelog stream's name (or `stream_arn`).
    #[serde(default)]
    pub stream_name: Option<String>,
    /// `aws_kinesis_streams`: the changelog stream's ARN (or `stream_name`).
    #[serde(default)]
    pub stream_arn: Option<String>,
    /// `aws_kinesis_streams`: endpoint override, e.g. a local Kinesis
    /// (`http://127.0.0.1:4567`). Default: AWS's endpoint for the region.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `aws_kinesis_streams`: region. Default: the standard AWS configuration chain.
    #[serde(default)]
    pub region: Option<String>,
    /// `aws_kinesis_streams`: `trim_horizon` (the whole retained changelog, the default)
    /// or `latest` (only changes from now on).
    #[serde(default)]
    pub start_position: MetadataStart,
    /// `aws_kinesis_streams`: pause between polls of the shards, and the shortest time
    /// between two table builds, in milliseconds. Default 250.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

/// Where a metadata table's changes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKind {
    /// Changelog files.
    File,
    /// A changelog stream on Kinesis Data Streams.
    AwsKinesisStreams,
}

/// Where a changelog stream is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataStart {
    /// The oldest record the stream retains.
    #[default]
    TrimHorizon,
    /// Only records written after the reader starts.
    Latest,
}

fn default_retention_secs() -> u64 {
    3600
}

fn default_reload_interval_ms() -> u64 {
    1000
}

fn default_poll_interval_ms() -> u64 {
    250
}

impl MetadataConfig {
    /// The changelog files, `path` first.
    pub fn files(&self) -> Vec<PathBuf> {
        self.path.iter().chain(&self.paths).cloned().collect()
    }

    /// What the table is built from (for a stream table: its bootstrap).
    pub fn spec(&self) -> crate::metadata::TableSpec {
        crate::metadata::TableSpec {
            files: self.files(),
            aws_ip_ranges: self.aws_ip_ranges.clone(),
            internet: self.internet.unwrap_or(self.aws_ip_ranges.is_some()),
            retention: (self.retention_secs > 0).then_some(self.retention_secs),
        }
    }

    /// How often a `file` table's files are checked for changes (`None`: never, or not
    /// a `file` table).
    pub fn reload_interval(&self) -> Option<std::time::Duration> {
        (self.kind == MetadataKind::File && self.reload_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(self.reload_interval_ms))
    }

    /// The changelog stream of an `aws_kinesis_streams` table.
    pub fn stream(&self) -> Option<crate::metadata::stream::StreamSpec> {
        (self.kind == MetadataKind::AwsKinesisStreams).then(|| {
            crate::metadata::stream::StreamSpec {
                stream: stream_config(
                    &self.stream_name,
                    &self.stream_arn,
                    &self.endpoint,
                    &self.region,
                ),
                start: match self.start_position {
                    MetadataStart::TrimHorizon => crate::kinesis::StartAt::TrimHorizon,
                    MetadataStart::Latest => crate::kinesis::StartAt::Latest,
                },
                poll_interval: std::time::Duration::from_millis(self.poll_interval_ms.max(1)),
            }
        })
    }
}

/// A source of flow-log lines.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Files: one file, a directory (read recursively) or a glob; plain or gzip. Each
    /// file is its own stream, so an S3 header line applies to its own file only.
    File {
        /// File, directory or glob pattern (`data/**/*.log.gz`).
        path: String,
        /// Lines per batch sent downstream.
        #[serde(default = "default_batch_lines")]
        batch_lines: usize,
        /// Longest line taken, in bytes; a longer line goes to `<id>.dead_letter` with
        /// its first 1 KiB and its length (counted as `line_too_long`).
        #[serde(default = "default_max_line_bytes")]
        max_line_bytes: usize,
    },
    /// Standard input, read until end of file.
    Stdin {
        /// Lines per batch sent downstream (a partial batch is sent when input pauses).
        #[serde(default = "default_batch_lines")]
        batch_lines: usize,
        /// Longest line taken, in bytes; a longer line goes to `<id>.dead_letter` with
        /// its first 1 KiB and its length (counted as `line_too_long`).
        #[serde(default = "default_max_line_bytes")]
        max_line_bytes: usize,
    },
    /// A Kinesis data stream of flow logs, every shard; runs until shutdown.
    AwsKinesisStreams {
        /// The stream's name (or `stream_arn`).
        #[serde(default)]
        stream_name: Option<String>,
        /// The stream's ARN (or `stream_name`).
        #[serde(default)]
        stream_arn: Option<String>,
        /// Endpoint override, e.g. a local Kinesis. Default: AWS's for the region.
        #[serde(default)]
        endpoint: Option<String>,
        /// Region. Default: the standard AWS configuration chain.
        #[serde(default)]
        region: Option<String>,
        /// `trim_horizon` (default), `latest` or `at_timestamp` (with `start_timestamp`).
        #[serde(default)]
        start_position: SourceStart,
        /// Epoch seconds to start at, for `start_position = "at_timestamp"`.
        #[serde(default)]
        start_timestamp: Option<i64>,
        /// `auto` (default: gzip records are CloudWatch Logs envelopes, others text),
        /// `cloudwatch_logs` or `text`.
        #[serde(default)]
        record_format: crate::sources::kinesis::RecordFormat,
        /// Lines per batch sent downstream.
        #[serde(default = "default_batch_lines")]
        batch_lines: usize,
        /// Pause between polls of the shards, in milliseconds (at least 200). Default 200.
        #[serde(default = "default_source_poll_interval_ms")]
        poll_interval_ms: u64,
        /// The checkpoint store (a JSON file, replaced atomically). Default:
        /// `.flowenrich/<source id>.checkpoints.json` next to the pipeline file. Not
        /// with `leases`, which keep the checkpoints in their table.
        #[serde(default)]
        checkpoints: Option<PathBuf>,
        /// Share the stream with other hosts through a DynamoDB lease table
        /// (`[sources.<id>.leases]`); without it, this host reads every shard.
        #[serde(default)]
        leases: Option<Box<LeasesConfig>>,
        /// Longest line taken, in bytes; a longer line goes to `<id>.dead_letter` with
        /// its first 1 KiB and its length (counted as `line_too_long`).
        #[serde(default = "default_max_line_bytes")]
        max_line_bytes: usize,
        /// Most bytes one record may inflate to (gzip); a record that inflates further
        /// goes to `<id>.dead_letter` (counted as `record_too_large`). Default 16 MiB.
        #[serde(default = "default_max_record_bytes")]
        max_record_bytes: usize,
        /// The in-flight budget, in MiB, for two things, each bounded by it on its own:
        /// GetRecords answers being read (shards are read at most
        /// `max_in_flight_mib / 10` at a time, since an answer can hold 10 MiB), and
        /// the inflated text of this source's batches that are still anywhere in the
        /// pipeline (the source waits before sending more, counted as
        /// `in_flight_budget_waits_total`). Default 256 (25 reads at a time).
        #[serde(default = "default_max_in_flight_mib")]
        max_in_flight_mib: usize,
    },
}

fn default_max_line_bytes() -> usize {
    crate::sources::DEFAULT_MAX_LINE_BYTES
}

fn default_max_record_bytes() -> usize {
    16 << 20
}

fn default_max_in_flight_mib() -> usize {
    256
}

/// A Kinesis source's lease table: the KCL's way for a fleet of hosts to share a stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesConfig {
    /// The DynamoDB table, created (on-demand capacity) if missing. One per source.
    pub table_name: String,
    /// Endpoint override, e.g. a local DynamoDB. Default: AWS's for the region.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region. Default: the standard AWS configuration chain.
    #[serde(default)]
    pub region: Option<String>,
    /// This host's id in the fleet; must be unique among running hosts. Default:
    /// `<hostname>-<process id>-<random>`.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Milliseconds without renewal after which another host may take a lease (the
    /// failover time). Leases are renewed three times per period. Default 10,000.
    #[serde(default = "default_lease_duration_ms")]
    pub lease_duration_ms: u64,
    /// Milliseconds between scans of the table for leases to take or ask for. Default
    /// 1,000.
    #[serde(default = "default_lease_scan_interval_ms")]
    pub scan_interval_ms: u64,
    /// Milliseconds between checkpoint writes per shard (what a crash may re-deliver).
    /// Default 1,000.
    #[serde(default = "default_lease_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

fn default_lease_duration_ms() -> u64 {
    10_000
}

fn default_lease_scan_interval_ms() -> u64 {
    1_000
}

fn default_lease_checkpoint_interval_ms() -> u64 {
    1_000
}

/// `<hostname>-<process id>-<random>`: unique among the processes of a fleet, even in
/// containers that share a hostname and all run as process 1.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "flowenrich".to_string());
    let random = crate::kinesis::random_u64() as u32;
    format!("{host}-{}-{random:08x}", std::process::id())
}

impl LeasesConfig {
    /// The lease settings of the source.
    pub fn spec(&self) -> crate::leases::LeaseSpec {
        crate::leases::LeaseSpec {
            table: self.table_name.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            worker: self.worker_id.clone().unwrap_or_else(default_worker_id),
            lease_duration: std::time::Duration::from_millis(self.lease_duration_ms),
            scan_interval: std::time::Duration::from_millis(self.scan_interval_ms),
            checkpoint_interval: std::time::Duration::from_millis(self.checkpoint_interval_ms),
        }
    }
}

/// Where a Kinesis source starts reading a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStart {
    /// The oldest retained record.
    #[default]
    TrimHorizon,
    /// Records written after the source starts.
    Latest,
    /// Records written at or after `start_timestamp`.
    AtTimestamp,
}

fn default_source_poll_interval_ms() -> u64 {
    200
}

impl SourceConfig {
    /// The Kinesis settings of an `aws_kinesis_streams` source.
    pub fn kinesis(&self) -> Option<crate::sources::kinesis::KinesisSourceSpec> {
        let SourceConfig::AwsKinesisStreams {
            stream_name,
            stream_arn,
            endpoint,
            region,
            start_position,
            start_timestamp,
            record_format,
            batch_lines,
            poll_interval_ms,
            checkpoints,
            leases,
            max_line_bytes,
            max_record_bytes,
            max_in_flight_mib,
        } = self
        else {
            return None;
        };
        let start = match start_position {
            SourceStart::TrimHorizon => crate::kinesis::StartAt::TrimHorizon,
            SourceStart::Latest => crate::kinesis::StartAt::Latest,
            SourceStart::AtTimestamp => {
                crate::kinesis::StartAt::Timestamp(start_timestamp.unwrap_or_default())
            }
        };
        Some(crate::sources::kinesis::KinesisSourceSpec {
            stream: stream_config(stream_name, stream_arn, endpoint, region),
            start,
            format: *record_format,
            batch_lines: *batch_lines,
            poll_interval: std::time::Duration::from_millis(*poll_interval_ms),
            checkpoints: checkpoints.clone().unwrap_or_default(),
            leases: leases.as_deref().map(LeasesConfig::spec),
            max_line_bytes: *max_line_bytes,
            max_record_bytes: *max_record_bytes,
            max_in_flight_bytes: max_in_flight_mib.saturating_mul(1 << 20),
        })
    }
}

/// The stream settings every `aws_kinesis_streams` table, source and sink has.
fn stream_config(
    name: &Option<String>,
    arn: &Option<String>,
    endpoint: &Option<String>,
    region: &Option<String>,
) -> crate::kinesis::StreamConfig {
    crate::kinesis::StreamConfig {
        stream: crate::kinesis::StreamRef {
            name: name.clone(),
            arn: arn.clone(),
        },
        endpoint: endpoint.clone(),
        region: region.clone(),
    }
}

impl SinkConfig {
    /// The Kinesis settings of an `aws_kinesis_streams` sink.
    /// The spec of a `druid` sink.
    pub fn druid(&self) -> Option<crate::sinks::druid::DruidSpec> {
        let SinkConfig::Druid {
            data_source,
            dimensions,
            granularity_secs,
            flush_interval_secs,
            path,
            append,
            overlord_url,
            stream_name,
            stream_arn,
            endpoint,
            region,
            ..
        } = self
        else {
            return None;
        };
        let output = match path {
            Some(path) => crate::sinks::druid::DruidOutput::Files {
                dir: path.clone(),
                append: *append,
            },
            None => {
                crate::sinks::druid::DruidOutput::Kinesis(crate::sinks::kinesis::KinesisSinkSpec {
                    stream: stream_config(stream_name, stream_arn, endpoint, region),
                    partition_key: crate::sinks::kinesis::PartitionKey::Spread,
                })
            }
        };
        Some(crate::sinks::druid::DruidSpec {
            data_source: data_source.clone(),
            dimensions: dimensions.clone().unwrap_or_else(|| {
                crate::sinks::druid::DEFAULT_DIMENSIONS
                    .iter()
                    .map(|d| d.to_string())
                    .collect()
            }),
            granularity_secs: *granularity_secs,
            flush_interval: std::time::Duration::from_secs(*flush_interval_secs),
            output,
            overlord_url: overlord_url.clone(),
        })
    }

    /// The spec of an `aws_kinesis_streams` sink.
    pub fn kinesis(&self) -> Option<crate::sinks::kinesis::KinesisSinkSpec> {
        let SinkConfig::AwsKinesisStreams {
            stream_name,
            stream_arn,
            endpoint,
            region,
            partition_key_field,
            ..
        } = self
        else {
            return None;
        };
        Some(crate::sinks::kinesis::KinesisSinkSpec {
            stream: stream_config(stream_name, stream_arn, endpoint, region),
            partition_key: partition_key_field.clone().map_or(
                crate::sinks::kinesis::PartitionKey::Spread,
                crate::sinks::kinesis::PartitionKey::Field,
            ),
        })
    }
}

/// A transform.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Parse and enrich flow-log lines with a WebAssembly component. Outputs enriched
    /// JSON on `<id>` and rejected lines on `<id>.dead_letter`.
    Wasm {
        /// Upstream component ids.
        inputs: Vec<String>,
        /// Component file (`.wasm`); default: the component built into flowenrich.
        #[serde(default)]
        component: Option<PathBuf>,
        /// Name of the `[metadata.<name>]` table to attribute with; none = unattributed.
        #[serde(default)]
        metadata: Option<String>,
        /// Flow-log format (`${version} ${srcaddr} ...` or plain names); default AWS v2.
        /// S3 header lines override it for the rest of their file.
        #[serde(default)]
        format: Option<String>,
        /// Longest time one batch may run inside the component, in milliseconds.
        #[serde(default = "default_batch_timeout_ms")]
        batch_timeout_ms: u64,
        /// Largest linear memory of one component instance, in MiB.
        #[serde(default = "default_memory_limit_mib")]
        memory_limit_mib: usize,
        /// Seconds a flow with an unattributed side may be held back, waiting for the
        /// metadata table to change; it is retried after every change and emitted
        /// unattributed when the time is up (or at shutdown). 0 (the default) holds nothing.
        #[serde(default)]
        holdback_secs: u64,
        /// Most lines held back at once; over it the oldest are released unattributed
        /// (counted in `holdback_overflow_total`).
        #[serde(default = "default_holdback_max_lines")]
        holdback_max_lines: usize,
        /// Most bytes of held lines at once, in MiB; over it the oldest are released
        /// unattributed (counted in `holdback_overflow_total`).
        #[serde(default = "default_holdback_max_mib")]
        holdback_max_mib: usize,
        /// How often `component`'s file is checked for a new version to hot-swap in, in
        /// milliseconds; 0 checks only on SIGHUP or `POST /reload`. Ignored without
        /// `component` (the built-in component never changes).
        #[serde(default = "default_component_reload_ms")]
        reload_interval_ms: u64,
        /// A fixtures directory (`<dir>/<case>/input.log`, `expected.jsonl`, ...; see
        /// `flowenrich test`) that a new component must pass before it is swapped in.
        #[serde(default)]
        fixtures: Option<PathBuf>,
    },
}

fn default_holdback_max_lines() -> usize {
    100_000
}

fn default_holdback_max_mib() -> usize {
    64
}

fn default_component_reload_ms() -> u64 {
    1000
}

/// A sink.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Every line as one record of a Kinesis data stream (PutRecords, retried until
    /// accepted).
    AwsKinesisStreams {
        /// Upstream component ids.
        inputs: Vec<String>,
        /// The stream's name (or `stream_arn`).
        #[serde(default)]
        stream_name: Option<String>,
        /// The stream's ARN (or `stream_name`).
        #[serde(default)]
        stream_arn: Option<String>,
        /// Endpoint override, e.g. a local Kinesis. Default: AWS's for the region.
        #[serde(default)]
        endpoint: Option<String>,
        /// Region. Default: the standard AWS configuration chain.
        #[serde(default)]
        region: Option<String>,
        /// Top-level JSON field whose value is the partition key (e.g. `srcaddr`);
        /// default (or a line without it): a hash of the line, spread over the shards.
        #[serde(default)]
        partition_key_field: Option<String>,
    },
    /// Newline-delimited JSON (or whatever lines arrive) to a file.
    File {
        /// Upstream component ids (`enrich`, `enrich.dead_letter`, ...).
        inputs: Vec<String>,
        /// Output file; parent directories are created.
        path: PathBuf,
        /// Append instead of truncating an existing file.
        #[serde(default)]
        append: bool,
    },
    /// Flows rolled up per time bucket and dimensions, as Druid rolls them up, and
    /// delivered as JSON rows: to a Kinesis stream that a Druid Kinesis supervisor
    /// ingests (`stream_name`/`stream_arn`; `flowenrich druid-spec` prints that
    /// supervisor's spec), or to NDJSON files per bucket in `path`.
    Druid {
        /// Upstream component ids (enriched JSON).
        inputs: Vec<String>,
        /// Druid's dataSource.
        #[serde(default = "default_data_source")]
        data_source: String,
        /// Dimensions to roll up on (output keys of the enriched flows); default:
        /// src/dst app, cluster, account, region and zone, protocol, action and
        /// flow_direction.
        #[serde(default)]
        dimensions: Option<Vec<String>>,
        /// Bucket width in seconds (Druid's queryGranularity).
        #[serde(default = "default_granularity_secs")]
        granularity_secs: u64,
        /// How often rolled-up rows are written, in seconds (rows of one bucket may be
        /// split across writes; Druid's rollup sums them again).
        #[serde(default = "default_flush_interval_secs")]
        flush_interval_secs: u64,
        /// A directory for NDJSON files per bucket (instead of a stream): rows of
        /// sources without positions are appended to `flows-<bucket>.ndjson`; each
        /// publication of a Kinesis source's rows writes `flows-<bucket>.<id>.ndjson`.
        #[serde(default)]
        path: Option<PathBuf>,
        /// With `path`: add to the bucket files already there instead of starting them
        /// afresh (by default a run first removes the `flows-*.ndjson` files it would
        /// write).
        #[serde(default)]
        append: bool,
        /// A Druid Overlord (`http://host:8090`, or the Router, `http://host:8888`): the
        /// supervisor spec is submitted to it when the sink starts (`POST
        /// /druid/indexer/v1/supervisor?skipRestartIfUnmodified=true`, following a
        /// standby Overlord's redirect) and its answer logged. Plain HTTP only; rows flow
        /// whatever it answers.
        #[serde(default)]
        overlord_url: Option<String>,
        /// The stream's name (or `stream_arn`, or `path`).
        #[serde(default)]
        stream_name: Option<String>,
        /// The stream's ARN.
        #[serde(default)]
        stream_arn: Option<String>,
        /// Endpoint override, e.g. a local Kinesis. Default: AWS's for the region.
        #[serde(default)]
        endpoint: Option<String>,
        /// Region. Default: the standard AWS configuration chain.
        #[serde(default)]
        region: Option<String>,
    },
    /// Lines to standard output.
    Stdout {
        /// Upstream component ids.
        inputs: Vec<String>,
    },
    /// A human-readable traffic report printed when the pipeline ends: top application
    /// pairs by bytes, cross-region and cross-AZ bytes, rejected flows.
    Report {
        /// Upstream component ids (enriched JSON; dead letters are counted).
        inputs: Vec<String>,
        /// Attribute naming the application (`src_<key>` / `dst_<key>`).
        #[serde(default = "default_app_key")]
        app_key: String,
        /// Attribute naming the region.
        #[serde(default = "default_region_key")]
        region_key: String,
        /// Attribute naming the availability zone.
        #[serde(default = "default_zone_key")]
        zone_key: String,
        /// Rows per table.
        #[serde(default = "default_top")]
        top: usize,
        /// Write the report to this file instead of standard output.
        #[serde(default)]
        path: Option<PathBuf>,
    },
}

impl SinkConfig {
    /// Upstream component ids.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::File { inputs, .. }
            | SinkConfig::Stdout { inputs }
            | SinkConfig::Report { inputs, .. }
            | SinkConfig::AwsKinesisStreams { inputs, .. }
            | SinkConfig::Druid { inputs, .. } => inputs,
        }
    }
}

impl TransformConfig {
    /// Upstream component ids.
    pub fn inputs(&self) -> &[String] {
        match self {
            TransformConfig::Wasm { inputs, .. } => inputs,
        }
    }
}

fn default_data_source() -> String {
    "vpc_flows".into()
}

fn default_granularity_secs() -> u64 {
    60
}

fn default_flush_interval_secs() -> u64 {
    10
}

fn default_batch_lines() -> usize {
    1000
}
fn default_batch_timeout_ms() -> u64 {
    5000
}
fn default_memory_limit_mib() -> usize {
    512
}
fn default_app_key() -> String {
    "app".into()
}
fn default_region_key() -> String {
    "region".into()
}
fn default_zone_key() -> String {
    "zone".into()
}
fn default_top() -> usize {
    10
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The pipeline file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TOML syntax or an unknown/missing/mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The pipeline file.
        path: PathBuf,
        /// serde/toml's message, which names the key and line.
        message: String,
    },
    /// A semantic problem (bad reference, cycle, empty pipeline...).
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The pipeline file.
        path: PathBuf,
        /// Dotted key of the offending setting (`sinks.out.inputs`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A loaded pipeline with paths resolved and references checked.
#[derive(Debug)]
pub struct Pipeline {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its settings, with relative paths made absolute.
    pub config: PipelineConfig,
    /// The file's TOML as written (what a config reload compares against).
    pub toml: toml::Table,
}

impl Pipeline {
    /// Reads, parses and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Pipeline::parse(path, &text)
    }

    /// Parses and checks pipeline text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        resolve_paths(&mut config, &base);
        let pipeline = Pipeline {
            path: path.to_path_buf(),
            config,
            toml: toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?,
        };
        pipeline.check()?;
        Ok(pipeline)
    }

    /// Whether a Kinesis source (which resumes from checkpoints) feeds component `id`,
    /// directly or through transforms.
    fn fed_by_checkpointed_source(&self, id: &str) -> bool {
        let (sources, _) = self.upstream_of(id);
        sources.iter().any(|source| {
            matches!(
                self.config.sources.get(source),
                Some(SourceConfig::AwsKinesisStreams { .. })
            )
        })
    }

    /// The sources and transforms upstream of component `id` (through any number of
    /// transforms and dead-letter outputs).
    fn upstream_of(&self, id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let c = &self.config;
        let (mut sources, mut transforms) = (BTreeSet::new(), BTreeSet::new());
        let mut stack = vec![id.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(current) = stack.pop() {
            if !seen.insert(current.clone()) {
                continue;
            }
            let inputs: &[String] = match (c.sinks.get(&current), c.transforms.get(&current)) {
                (Some(sink), _) => sink.inputs(),
                (None, Some(transform)) => {
                    transforms.insert(current.clone());
                    transform.inputs()
                }
                (None, None) => &[],
            };
            for input in inputs {
                let upstream = input
                    .strip_suffix(&format!(".{DEAD_LETTER}"))
                    .unwrap_or(input);
                if c.sources.contains_key(upstream) {
                    sources.insert(upstream.to_string());
                } else {
                    stack.push(upstream.to_string());
                }
            }
        }
        (sources, transforms)
    }

    /// Whether transform `id` feeds a `druid` sink (directly or through transforms).
    pub fn feeds_druid(&self, id: &str) -> bool {
        self.config.sinks.iter().any(|(sink_id, sink)| {
            matches!(sink, SinkConfig::Druid { .. }) && self.upstream_of(sink_id).1.contains(id)
        })
    }

    /// What this pipeline delivers less strictly than exactly once into Druid (see
    /// docs/delivery.md): a `druid` sink fed by one source through two inputs.
    pub fn delivery_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (id, sink) in &self.config.sinks {
            if !matches!(sink, SinkConfig::Druid { .. }) {
                continue;
            }
            // The same source through two inputs: one path's publication can cover a
            // batch whose copy on the other path is not published yet.
            let mut paths: BTreeMap<String, usize> = BTreeMap::new();
            for input in sink.inputs() {
                let upstream = input
                    .strip_suffix(&format!(".{DEAD_LETTER}"))
                    .unwrap_or(input);
                let sources = if self.config.sources.contains_key(upstream) {
                    BTreeSet::from([upstream.to_string()])
                } else {
                    self.upstream_of(upstream).0
                };
                for source in sources {
                    *paths.entry(source).or_default() += 1;
                }
            }
            if paths.iter().any(|(source, n)| {
                *n > 1
                    && matches!(
                        self.config.sources.get(source),
                        Some(SourceConfig::AwsKinesisStreams { .. })
                    )
            }) {
                warnings.push(format!("sinks.{id}: reaches a Kinesis source through more than one input, a crash can leave the flows of one path out of Druid"));
            }
        }
        warnings
    }

    /// A Kinesis table, source or sink at `section` names its stream exactly once.
    fn one_stream(
        &self,
        section: String,
        name: &Option<String>,
        arn: &Option<String>,
    ) -> Result<(), ConfigError> {
        if name.is_some() == arn.is_some() {
            return Err(self.invalid(
                format!("{section}.stream_name"),
                "needs exactly one of `stream_name` and `stream_arn`",
            ));
        }
        Ok(())
    }

    /// A source's `[leases]`: a table name, workable intervals, no `checkpoints` beside.
    fn check_leases(
        &self,
        source: &str,
        leases: &LeasesConfig,
        checkpoints: bool,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("sources.{source}.leases.{k}");
        if checkpoints {
            return Err(self.invalid(
                format!("sources.{source}.checkpoints"),
                "cannot be set with `leases`: the checkpoints live in the lease table",
            ));
        }
        if leases.table_name.trim().is_empty() {
            return Err(self.invalid(key("table_name"), "must name a DynamoDB table"));
        }
        if leases
            .worker_id
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err(self.invalid(key("worker_id"), "must not be empty"));
        }
        if leases.lease_duration_ms < 300 {
            return Err(self.invalid(key("lease_duration_ms"), "must be at least 300"));
        }
        for (name, value) in [
            ("scan_interval_ms", leases.scan_interval_ms),
            ("checkpoint_interval_ms", leases.checkpoint_interval_ms),
        ] {
            if value == 0 || value >= leases.lease_duration_ms {
                return Err(self.invalid(
                    key(name),
                    "must be at least 1 and less than `lease_duration_ms`",
                ));
            }
        }
        Ok(())
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        if c.sources.is_empty() {
            return Err(self.invalid("sources", "a pipeline needs at least one source"));
        }
        if c.sinks.is_empty() {
            return Err(self.invalid("sinks", "a pipeline needs at least one sink"));
        }
        let mut ids = BTreeSet::new();
        let sections = [
            ("sources", c.sources.keys().collect::<Vec<_>>()),
            ("transforms", c.transforms.keys().collect()),
            ("sinks", c.sinks.keys().collect()),
        ];
        for (section, names) in &sections {
            for name in names {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                {
                    return Err(self.invalid(
                        format!("{section}.{name}"),
                        "component ids may only hold letters, digits, `_` and `-`",
                    ));
                }
                if !ids.insert(name.as_str()) {
                    return Err(
                        self.invalid(format!("{section}.{name}"), "component id used twice")
                    );
                }
            }
        }
        for (name, metadata) in &c.metadata {
            match metadata.kind {
                MetadataKind::File => {
                    if metadata.spec().watched_files().is_empty() {
                        return Err(self.invalid(
                            format!("metadata.{name}.path"),
                            "a file table needs `path`, `paths` or `aws_ip_ranges`",
                        ));
                    }
                    for (key, set) in [
                        ("stream_name", metadata.stream_name.is_some()),
                        ("stream_arn", metadata.stream_arn.is_some()),
                        ("endpoint", metadata.endpoint.is_some()),
                        ("region", metadata.region.is_some()),
                    ] {
                        if set {
                            return Err(self.invalid(
                                format!("metadata.{name}.{key}"),
                                "only an `aws_kinesis_streams` table reads a stream",
                            ));
                        }
                    }
                }
                MetadataKind::AwsKinesisStreams => self.one_stream(
                    format!("metadata.{name}"),
                    &metadata.stream_name,
                    &metadata.stream_arn,
                )?,
            }
        }
        for (name, source) in &c.sources {
            let (lines, max_line_bytes) = match source {
                SourceConfig::File {
                    batch_lines,
                    max_line_bytes,
                    ..
                }
                | SourceConfig::Stdin {
                    batch_lines,
                    max_line_bytes,
                }
                | SourceConfig::AwsKinesisStreams {
                    batch_lines,
                    max_line_bytes,
                    ..
                } => (*batch_lines, *max_line_bytes),
            };
            if max_line_bytes == 0 {
                return Err(self.invalid(
                    format!("sources.{name}.max_line_bytes"),
                    "must be at least 1",
                ));
            }
            if let SourceConfig::AwsKinesisStreams {
                max_record_bytes: 0,
                ..
            } = source
            {
                return Err(self.invalid(
                    format!("sources.{name}.max_record_bytes"),
                    "must be at least 1",
                ));
            }
            if let SourceConfig::AwsKinesisStreams {
                stream_name,
                stream_arn,
                start_position,
                start_timestamp,
                checkpoints,
                leases,
                ..
            } = source
            {
                self.one_stream(format!("sources.{name}"), stream_name, stream_arn)?;
                if let Some(leases) = leases {
                    self.check_leases(name, leases, checkpoints.is_some())?;
                }
                if (*start_position == SourceStart::AtTimestamp) != start_timestamp.is_some() {
                    return Err(self.invalid(
                        format!("sources.{name}.start_timestamp"),
                        "is required with, and only with, `start_position = \"at_timestamp\"`",
                    ));
                }
            }
            if lines == 0 {
                return Err(
                    self.invalid(format!("sources.{name}.batch_lines"), "must be at least 1")
                );
            }
        }
        for (name, sink) in &c.sinks {
            if let SinkConfig::AwsKinesisStreams {
                stream_name,
                stream_arn,
                ..
            } = sink
            {
                self.one_stream(format!("sinks.{name}"), stream_name, stream_arn)?;
            }
            if let SinkConfig::Druid {
                path,
                append,
                overlord_url,
                stream_name,
                stream_arn,
                granularity_secs,
                flush_interval_secs,
                dimensions,
                ..
            } = sink
            {
                if path.is_some() && overlord_url.is_some() {
                    return Err(self.invalid(
                        format!("sinks.{name}.overlord_url"),
                        "a supervisor ingests a stream; this sink writes files (`path`)",
                    ));
                }
                if path.is_some() && (stream_name.is_some() || stream_arn.is_some()) {
                    return Err(self.invalid(
                        format!("sinks.{name}.path"),
                        "writes to files or to a stream, not both",
                    ));
                }
                if path.is_none() {
                    self.one_stream(format!("sinks.{name}"), stream_name, stream_arn)?;
                }
                if crate::sinks::druid::segment_granularity(*granularity_secs).is_none() {
                    return Err(self.invalid(
                        format!("sinks.{name}.granularity_secs"),
                        "must divide an hour (1, 60, 300, 900, 3600, ...) or a day (7200, 21600, 86400, ...): Druid's segments are an hour or a day",
                    ));
                }
                if *flush_interval_secs == 0 {
                    return Err(self.invalid(
                        format!("sinks.{name}.flush_interval_secs"),
                        "must be at least 1",
                    ));
                }
                if let Some(dimensions) = dimensions {
                    if dimensions.is_empty() {
                        return Err(
                            self.invalid(format!("sinks.{name}.dimensions"), "names no dimension")
                        );
                    }
                    let mut seen = BTreeSet::new();
                    for dimension in dimensions {
                        if crate::sinks::druid::RESERVED_COLUMNS.contains(&dimension.as_str()) {
                            return Err(self.invalid(
                                format!("sinks.{name}.dimensions"),
                                format!("`{dimension}` is a column of every row already, or one Druid reserves"),
                            ));
                        }
                        if !seen.insert(dimension) {
                            return Err(self.invalid(
                                format!("sinks.{name}.dimensions"),
                                format!("`{dimension}` appears twice"),
                            ));
                        }
                    }
                }
                if path.is_some() && !*append && self.fed_by_checkpointed_source(name) {
                    return Err(self.invalid(
                        format!("sinks.{name}.append"),
                        "must be true when a Kinesis source feeds this sink: a restart resumes after the checkpoints and must not remove the rows of what it already read",
                    ));
                }
            }
        }
        for (name, transform) in &c.transforms {
            let TransformConfig::Wasm {
                metadata,
                batch_timeout_ms,
                memory_limit_mib,
                holdback_secs,
                ..
            } = transform;
            if *holdback_secs > 0 && metadata.is_none() {
                return Err(self.invalid(
                    format!("transforms.{name}.holdback_secs"),
                    "holding flows back needs a `metadata` table to wait for",
                ));
            }
            if let Some(table) = metadata
                && !c.metadata.contains_key(table)
            {
                return Err(self.invalid(
                    format!("transforms.{name}.metadata"),
                    format!("no [metadata.{table}] table is defined"),
                ));
            }
            if *batch_timeout_ms == 0 {
                return Err(self.invalid(
                    format!("transforms.{name}.batch_timeout_ms"),
                    "must be at least 1",
                ));
            }
            if *memory_limit_mib == 0 {
                return Err(self.invalid(
                    format!("transforms.{name}.memory_limit_mib"),
                    "must be at least 1",
                ));
            }
            self.check_inputs(&format!("transforms.{name}.inputs"), transform.inputs())?;
        }
        for (name, sink) in &c.sinks {
            self.check_inputs(&format!("sinks.{name}.inputs"), sink.inputs())?;
        }
        self.check_acyclic()
    }

    fn check_inputs(&self, key: &str, inputs: &[String]) -> Result<(), ConfigError> {
        if inputs.is_empty() {
            return Err(self.invalid(key, "needs at least one input"));
        }
        for input in inputs {
            let (id, output) = match input.split_once('.') {
                Some((id, output)) => (id, Some(output)),
                None => (input.as_str(), None),
            };
            let known = match output {
                None => {
                    self.config.sources.contains_key(id) || self.config.transforms.contains_key(id)
                }
                Some(DEAD_LETTER) => {
                    self.config.transforms.contains_key(id) || self.config.sources.contains_key(id)
                }
                Some(_) => false,
            };
            if !known {
                return Err(self.invalid(
                    key,
                    format!("unknown input `{input}` (inputs name a source, a transform, or `<transform or source>.{DEAD_LETTER}`)"),
                ));
            }
        }
        Ok(())
    }

    fn check_acyclic(&self) -> Result<(), ConfigError> {
        // Depth-first over transforms; sources have no inputs.
        fn visit<'a>(
            config: &'a PipelineConfig,
            id: &'a str,
            stack: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Result<(), String> {
            if done.contains(id) {
                return Ok(());
            }
            if stack.contains(&id) {
                return Err(id.to_string());
            }
            let Some(transform) = config.transforms.get(id) else {
                return Ok(());
            };
            stack.push(id);
            for input in transform.inputs() {
                let upstream = input.split_once('.').map_or(input.as_str(), |(id, _)| id);
                visit(config, upstream, stack, done)?;
            }
            stack.pop();
            done.insert(id);
            Ok(())
        }
        let mut done = BTreeSet::new();
        for id in self.config.transforms.keys() {
            visit(&self.config, id, &mut Vec::new(), &mut done).map_err(|at| {
                self.invalid(format!("transforms.{at}.inputs"), "transforms form a cycle")
            })?;
        }
        Ok(())
    }
}

fn resolve_paths(config: &mut PipelineConfig, base: &Path) {
    let resolve = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    };
    for metadata in config.metadata.values_mut() {
        metadata.path.iter_mut().for_each(resolve);
        metadata.paths.iter_mut().for_each(resolve);
        metadata.aws_ip_ranges.iter_mut().for_each(resolve);
    }
    for (id, source) in config.sources.iter_mut() {
        if let SourceConfig::File { path, .. } = source
            && Path::new(path.as_str()).is_relative()
        {
            *path = base.join(&*path).to_string_lossy().into_owned();
        }
        if let SourceConfig::AwsKinesisStreams {
            checkpoints,
            leases: None,
            ..
        } = source
        {
            let path = checkpoints
                .get_or_insert_with(|| PathBuf::from(format!(".flowenrich/{id}.checkpoints.json")));
            resolve(path);
        }
    }
    for transform in config.transforms.values_mut() {
        let TransformConfig::Wasm {
            component,
            fixtures,
            ..
        } = transform;
        component.iter_mut().for_each(resolve);
        fixtures.iter_mut().for_each(resolve);
    }
    for sink in config.sinks.values_mut() {
        match sink {
            SinkConfig::File { path, .. } => resolve(path),
            SinkConfig::Report { path, .. } => path.iter_mut().for_each(resolve),
            SinkConfig::Druid { path, .. } => path.iter_mut().for_each(resolve),
            SinkConfig::Stdout { .. } | SinkConfig::AwsKinesisStreams { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::parse(Path::new("/etc/p/pipeline.toml"), text)
    }

    #[test]
    fn delivery_warnings_name_what_is_not_exactly_once() {
        let pipeline = |leases: &str, holdback: u64| {
            parse(&format!(
                r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"

[sources.flows]
type = "aws_kinesis_streams"
stream_name = "f"
region = "us-east-1"
{leases}

[transforms.t]
type = "wasm"
inputs = ["flows"]
metadata = "apps"
holdback_secs = {holdback}

[sinks.d]
type = "druid"
inputs = ["t"]
stream_name = "rollups"
region = "us-east-1"
"#
            ))
            .unwrap()
            .delivery_warnings()
        };
        assert!(pipeline("", 0).is_empty());
        // A fleet is exact too: publications go to the shards' lease rows.
        assert!(pipeline("[sources.flows.leases]\ntable_name = \"t\"", 0).is_empty());
        // Holdback is exact: the transform sends batches whole (whole-batch mode).
        assert!(pipeline("", 60).is_empty());
    }

    const GOOD: &str = r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"

[sources.flows]
type = "file"
path = "flows/*.log.gz"

[transforms.enrich]
type = "wasm"
inputs = ["flows"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "/tmp/out.ndjson"

[sinks.rejects]
type = "stdout"
inputs = ["enrich.dead_letter"]
"#;

    #[test]
    fn good_pipeline_resolves_relative_paths() {
        let p = parse(GOOD).unwrap();
        assert_eq!(
            p.config.metadata["apps"].files(),
            vec![PathBuf::from("/etc/p/apps.jsonl")]
        );
        let SourceConfig::File {
            path, batch_lines, ..
        } = &p.config.sources["flows"]
        else {
            panic!()
        };
        assert_eq!(path, "/etc/p/flows/*.log.gz");
        assert_eq!(*batch_lines, 1000);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("inputs = [\"flows\"]", "inputs = [\"nope\"]"),
                "transforms.enrich.inputs",
            ),
            (
                GOOD.replace("metadata = \"apps\"", "metadata = \"other\""),
                "transforms.enrich.metadata",
            ),
            (
                GOOD.replace("metadata = \"apps\"", "holdback_secs = 60"),
                "transforms.enrich.holdback_secs",
            ),
            (
                GOOD.replace(
                    "type = \"file\"\ninputs = [\"enrich\"]\npath = \"/tmp/out.ndjson\"",
                    "type = \"aws_kinesis_streams\"\ninputs = [\"enrich\"]",
                ),
                "sinks.out.stream_name",
            ),
            (
                GOOD.replace(
                    "path = \"apps.jsonl\"",
                    "path = \"apps.jsonl\"\nstream_name = \"x\"",
                ),
                "metadata.apps.stream_name",
            ),
            (
                GOOD.replace(
                    "type = \"file\"\npath = \"apps.jsonl\"",
                    "type = \"aws_kinesis_streams\"",
                ),
                "metadata.apps.stream_name",
            ),
            (
                GOOD.replace(
                    "type = \"file\"\npath = \"apps.jsonl\"",
                    "type = \"aws_kinesis_streams\"\nstream_name = \"a\"\nstream_arn = \"b\"",
                ),
                "metadata.apps.stream_name",
            ),
            (
                GOOD.replace("enrich.dead_letter", "enrich.errors"),
                "sinks.rejects.inputs",
            ),
            (
                GOOD.replace("type = \"stdout\"", "type = \"stdout\"\ncolour = 1"),
                "colour",
            ),
            (
                GOOD.replace("type = \"stdout\"", "type = \"kafka\""),
                "kafka",
            ),
            (
                GOOD.replace("[sinks.rejects]", "[sinks.enrich]"),
                "sinks.enrich",
            ),
        ];
        for (text, key) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(key), "{message} should name {key}");
            assert!(message.contains("/etc/p/pipeline.toml"), "{message}");
        }
    }

    #[test]
    fn lease_tables_are_checked() {
        let source = |extra: &str, leases: &str| {
            GOOD.replace(
                "type = \"file\"\npath = \"flows/*.log.gz\"",
                &format!(
                    "type = \"aws_kinesis_streams\"\nstream_name = \"f\"\n{extra}\n[sources.flows.leases]\n{leases}"
                ),
            )
        };
        let good = parse(&source("", "table_name = \"t\"\nworker_id = \"w1\"")).unwrap();
        let spec = good.config.sources["flows"].kinesis().unwrap();
        let leases = spec.leases.expect("leases");
        assert_eq!((leases.table.as_str(), leases.worker.as_str()), ("t", "w1"));
        assert_eq!(leases.lease_duration, std::time::Duration::from_secs(10));
        assert_eq!(leases.renew_interval(), leases.lease_duration / 3);
        let defaulted = parse(&source("", "table_name = \"t\"")).unwrap();
        let worker = defaulted.config.sources["flows"]
            .kinesis()
            .unwrap()
            .leases
            .unwrap()
            .worker;
        assert!(
            worker.contains(&format!("-{}-", std::process::id())),
            "{worker}"
        );
        for (text, key) in [
            (
                source("checkpoints = \"c.json\"", "table_name = \"t\""),
                "sources.flows.checkpoints",
            ),
            (
                source("", "table_name = \" \""),
                "sources.flows.leases.table_name",
            ),
            (
                source("", "table_name = \"t\"\nworker_id = \"\""),
                "sources.flows.leases.worker_id",
            ),
            (
                source("", "table_name = \"t\"\nlease_duration_ms = 100"),
                "sources.flows.leases.lease_duration_ms",
            ),
            (
                source("", "table_name = \"t\"\nscan_interval_ms = 10000"),
                "sources.flows.leases.scan_interval_ms",
            ),
            (
                source("", "table_name = \"t\"\ncheckpoint_interval_ms = 0"),
                "sources.flows.leases.checkpoint_interval_ms",
            ),
            (source("", "table_name = \"t\"\nlease_ms = 5"), "lease_ms"),
            (source("", "worker_id = \"w\""), "table_name"),
        ] {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(key), "{message} should name {key}");
        }
    }

    #[test]
    fn druid_sinks_are_checked() {
        let druid = |source: &str, sink: &str| {
            format!(
                "[sources.s]\n{source}\n[transforms.t]\ntype = \"wasm\"\ninputs = [\"s\"]\n[sinks.d]\ntype = \"druid\"\ninputs = [\"t\"]\n{sink}\n"
            )
        };
        let stdin = "type = \"stdin\"";
        let kinesis = "type = \"aws_kinesis_streams\"\nstream_name = \"f\"";
        assert!(parse(&druid(stdin, "path = \"d\"")).is_ok());
        assert!(parse(&druid(kinesis, "path = \"d\"\nappend = true")).is_ok());
        assert!(parse(&druid(kinesis, "stream_name = \"r\"")).is_ok());
        for (sink, source, key, why) in [
            ("path = \"d\"", kinesis, "sinks.d.append", "checkpoints"),
            ("", stdin, "sinks.d.stream_name", "exactly one"),
            (
                "path = \"d\"\nstream_name = \"r\"",
                stdin,
                "sinks.d.path",
                "not both",
            ),
            (
                "path = \"d\"\noverlord_url = \"http://o\"",
                stdin,
                "sinks.d.overlord_url",
                "stream",
            ),
            (
                "path = \"d\"\ndimensions = [\"a\", \"a\"]",
                stdin,
                "sinks.d.dimensions",
                "twice",
            ),
            (
                "path = \"d\"\ndimensions = [\"bytes\"]",
                stdin,
                "sinks.d.dimensions",
                "column",
            ),
            (
                "path = \"d\"\ndimensions = []",
                stdin,
                "sinks.d.dimensions",
                "no dimension",
            ),
            (
                "path = \"d\"\ngranularity_secs = 0",
                stdin,
                "sinks.d.granularity_secs",
                "must divide an hour",
            ),
            (
                "path = \"d\"\ngranularity_secs = 7000",
                stdin,
                "sinks.d.granularity_secs",
                "or a day",
            ),
            (
                "path = \"d\"\ndimensions = [\"__time\"]",
                stdin,
                "sinks.d.dimensions",
                "Druid reserves",
            ),
            (
                "path = \"d\"\ndimensions = [\"sink_rows\"]",
                stdin,
                "sinks.d.dimensions",
                "Druid reserves",
            ),
        ] {
            let message = parse(&druid(source, sink)).unwrap_err().to_string();
            assert!(
                message.contains(key) && message.contains(why),
                "{sink}: {message}"
            );
        }
    }

    #[test]
    fn cycles_are_refused() {
        let text = r#"
[sources.s]
type = "stdin"
[transforms.a]
type = "wasm"
inputs = ["s", "b"]
[transforms.b]
type = "wasm"
inputs = ["a"]
[sinks.o]
type = "stdout"
inputs = ["b"]
"#;
        assert!(parse(text).unwrap_err().to_string().contains("cycle"));
    }
}
