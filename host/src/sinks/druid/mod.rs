//! The `druid` sink: enriched flows rolled up per time bucket and dimensions, the way
//! Druid itself rolls them up, then delivered as JSON rows either to a Kinesis stream
//! that a Druid Kinesis supervisor ingests or to local NDJSON files (one per bucket).
//!
//! Each row is `{"timestamp": <bucket start, epoch ms>, <dimension>: <value>, ...,
//! "flows": n, "bytes": sum, "packets": sum}`. The bucket is the flow's `start` rounded
//! down to `granularity_secs`. Partial aggregates are written every `flush_interval_secs`
//! (and at shutdown): two rows with the same bucket and dimensions are summed again by
//! Druid's rollup (`longSum`), so splitting a bucket across flushes changes no query
//! result. The batches a flush covers are acknowledged upstream only once its rows are
//! written (for Kinesis: accepted by PutRecords), so the source's checkpoints stay end to
//! end. [`supervisor_spec`] derives the matching Druid supervisor spec.
//!
//! Exactly once: the rows of batches from a checkpointed (Kinesis) source go out as
//! *publications* logged beside the checkpoint file ([`Checkpoints::begin_publication`]
//! before any row goes out, [`Checkpoints::end_publication`] before the batches are
//! acknowledged). After a crash the first batch of a store settles its pending
//! publication (the stream read back and only missing rows written; files replaced
//! whole), and batches wholly at or before a shard's published position, as it was when
//! the run first saw the shard, are skipped: they are a reading again. The steps and
//! what a crash at each leaves are in `docs/delivery.md`.
//!
//! From a source with a lease table, each publication covers one shard holding and is
//! logged in the shard's lease row ([`crate::sources::aws_kinesis::leases::publications`]); batches of a holding
//! that is gone are left to the shard's next holder (forsaken, never acknowledged).

mod overlord;
mod publish;
mod rollup;
mod shards;
mod spec;

pub use overlord::{OverlordError, submit};
pub use publish::{write_files, write_publication_files};
pub use rollup::{Drained, Rollup, Router, Skipped, bucket_name};
pub use spec::{SpecError, segment_granularity, supervisor_spec};

use crate::aws::kinesis::StreamConfig;
use crate::config::{BuildError, Invalid, Upstream};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::aws_kinesis::{KinesisSinkSpec, KinesisWriter, PartitionKey};
use crate::sinks::{BuiltSink, PathError, SinkError, SinkKind};
use crate::topology::output::{Ended, Input};
use publish::{Pending, Published, Publisher, Writer, scope_of, start_afresh};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shards::Shards;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `druid` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids (enriched JSON).
    pub inputs: Vec<String>,
    /// Druid's dataSource.
    #[serde(default = "default_data_source")]
    pub data_source: String,
    /// Dimensions to roll up on (output keys of the enriched flows); default: src/dst
    /// app, cluster, account, region and zone, protocol, action and flow_direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Vec<String>>,
    /// Bucket width in seconds (Druid's queryGranularity); must divide an hour or a day.
    #[serde(default = "default_granularity_secs")]
    pub granularity_secs: u64,
    /// How often rolled-up rows are written, in seconds (rows of one bucket may be split
    /// across writes; Druid's rollup sums them again).
    #[serde(default = "default_flush_interval_secs")]
    pub flush_interval_secs: u64,
    /// A directory for NDJSON files per bucket (instead of a stream), relative to the
    /// pipeline file: rows of sources without positions are appended to
    /// `flows-<bucket>.ndjson`; each publication of a Kinesis source's rows writes
    /// `flows-<bucket>.<id>.ndjson`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// With `path`: add to the bucket files already there instead of starting them
    /// afresh (by default a run first removes the `flows-*.ndjson` files it would
    /// write). Required when a Kinesis source feeds the sink.
    #[serde(default)]
    pub append: bool,
    /// A Druid Overlord (`http://host:8090`, or the Router, `http://host:8888`): the
    /// supervisor spec is submitted to it when the sink starts (`POST
    /// /druid/indexer/v1/supervisor?skipRestartIfUnmodified=true`, following a standby
    /// Overlord's redirect; `https://` works too) and its answer logged. Rows flow
    /// whatever it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlord_url: Option<String>,
    /// Threads rolling up the batches a `wasm` transform hands over as columns: the
    /// sink's own and helpers, each summing the flows of a share of the keys (nothing
    /// is merged), and rendering rows at each flush. Default: half the cores available
    /// (at least 1): rolling up takes less CPU per flow than the component, whose
    /// workers use the other half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// The output stream (`stream_name` or `stream_arn`, with `endpoint` and `region`),
    /// unless `path` is set.
    #[serde(flatten)]
    pub stream: StreamConfig,
}

