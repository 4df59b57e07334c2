//! Shard leases in a DynamoDB table, the way the Kinesis Client Library keeps them, so
//! that a fleet of hosts shares one stream: each shard is read by one host at a time,
//! hosts joining or leaving rebalance, and a host that dies loses its leases after the
//! lease period to hosts that resume from its last checkpoint.
//!
//! **The table** has one item per shard, keyed by `leaseKey` (the KCL's lease-row shape):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `leaseKey` | S | shard id (the table's hash key) |
//! | `leaseOwner` | S | worker id of the owner; absent when nobody owns it |
//! | `leaseCounter` | N | incremented by every renewal, take and release |
//! | `checkpoint` | S | last sequence number delivered everywhere, or `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` (not started) or `SHARD_END` (read to its end) |
//! | `checkpointSubSequenceNumber` | N | always 0 (no aggregated records) |
//! | `ownerSwitchesSinceCheckpoint` | N | takes since the last checkpoint |
//! | `parentShardId` | SS | the shards it was split or merged from |
//! | `pendingOwner` | S | a worker that asked for the lease (graceful handoff) |
//! | `startTimestamp` | N | with `checkpoint = AT_TIMESTAMP`: the epoch second to start at (a `latest` start is pinned to when the lease was created) |
//! | `leaseEpoch` | S | a random token set by every take and adoption: writes of a holding are conditional on it, so nothing written for an earlier holding (even this worker's) lands in a later one |
//! | `published_<sink>` | S | per `druid` sink: every flow up to this sequence number is in rows it published (see [`crate::sources::aws_kinesis::leases::publications`]) |
//! | `publication_<sink>` | S | per `druid` sink: the publication begun and not ended (JSON), whose rows are in the table `<table>-publications` |
//!
//! **Every write is conditional**, so two hosts can never both own a shard:
//! - *renew*: `leaseCounter + 1` if `leaseOwner` is me and the counter is what I last
//!   wrote (otherwise the lease was taken: I stop reading it at once);
//! - *take*: set `leaseOwner` to me and `leaseCounter + 1` if the counter is what my scan
//!   saw. A lease may be taken when nobody owns it, or when its counter has not moved for
//!   a whole lease period by my own clock (its owner stopped renewing; no clocks are
//!   compared across hosts);
//! - *checkpoint* and *release*: only while `leaseOwner` is me.
//!
//! A holder treats its lease as valid only until one lease period after its last
//! successful renewal, minus one renewal interval; a taker waits a whole lease period
//! after it last saw the counter move. So a host that stops renewing (a pause, a network
//! split) stops reading before anyone else may start.
//!
//! **Balancing**: every scan counts the workers that hold live leases; a worker holding
//! fewer than its share (leases ÷ workers, rounded up) takes unowned or expired leases,
//! or, when there are none, asks the most loaded worker for one by setting
//! `pendingOwner`. The owner sees the request at its next renewal, stops reading the
//! shard, waits until what it read is acknowledged everywhere, checkpoints, and hands
//! the lease over; the receiver adopts it with a conditional renewal. Nothing is read
//! twice when shards move between live hosts, unless acknowledgements take longer than
//! [`LeaseSpec::handoff_timeout`] or the last checkpoint cannot be written by then.