fn default_data_source() -> String {
    "vpc_flows".into()
}

fn default_granularity_secs() -> u64 {
    60
}

/// The sink's threads when a pipeline names none: half the cores (see
/// [`Config::workers`]).
fn default_workers() -> usize {
    (crate::util::cores() / 2).max(1)
}

fn default_flush_interval_secs() -> u64 {
    10
}

impl Config {
    /// What the running sink uses.
    pub fn spec(&self) -> DruidSpec {
        let output = match &self.path {
            Some(dir) => DruidOutput::Files {
                dir: dir.clone(),
                append: self.append,
            },
            None => DruidOutput::Kinesis(KinesisSinkSpec {
                stream: self.stream.clone(),
                partition_key: PartitionKey::Spread,
            }),
        };
        DruidSpec {
            data_source: self.data_source.clone(),
            dimensions: self
                .dimensions
                .clone()
                .unwrap_or_else(|| DEFAULT_DIMENSIONS.iter().map(|d| d.to_string()).collect()),
            granularity_secs: self.granularity_secs,
            flush_interval: Duration::from_secs(self.flush_interval_secs),
            output,
            overlord_url: self.overlord_url.clone(),
            workers: self.workers.unwrap_or_else(default_workers),
        }
    }

    fn validate_dimensions(&self, key: &str) -> Result<(), Invalid> {
        let Some(dimensions) = &self.dimensions else {
            return Ok(());
        };
        let key = format!("{key}.dimensions");
        if dimensions.is_empty() {
            return Err(Invalid::new(key, "names no dimension"));
        }
        let mut seen = BTreeSet::new();
        for dimension in dimensions {
            if RESERVED_COLUMNS.contains(&dimension.as_str()) {
                return Err(Invalid::new(
                    key,
                    format!(
                        "`{dimension}` is a column of every row already, or one Druid reserves"
                    ),
                ));
            }
            if !seen.insert(dimension) {
                return Err(Invalid::new(key, format!("`{dimension}` appears twice")));
            }
        }
        Ok(())
    }
}

impl SinkKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn validate(&self, key: &str, upstream: &Upstream) -> Result<(), Invalid> {
        if self.path.is_some() && self.overlord_url.is_some() {
            return Err(Invalid::new(
                format!("{key}.overlord_url"),
                "a supervisor ingests a stream; this sink writes files (`path`)",
            ));
        }
        if self.path.is_some() && self.stream.is_set() {
            return Err(Invalid::new(
                format!("{key}.path"),
                "writes to files or to a stream, not both",
            ));
        }
        if self.path.is_none() {
            self.stream.validate(key)?;
        }
        if segment_granularity(self.granularity_secs).is_none() {
            return Err(Invalid::new(
                format!("{key}.granularity_secs"),
                "must divide an hour (1, 60, 300, 900, 3600, ...) or a day (7200, 21600, 86400, ...): Druid's segments are an hour or a day",
            ));
        }
        Invalid::at_least_1(key, "flush_interval_secs", self.flush_interval_secs)?;
        Invalid::workers(key, self.workers)?;
        self.validate_dimensions(key)?;
        if self.path.is_some() && !self.append && upstream.resumes_from_checkpoints {
            return Err(Invalid::new(
                format!("{key}.append"),
                "must be true when a Kinesis source feeds this sink: a restart resumes after the checkpoints and must not remove the rows of what it already read",
            ));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(path) = self.path.as_mut().filter(|p| p.is_relative()) {
            *path = base.join(&*path);
        }
    }

    fn publishes_exactly_once(&self) -> bool {
        true
    }

    fn reads(&self) -> crate::sinks::Reads {
        let mut columns = self.spec().dimensions;
        columns.extend(["start", "bytes", "packets"].map(String::from));
        crate::sinks::Reads::Columns(columns)
    }

    fn build(&self, _id: &str) -> Result<BuiltSink, BuildError> {
        let spec = self.spec();
        Ok(Box::new(move |input, cx| {
            run(&cx.id, &spec, input, &cx.metrics, &cx.lifecycle)?;
            Ok(None)
        }))
    }
}

/// Dimensions rolled up on when a pipeline names none.
pub const DEFAULT_DIMENSIONS: [&str; 13] = [
    "src_app",
    "dst_app",
    "src_cluster",
    "dst_cluster",
    "src_account",
    "dst_account",
    "src_region",
    "dst_region",
    "src_zone",
    "dst_zone",
    "protocol",
    "action",
    "flow_direction",
];

/// Flow-log fields that are integers (their dimensions are Druid `long`s).
const INTEGER_FIELDS: [&str; 10] = [
    "version",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "tcp_flags",
    "traffic_path",
];

/// The metrics of every row.
pub const METRICS: [&str; 3] = ["flows", "bytes", "packets"];

/// The supervisor's `count` metric: how many sink rows Druid rolled into each of its
/// rows (not a number of flows: use `SUM("flows")`).
pub const COUNT_METRIC: &str = "sink_rows";

/// Column names a dimension may not take: the row's own columns and the ones Druid
/// reserves.
pub const RESERVED_COLUMNS: [&str; 6] = [
    "timestamp",
    "__time",
    "flows",
    "bytes",
    "packets",
    COUNT_METRIC,
];

/// Where rows go.
#[derive(Debug, Clone)]
pub enum DruidOutput {
    /// NDJSON files in `dir`, one per bucket (`flows-20231114T2213Z.ndjson`), and one
    /// per bucket and publication for rows of a checkpointed source
    /// (`flows-20231114T2213Z.<publication>.ndjson`); unless `append`, the run starts
    /// them afresh.
    Files {
        /// The directory.
        dir: PathBuf,
        /// Keep what earlier runs wrote.
        append: bool,
    },
    /// One record per row on a Kinesis stream.
    Kinesis(KinesisSinkSpec),
}

/// Everything the sink needs.
#[derive(Debug, Clone)]
pub struct DruidSpec {
    /// Druid's dataSource.
    pub data_source: String,
    /// Dimensions rolled up on, in row order.
    pub dimensions: Vec<String>,
    /// Bucket width in seconds (Druid's queryGranularity).
    pub granularity_secs: u64,
    /// How often partial aggregates are written.
    pub flush_interval: Duration,
    /// Where rows go.
    pub output: DruidOutput,
    /// A Druid Overlord to submit the supervisor spec to when the sink starts.
    pub overlord_url: Option<String>,
    /// Threads rolling up column batches (the sink's own included).
    pub workers: usize,
}