use crate::aws::ClientConfig;
use crate::aws::kinesis::StartAt;
use crate::config::Invalid;
use crate::sources::aws_kinesis::checkpoint::{Publication, ShardCheckpoint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod coordinator;
pub mod publications;
mod table;

pub use coordinator::{Change, Claim, Coordinator, HeldView, LeaseCounts};
pub use table::LeaseTable;

/// `checkpoint` of a shard nobody has read yet that starts at the oldest record.
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
/// `checkpoint` of a shard nobody has read yet that starts at new records.
pub const LATEST: &str = "LATEST";
/// `checkpoint` of a shard nobody has read yet that starts at a timestamp.
pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
/// `checkpoint` of a shard read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// A Kinesis source's lease table (`[sources.<id>.leases]`): the KCL's way for a fleet
/// of hosts to share a stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The DynamoDB table, created (on-demand capacity) if missing. One per source.
    pub table_name: String,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub client: ClientConfig,
    /// This host's id in the fleet; must be unique among running hosts. Default:
    /// `<hostname>-<process id>-<random>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Milliseconds without renewal after which another host may take a lease (the
    /// failover time). Leases are renewed three times per period.
    #[serde(default = "default_lease_duration_ms")]
    pub lease_duration_ms: u64,
    /// Milliseconds between scans of the table for leases to take or ask for.
    #[serde(default = "default_scan_interval_ms")]
    pub scan_interval_ms: u64,
    /// Milliseconds between checkpoint writes per shard (what a crash may re-deliver).
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

fn default_lease_duration_ms() -> u64 {
    10_000
}

fn default_scan_interval_ms() -> u64 {
    1_000
}

fn default_checkpoint_interval_ms() -> u64 {
    1_000
}

impl Config {
    /// A table name, workable intervals; `key` is `sources.<id>.leases`.
    pub fn validate(&self, key: &str) -> Result<(), Invalid> {
        let at = |k: &str| format!("{key}.{k}");
        if self.table_name.trim().is_empty() {
            return Err(Invalid::new(at("table_name"), "must name a DynamoDB table"));
        }
        if self
            .worker_id
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err(Invalid::new(at("worker_id"), "must not be empty"));
        }
        if self.lease_duration_ms < 300 {
            return Err(Invalid::new(
                at("lease_duration_ms"),
                "must be at least 300",
            ));
        }
        for (name, value) in [
            ("scan_interval_ms", self.scan_interval_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
        ] {
            if value == 0 || value >= self.lease_duration_ms {
                return Err(Invalid::new(
                    at(name),
                    "must be at least 1 and less than `lease_duration_ms`",
                ));
            }
        }
        Ok(())
    }

    /// The settings a run uses (with this process's worker id when none is set).
    pub fn spec(&self) -> LeaseSpec {
        LeaseSpec {
            table: self.table_name.clone(),
            client: self.client.clone(),
            worker: self.worker_id.clone().unwrap_or_else(default_worker_id),
            lease_duration: Duration::from_millis(self.lease_duration_ms),
            scan_interval: Duration::from_millis(self.scan_interval_ms),
            checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms),
        }
    }
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
    let random = crate::util::random_u64() as u32;
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// What a run uses of [`Config`]: durations, and the worker id chosen for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSpec {
    /// The DynamoDB table (created on demand, on-demand capacity).
    pub table: String,
    /// Where the DynamoDB client connects.
    pub client: ClientConfig,
    /// This host's worker id, unique in the fleet.
    pub worker: String,
    /// A lease not renewed for this long may be taken by another host.
    pub lease_duration: Duration,
    /// How often the table is scanned for leases to take.
    pub scan_interval: Duration,
    /// How often acknowledged positions are written to the table.
    pub checkpoint_interval: Duration,
}

impl LeaseSpec {
    /// How often held leases are renewed: three times per lease period.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Until when a lease renewed by a write that started at `renewed_at` may be read
    /// under: one renewal interval before anyone else may take it.
    pub fn valid_until(&self, renewed_at: Instant) -> Instant {
        renewed_at + self.lease_duration - self.renew_interval()
    }

    /// How long a host that hands a lease over (or shuts down) waits for what it read to
    /// be acknowledged everywhere before it checkpoints and lets go anyway (what was
    /// not acknowledged by then is read again by the next owner): four lease periods,
    /// at least 30 s, so that sinks that hold rows for a while (a Druid rollup) finish.
    pub fn handoff_timeout(&self) -> Duration {
        (self.lease_duration * 4).max(Duration::from_secs(30))
    }
}

/// Why the lease table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A DynamoDB call failed (other than a failed condition, which is an answer).
    #[error("DynamoDB {operation} on lease table {table}: {message}")]
    Dynamo {
        /// The call.
        operation: &'static str,
        /// The table.
        table: String,
        /// What the SDK said.
        message: String,
    },
    /// An item of the table is not a lease.
    #[error("lease table {table}: item {key} is not a lease: {problem}")]
    Invalid {
        /// The table.
        table: String,
        /// The item's `leaseKey` (or `?`).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// One lease as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Shard id.
    pub shard: String,
    /// Owner's worker id.
    pub owner: Option<String>,
    /// Lease counter.
    pub counter: u64,
    /// Sequence number, or one of [`TRIM_HORIZON`], [`LATEST`], [`AT_TIMESTAMP`],
    /// [`SHARD_END`].
    pub checkpoint: String,
    /// Parent shards.
    pub parents: Vec<String>,
    /// A worker that asked for the lease.
    pub pending_owner: Option<String>,
    /// With `checkpoint` [`AT_TIMESTAMP`]: the epoch second the shard starts at.
    pub start_timestamp: Option<i64>,
    /// The token of the current holding (`leaseEpoch`).
    pub epoch: Option<String>,
    /// Per `druid` sink, up to where its rows hold the shard's flows.
    pub published: BTreeMap<String, String>,
    /// Per `druid` sink, the publication of this shard begun and not ended.
    pub publications: BTreeMap<String, Publication>,
}

/// Attribute of the sequence number up to which `sink` has published a shard.
pub fn published_attribute(sink: &str) -> String {
    format!("published_{sink}")
}

/// Attribute of the publication of `sink` a shard has pending.
pub fn publication_attribute(sink: &str) -> String {
    format!("publication_{sink}")
}

/// A fresh holding token.
pub(super) fn new_epoch() -> String {
    format!("{:016x}", crate::util::random_u64())
}

impl Lease {
    /// The shard has been read to its end.
    pub fn finished(&self) -> bool {
        self.checkpoint == SHARD_END
    }

    /// Where the shard starts while it has no sequence number yet.
    pub fn start(&self) -> StartAt {
        match (self.checkpoint.as_str(), self.start_timestamp) {
            (LATEST, _) => StartAt::Latest,
            (AT_TIMESTAMP, Some(seconds)) => StartAt::Timestamp(seconds),
            _ => StartAt::TrimHorizon,
        }
    }

    /// Where a new owner resumes (with what its `druid` sinks have published).
    pub fn position(&self) -> ShardCheckpoint {
        let mut position = self.read_position();
        position.published = self.published.clone();
        position
    }

    fn read_position(&self) -> ShardCheckpoint {
        match self.checkpoint.as_str() {
            SHARD_END => ShardCheckpoint {
                sequence: None,
                finished: true,
                ..Default::default()
            },
            TRIM_HORIZON | LATEST | AT_TIMESTAMP => ShardCheckpoint::default(),
            sequence => ShardCheckpoint {
                sequence: Some(sequence.to_string()),
                finished: false,
                ..Default::default()
            },
        }
    }
}

/// The `checkpoint` value of a position; `None` before its first record (the lease
/// keeps where it starts).
pub fn checkpoint_value(position: &ShardCheckpoint) -> Option<String> {
    match (&position.sequence, position.finished) {
        (_, true) => Some(SHARD_END.to_string()),
        (Some(sequence), false) => Some(sequence.clone()),
        (None, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_round_trip() {
        let lease = |checkpoint: &str| Lease {
            shard: "s".into(),
            owner: None,
            counter: 0,
            checkpoint: checkpoint.into(),
            parents: vec![],
            pending_owner: None,
            start_timestamp: Some(7),
            epoch: None,
            published: BTreeMap::new(),
            publications: BTreeMap::new(),
        };
        for position in [
            ShardCheckpoint::default(),
            ShardCheckpoint {
                sequence: Some("4960".into()),
                finished: false,
                ..Default::default()
            },
            ShardCheckpoint {
                sequence: Some("4960".into()),
                finished: true,
                ..Default::default()
            },
        ] {
            match checkpoint_value(&position) {
                Some(value) if position.finished => {
                    let back = lease(&value).position();
                    assert!(back.finished && back.sequence.is_none());
                }
                Some(value) => assert_eq!(lease(&value).position(), position),
                None => assert_eq!(position, ShardCheckpoint::default()),
            }
        }
        assert!(lease(SHARD_END).finished());
        assert_eq!(lease(AT_TIMESTAMP).start(), StartAt::Timestamp(7));
        assert_eq!(lease(LATEST).start(), StartAt::Latest);
        assert_eq!(lease(TRIM_HORIZON).start(), StartAt::TrimHorizon);
    }
}