/// Rolls up every batch until the input closes, writing rows every flush interval and at
/// the end.
pub fn run(
    id: &str,
    spec: &DruidSpec,
    input: &mut Input,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), SinkError> {
    let writer = match &spec.output {
        DruidOutput::Kinesis(stream) => Writer::Kinesis(Box::new(KinesisWriter::new(id, stream))),
        DruidOutput::Files { dir, append } => {
            if !append {
                start_afresh(dir).map_err(|e| SinkError::fatal(PathError::new(dir, e)))?;
            }
            Writer::Files(dir)
        }
    };
    if let Some(url) = &spec.overlord_url {
        let submitted = supervisor_spec(spec)
            .map_err(OverlordError::from)
            .and_then(|body| submit(url, &body));
        match submitted {
            Ok(answer) => {
                tracing::info!(message = "Supervisor spec submitted to the Overlord.", component_id = %id, overlord = %url, %answer)
            }
            Err(error) => {
                metrics.error("overlord_submit_failed", 1);
                tracing::error!(message = "Could not submit the supervisor spec; rows flow anyway.", component_id = %id, overlord = %url, %error);
            }
        }
    }
    let mut publisher = Publisher {
        id,
        writer,
        metrics,
        lifecycle,
        run: format!("{:016x}", crate::util::random_u64()),
        publications: 0,
    };
    std::thread::scope(|threads| {
        let mut shards = Shards::start(threads, spec.workers.saturating_sub(1), spec, metrics);
        roll_up(id, spec, input, metrics, &mut publisher, &mut shards)
    })
}

/// The sink's loop: batches rolled up (sharded with the helpers of `shards`) and
/// flushed every flush interval and at the end.
fn roll_up(
    id: &str,
    spec: &DruidSpec,
    input: &mut Input,
    metrics: &ComponentMetrics,
    publisher: &mut Publisher,
    shards: &mut Shards,
) -> Result<(), SinkError> {
    // One per publication scope the batches come from (and one for batches without).
    let mut pending: Vec<Pending> = Vec::new();
    let mut groups = 0u64;
    let mut flushed_at = Instant::now();
    loop {
        let wait = spec.flush_interval.saturating_sub(flushed_at.elapsed());
        match input.recv_timeout(wait) {
            Ok(Some(batch)) => {
                metrics.received(batch.lines as u64);
                let (store, scope) = scope_of(&batch)?;
                let at = match pending.iter().position(|p| p.takes(&store, &scope)) {
                    Some(at) => at,
                    None => {
                        // A scope seen for the first time: what a crash left half
                        // published is completed before anything else of it.
                        if let Some(store) = &store
                            && publisher.settle(store, &scope)? == Published::LeaseLost
                        {
                            metrics.count("druid_lease_lost_lines_total", batch.lines as u64);
                            batch.forsake();
                            continue;
                        }
                        groups += 1;
                        pending.push(Pending::new(groups, store, scope, spec));
                        pending.len() - 1
                    }
                };
                let group = &mut pending[at];
                if group.published_already(&batch, id) {
                    metrics.count("druid_republished_lines_skipped_total", batch.lines as u64);
                    batch.done();
                    continue;
                }
                crate::failpoint::hit("druid.before_rollup");
                if let Some(columns) = &batch.columns {
                    shards.add(group.id, &mut group.rollup, columns, metrics)?;
                }
                let lines = if batch.columns.is_some() {
                    ""
                } else {
                    &batch.text
                };
                for line in lines.lines() {
                    match group.rollup.add(line) {
                        Ok(()) => metrics.count("druid_flows_total", 1),
                        Err(skipped) => {
                            metrics.error(
                                match skipped {
                                    Skipped::InvalidJson => "invalid_json",
                                    Skipped::NoStart => "missing_start",
                                },
                                1,
                            );
                            metrics.discarded(1);
                        }
                    }
                }
                group.cover(&batch);
                // Only its acknowledgements wait for the flush, not its text.
                let mut batch = batch;
                batch.shrink();
                group.covered.push(batch);
            }
            Ok(None) => {}
            Err(Ended) => break,
        }
        if flushed_at.elapsed() >= spec.flush_interval {
            for group in &mut pending {
                publisher.flush(group, shards.take(group.id)?)?;
            }
            // Holdings that are gone take no more batches.
            pending.retain(|p| p.store.as_ref().is_none_or(|s| s.current(&p.scope)));
            flushed_at = Instant::now();
        }
    }
    for group in &mut pending {
        publisher.flush(group, shards.take(group.id)?)?;
    }
    Ok(())
}
