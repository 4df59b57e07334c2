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
//! | `published_<sink>` | S | per `druid` sink: every flow up to this sequence number is in rows it published (see [`crate::lease_publications`]) |
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

use crate::checkpoint::{Publication, ShardCheckpoint};
use crate::kinesis::StartAt;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `checkpoint` of a shard nobody has read yet that starts at the oldest record.
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
/// `checkpoint` of a shard nobody has read yet that starts at new records.
pub const LATEST: &str = "LATEST";
/// `checkpoint` of a shard nobody has read yet that starts at a timestamp.
pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
/// `checkpoint` of a shard read to its end.
pub const SHARD_END: &str = "SHARD_END";

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How a source shares its stream through a lease table (`[sources.<id>.leases]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSpec {
    /// The DynamoDB table (created on demand, on-demand capacity).
    pub table: String,
    /// Endpoint override (a local DynamoDB in tests); `None` uses AWS's.
    pub endpoint: Option<String>,
    /// Region; `None` uses the standard AWS configuration chain.
    pub region: Option<String>,
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
fn new_epoch() -> String {
    format!("{:016x}", crate::kinesis::random_u64())
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

/// The lease table and this worker's calls on it.
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    worker: String,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl LeaseTable {
    /// A client for `spec`'s table from the standard AWS configuration chain.
    /// Every call gives up after one renewal interval, so that a hung request neither
    /// outlives the lease it renews nor holds up a shutdown.
    pub async fn connect(spec: &LeaseSpec) -> LeaseTable {
        let config = crate::kinesis::aws_config(&spec.region, &spec.endpoint).await;
        let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_timeout(spec.renew_interval())
            .build();
        let config = aws_sdk_dynamodb::config::Builder::from(&config)
            .timeout_config(timeouts)
            .build();
        LeaseTable {
            client: aws_sdk_dynamodb::Client::from_conf(config),
            table: spec.table.clone(),
            worker: spec.worker.clone(),
        }
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub(crate) fn error(
        &self,
        operation: &'static str,
        error: impl std::fmt::Display,
    ) -> LeaseError {
        LeaseError::Dynamo {
            operation,
            table: self.table.clone(),
            message: error.to_string(),
        }
    }

    /// Creates the lease table (hash key `leaseKey`) and the table of publications' rows
    /// (hash key `key`, see [`crate::lease_publications`]), on-demand capacity, unless
    /// they exist, and waits until they are active.
    pub async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.ensure(&self.table, "leaseKey").await?;
        self.ensure(&self.publications_table(), "key").await
    }

    /// The table that holds the rows of publications begun (`<table>-publications`).
    pub fn publications_table(&self) -> String {
        format!("{}-publications", self.table)
    }

    /// The client, for the publication log.
    pub(crate) fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    async fn ensure(&self, table: &str, key: &str) -> Result<(), LeaseError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TableStatus,
        };
        let described = self.client.describe_table().table_name(table).send().await;
        let exists = match described {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(self.error("DescribeTable", e.into_service_error())),
        };
        if !exists {
            let created = self
                .client
                .create_table()
                .table_name(table)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| self.error("CreateTable", e))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(key)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| self.error("CreateTable", e))?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            match created {
                Ok(_) => tracing::info!(message = "Created a table for leases.", %table),
                // Another host created it first.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                Err(e) => return Err(self.error("CreateTable", e.into_service_error())),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| self.error("DescribeTable", e.into_service_error()))?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.error("DescribeTable", "the table did not become active"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every lease (a strongly consistent scan).
    pub async fn scan(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.error("Scan", e.into_service_error()))?;
            for item in page.items() {
                leases.push(self.parse(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(leases);
            }
        }
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let invalid = |problem: &str| LeaseError::Invalid {
            table: self.table.clone(),
            key: text("leaseKey").unwrap_or_else(|| "?".into()),
            problem: problem.to_string(),
        };
        let shard = text("leaseKey").ok_or_else(|| invalid("no string leaseKey"))?;
        let counter = match item.get("leaseCounter") {
            Some(AttributeValue::N(v)) => v.parse().map_err(|_| invalid("bad leaseCounter"))?,
            None => 0,
            Some(_) => return Err(invalid("leaseCounter is not a number")),
        };
        Ok(Lease {
            shard,
            owner: text("leaseOwner"),
            counter,
            checkpoint: text("checkpoint").unwrap_or_else(|| TRIM_HORIZON.to_string()),
            parents: item
                .get("parentShardId")
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default(),
            pending_owner: text("pendingOwner"),
            start_timestamp: item
                .get("startTimestamp")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok()),
            epoch: text("leaseEpoch"),
            published: item
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        name.strip_prefix("published_")?.to_string(),
                        value.as_s().ok()?.clone(),
                    ))
                })
                .collect(),
            publications: item
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.strip_prefix("publication_")?, value.as_s().ok()?))
                })
                .map(|(sink, json)| {
                    serde_json::from_str(json)
                        .map(|p| (sink.to_string(), p))
                        .map_err(|e| invalid(&format!("bad publication_{sink}: {e}")))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds a lease for `shard` unless one exists (nobody owns it yet), starting at
    /// `start`.
    pub async fn create(
        &self,
        shard: &str,
        parents: &[String],
        start: StartAt,
    ) -> Result<(), LeaseError> {
        let (checkpoint, timestamp) = match start {
            StartAt::TrimHorizon => (TRIM_HORIZON, None),
            StartAt::Latest => (LATEST, None),
            StartAt::Timestamp(seconds) => (AT_TIMESTAMP, Some(seconds)),
        };
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("leaseKey", s(shard))
            .item("leaseCounter", n(0))
            .item("checkpoint", s(checkpoint))
            .item("checkpointSubSequenceNumber", n(0))
            .item("ownerSwitchesSinceCheckpoint", n(0))
            .condition_expression("attribute_not_exists(leaseKey)");
        if !parents.is_empty() {
            request = request.item("parentShardId", AttributeValue::Ss(parents.to_vec()));
        }
        if let Some(seconds) = timestamp {
            request = request.item("startTimestamp", AttributeValue::N(seconds.to_string()));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("PutItem", e.into_service_error())),
        }
    }

    /// A conditional update of `shard`'s lease: `Ok(None)` when the condition failed.
    async fn update(
        &self,
        operation: &'static str,
        shard: &str,
        update: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<Option<Lease>, LeaseError> {
        self.update_named(operation, shard, update, condition, values, &[])
            .await
    }

    /// As [`LeaseTable::update`], with attribute names (`#name`) in the expressions.
    pub(crate) async fn update_named(
        &self,
        operation: &'static str,
        shard: &str,
        update: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
        names: &[(&str, String)],
    ) -> Result<Option<Lease>, LeaseError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .update_expression(update)
            .condition_expression(condition)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        for (name, value) in values {
            request = request.expression_attribute_values(*name, value.clone());
        }
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, name.clone());
        }
        match request.send().await {
            Ok(out) => match out.attributes() {
                Some(item) => Ok(Some(self.parse(item)?)),
                None => Err(self.error(operation, "no attributes returned")),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(operation, e.into_service_error())),
        }
    }

    /// Takes `lease` as scanned: `Ok(None)` when someone else changed it first.
    pub async fn take(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        self.update(
            "UpdateItem (take)",
            &lease.shard,
            "SET leaseOwner = :me, leaseCounter = leaseCounter + :one, leaseEpoch = :epoch, \
             ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one REMOVE pendingOwner",
            "leaseCounter = :seen",
            &[
                (":me", s(&self.worker)),
                (":one", n(1)),
                (":seen", n(lease.counter)),
                (":epoch", s(&new_epoch())),
            ],
        )
        .await
    }

    /// Adopts a lease handed over to this worker, as scanned (a renewal that starts a
    /// new holding): `Ok(None)` when it changed meanwhile.
    pub async fn adopt(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        self.update(
            "UpdateItem (adopt)",
            &lease.shard,
            "SET leaseCounter = leaseCounter + :one, leaseEpoch = :epoch",
            "leaseOwner = :me AND leaseCounter = :seen",
            &[
                (":me", s(&self.worker)),
                (":one", n(1)),
                (":seen", n(lease.counter)),
                (":epoch", s(&new_epoch())),
            ],
        )
        .await
    }

    /// Renews a held lease: `Ok(None)` when it is no longer this worker's.
    pub async fn renew(&self, shard: &str, counter: u64) -> Result<Option<Lease>, LeaseError> {
        self.update(
            "UpdateItem (renew)",
            shard,
            "SET leaseCounter = leaseCounter + :one",
            "leaseOwner = :me AND leaseCounter = :held",
            &[
                (":me", s(&self.worker)),
                (":one", n(1)),
                (":held", n(counter)),
            ],
        )
        .await
    }

    /// Writes `checkpoint` for a held lease: `Ok(false)` when it is no longer held.
    pub async fn checkpoint(&self, shard: &str, checkpoint: &str) -> Result<bool, LeaseError> {
        Ok(self
            .update(
                "UpdateItem (checkpoint)",
                shard,
                "SET checkpoint = :cp, ownerSwitchesSinceCheckpoint = :zero",
                "leaseOwner = :me",
                &[
                    (":me", s(&self.worker)),
                    (":cp", s(checkpoint)),
                    (":zero", n(0)),
                ],
            )
            .await?
            .is_some())
    }

    /// Gives up a held lease, to `to` (a handoff) or to nobody.
    pub async fn release(&self, shard: &str, to: Option<&str>) -> Result<bool, LeaseError> {
        let released = match to {
            Some(to) => {
                let handed = self
                    .update(
                        "UpdateItem (hand over)",
                        shard,
                        "SET leaseOwner = :to, leaseCounter = leaseCounter + :one, \
                         ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one \
                         REMOVE pendingOwner",
                        "leaseOwner = :me AND pendingOwner = :to",
                        &[(":me", s(&self.worker)), (":to", s(to)), (":one", n(1))],
                    )
                    .await?;
                if handed.is_some() {
                    return Ok(true);
                }
                // The asker withdrew: nobody's, for whoever scans first.
                return Box::pin(self.release(shard, None)).await;
            }
            None => {
                self.update(
                    "UpdateItem (release)",
                    shard,
                    "SET leaseCounter = leaseCounter + :one REMOVE leaseOwner, pendingOwner",
                    "leaseOwner = :me",
                    &[(":me", s(&self.worker)), (":one", n(1))],
                )
                .await?
            }
        };
        Ok(released.is_some())
    }

    /// The lease of `shard` as it is now (a strongly consistent read).
    pub async fn get(&self, shard: &str) -> Result<Option<Lease>, LeaseError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e.into_service_error()))?;
        item.item().map(|item| self.parse(item)).transpose()
    }

    /// Withdraws this worker's request for `shard`.
    pub async fn withdraw(&self, shard: &str) -> Result<bool, LeaseError> {
        Ok(self
            .update(
                "UpdateItem (withdraw)",
                shard,
                "REMOVE pendingOwner",
                "pendingOwner = :me",
                &[(":me", s(&self.worker))],
            )
            .await?
            .is_some())
    }

    /// Asks `lease`'s owner to hand it over: `Ok(false)` when it changed owner or
    /// someone else asked first.
    pub async fn request(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let Some(owner) = &lease.owner else {
            return Ok(false);
        };
        Ok(self
            .update(
                "UpdateItem (ask for)",
                &lease.shard,
                "SET pendingOwner = :me",
                "leaseOwner = :owner AND attribute_not_exists(pendingOwner)",
                &[(":me", s(&self.worker)), (":owner", s(owner))],
            )
            .await?
            .is_some())
    }
}

/// A lease this worker holds.
#[derive(Debug)]
struct Held {
    counter: u64,
    /// Until when reading under it is safe (see the module docs).
    valid_until: Instant,
    /// Another worker asked for it.
    handoff_to: Option<String>,
    /// The holding's `leaseEpoch`.
    epoch: String,
}

/// What changed for the source after a [`Coordinator::tick`].
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A lease was taken or handed over to this worker: read the shard from `position`.
    Acquired {
        /// Shard id.
        shard: String,
        /// Where to resume.
        position: ShardCheckpoint,
        /// Where the shard starts when `position` has no sequence number.
        start: StartAt,
        /// Its parents.
        parents: Vec<String>,
        /// The holding's token (`leaseEpoch`).
        epoch: String,
        /// Per `druid` sink, a publication its last owner began and did not end.
        publications: BTreeMap<String, Publication>,
    },
    /// The lease is gone (taken, or not renewed in time): stop reading the shard now.
    Lost(String),
    /// Another worker asked for the lease: stop reading, let what was read be
    /// acknowledged, then [`Coordinator::hand_over`].
    HandOff(String),
}

/// Leases this worker holds, shared by the coordinator and its renewer thread.
type HeldLeases = Arc<Mutex<HashMap<String, Held>>>;

/// Which leases this worker holds now, seen from another thread.
#[derive(Clone)]
pub struct HeldView {
    held: HeldLeases,
}

impl HeldView {
    /// Whether this worker holds `shard` in the holding `epoch` and may still write
    /// under it (the same validity as reading: see the module docs).
    pub fn holds(&self, shard: &str, epoch: &str) -> bool {
        self.held
            .lock()
            .expect("lease lock")
            .get(shard)
            .is_some_and(|h| h.epoch == epoch && h.valid_until > Instant::now())
    }
}

/// This worker's side of the lease protocol: taking, balancing, handing over, and (on a
/// thread of its own, so that a source blocked by backpressure keeps its leases)
/// renewing.
pub struct Coordinator {
    table: LeaseTable,
    spec: LeaseSpec,
    held: HeldLeases,
    /// What the renewer found (leases lost, handoffs asked for) since the last tick.
    found: Arc<Mutex<Vec<Change>>>,
    /// Renewal writes so far.
    renewals: Arc<AtomicU64>,
    /// Renewals counted in [`LeaseCounts`] so far.
    renewals_counted: u64,
    stop_renewer: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
    /// Per lease, the owner and counter last scanned, and since when they are unchanged.
    seen: HashMap<String, (Option<String>, u64, Instant)>,
    /// The last scan's leases.
    leases: Vec<Lease>,
    last_scan: Option<Instant>,
}

/// The renewer thread: renews every held lease three times per lease period, all at
/// once, and reports leases lost and handoffs asked for. It has a client of its own:
/// an SDK client's connections are driven by the runtime that opened them, and the
/// source's runtime only runs while the source thread is inside it.
fn renew_leases(
    runtime: tokio::runtime::Runtime,
    spec: LeaseSpec,
    held: HeldLeases,
    found: Arc<Mutex<Vec<Change>>>,
    renewals: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let table = runtime.block_on(LeaseTable::connect(&spec));
    let mut renewed_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if renewed_at.elapsed() < spec.renew_interval() {
            continue;
        }
        renewed_at = Instant::now();
        let shards: Vec<(String, u64)> = held
            .lock()
            .expect("lease lock")
            .iter()
            .map(|(shard, h)| (shard.clone(), h.counter))
            .collect();
        if shards.is_empty() {
            continue;
        }
        renewals.fetch_add(shards.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let renewed = runtime.block_on(futures_util::future::join_all(
            shards
                .iter()
                .map(|(shard, counter)| table.renew(shard, *counter)),
        ));
        let valid_until = spec.valid_until(started);
        // A renewal whose condition failed: an earlier one that timed out may have been
        // applied after all, leaving the lease this worker's, one count on. Only a take
        // changes the owner, so the owner decides (read without holding the lock).
        let recheck: HashMap<&String, Result<Option<Lease>, LeaseError>> = shards
            .iter()
            .zip(&renewed)
            .filter(|(_, renewed)| matches!(renewed, Ok(None)))
            .map(|((shard, _), _)| (shard, runtime.block_on(table.get(shard))))
            .collect();
        let mut held = held.lock().expect("lease lock");
        let mut found = found.lock().expect("lease lock");
        for ((shard, counter), renewed) in shards.iter().zip(renewed) {
            // Handed over, released or taken again meanwhile: not this renewal's to judge.
            let Some(h) = held.get_mut(shard).filter(|h| h.counter == *counter) else {
                continue;
            };
            match renewed {
                Ok(Some(lease)) => {
                    h.counter = lease.counter;
                    h.valid_until = valid_until;
                    if h.handoff_to.is_none()
                        && let Some(to) = lease.pending_owner
                        && to != table.worker
                    {
                        h.handoff_to = Some(to);
                        found.push(Change::HandOff(shard.clone()));
                    }
                }
                Ok(None) => match recheck.get(shard) {
                    // Still this worker's: renewed with the right counter next round.
                    Some(Ok(Some(now))) if now.owner.as_deref() == Some(table.worker()) => {
                        h.counter = now.counter
                    }
                    Some(Err(error)) => {
                        tracing::warn!(message = "Cannot read a lease whose renewal failed; retrying.", shard = %shard, %error)
                    }
                    _ => {
                        tracing::info!(message = "Lease taken by another worker; no longer reading the shard.", shard = %shard);
                        held.remove(shard);
                        found.push(Change::Lost(shard.clone()));
                    }
                },
                Err(error) => {
                    tracing::warn!(message = "Cannot renew a lease; retrying.", shard = %shard, %error)
                }
            }
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// Counts of lease events, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseCounts {
    /// Leases taken (unowned or expired).
    pub taken: u64,
    /// Leases received from a handoff.
    pub handed_in: u64,
    /// Leases handed over to another worker.
    pub handed_out: u64,
    /// Leases lost (taken by someone else, or not renewed in time).
    pub lost: u64,
    /// Handoffs asked for.
    pub requested: u64,
    /// Renewal writes.
    pub renewals: u64,
    /// Checkpoint writes.
    pub checkpoints: u64,
    /// Scans of the table.
    pub scans: u64,
}

impl Coordinator {
    /// A coordinator on `table`; holds nothing yet. Fails when its renewer thread
    /// cannot be started (without it, every lease would run out again and again).
    pub fn new(table: LeaseTable, spec: LeaseSpec) -> std::io::Result<Coordinator> {
        let held = HeldLeases::default();
        let found = Arc::new(Mutex::new(Vec::new()));
        let renewals = Arc::new(AtomicU64::new(0));
        let stop_renewer = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let renewer = {
            let (spec, held, found, renewals, stop) = (
                spec.clone(),
                held.clone(),
                found.clone(),
                renewals.clone(),
                stop_renewer.clone(),
            );
            std::thread::Builder::new()
                .name("lease-renewer".into())
                .spawn(move || renew_leases(runtime, spec, held, found, renewals, stop))?
        };
        Ok(Coordinator {
            table,
            spec,
            held,
            found,
            renewals,
            renewals_counted: 0,
            stop_renewer,
            renewer: Some(renewer),
            seen: HashMap::new(),
            leases: Vec::new(),
            last_scan: None,
        })
    }

    fn stop_renewing(&mut self) {
        self.stop_renewer.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().expect("lease lock")
    }

    /// Whether this worker holds `shard`'s lease and may read it now.
    pub fn holds(&self, shard: &str) -> bool {
        self.held()
            .get(shard)
            .is_some_and(|h| h.valid_until > Instant::now())
    }

    /// A view of the held leases for other threads (the `druid` sinks' publication log).
    pub fn view(&self) -> HeldView {
        HeldView {
            held: self.held.clone(),
        }
    }

    /// How many leases this worker holds.
    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    /// Whether every parent of a shard has been read to its end (or is gone from the
    /// table and from the stream's listing, `listed`).
    pub fn parents_done(&self, parents: &[String], listed: &dyn Fn(&str) -> bool) -> bool {
        parents.iter().all(
            |parent| match self.leases.iter().find(|l| &l.shard == parent) {
                Some(lease) => lease.finished(),
                None => !listed(parent),
            },
        )
    }

    /// Adds leases for listed shards that have none. Shards with parents start at the
    /// oldest record (nothing written after a reshard may be skipped); others at
    /// `start`, where "latest" is pinned to now, so that a host that takes the lease
    /// over before the first checkpoint does not skip what was written meanwhile.
    pub async fn sync_shards(
        &mut self,
        shards: &[crate::kinesis::ShardInfo],
        start: StartAt,
    ) -> Result<(), LeaseError> {
        for shard in shards {
            if self.leases.iter().any(|l| l.shard == shard.id) {
                continue;
            }
            let start = match start {
                _ if !shard.parents.is_empty() => StartAt::TrimHorizon,
                StartAt::Latest => StartAt::Timestamp(now_seconds()),
                other => other,
            };
            self.table.create(&shard.id, &shard.parents, start).await?;
        }
        Ok(())
    }

    /// Reports what the renewer found, then scans, takes and balances when a scan is
    /// due; returns what the source must do. Errors leave held leases until they run
    /// out.
    pub async fn tick(&mut self, stopping: bool, counts: &mut LeaseCounts) -> Vec<Change> {
        let now = Instant::now();
        let mut changes = std::mem::take(&mut *self.found.lock().expect("lease lock"));
        counts.lost += changes
            .iter()
            .filter(|c| matches!(c, Change::Lost(_)))
            .count() as u64;
        let renewals = self.renewals.load(Ordering::Relaxed);
        counts.renewals += renewals - self.renewals_counted;
        self.renewals_counted = renewals;
        // A lease whose renewals kept failing is given up before anyone may take it.
        let expired: Vec<String> = {
            let mut held = self.held();
            let expired: Vec<String> = held
                .iter()
                .filter(|(_, h)| h.valid_until <= now)
                .map(|(shard, _)| shard.clone())
                .collect();
            for shard in &expired {
                held.remove(shard);
            }
            expired
        };
        for shard in expired {
            tracing::warn!(message = "Lease not renewed in time; no longer reading the shard.", shard = %shard);
            counts.lost += 1;
            changes.push(Change::Lost(shard));
        }
        if !stopping
            && self
                .last_scan
                .is_none_or(|at| now - at >= self.spec.scan_interval)
        {
            self.last_scan = Some(now);
            counts.scans += 1;
            match self.table.scan().await {
                Ok(leases) => {
                    self.leases = leases;
                    self.balance(&mut changes, counts).await;
                }
                Err(error) => tracing::warn!(message = "Cannot scan the lease table.", %error),
            }
        }
        changes
    }

    /// Holds `lease` as a conditional write that started at `started` returned it;
    /// what the source must do about it.
    fn hold(&self, lease: &Lease, started: Instant) -> Change {
        let mut held = self.held();
        held.insert(
            lease.shard.clone(),
            Held {
                counter: lease.counter,
                valid_until: self.spec.valid_until(started),
                handoff_to: None,
                epoch: lease.epoch.clone().unwrap_or_default(),
            },
        );
        // A report the renewer made about an earlier holding of this shard since the
        // tick began would undo this one. (Same lock order as the renewer: held, found.)
        self.found
            .lock()
            .expect("lease lock")
            .retain(|c| !matches!(c, Change::Lost(s) | Change::HandOff(s) if *s == lease.shard));
        drop(held);
        Change::Acquired {
            shard: lease.shard.clone(),
            position: lease.position(),
            start: lease.start(),
            parents: lease.parents.clone(),
            epoch: lease.epoch.clone().unwrap_or_default(),
            publications: lease.publications.clone(),
        }
    }

    async fn balance(&mut self, changes: &mut Vec<Change>, counts: &mut LeaseCounts) {
        let now = Instant::now();
        let me = self.table.worker.clone();
        // Track how long each counter has stood still.
        let mut seen = HashMap::new();
        for lease in &self.leases {
            let since = match self.seen.get(&lease.shard) {
                Some((owner, counter, since))
                    if *owner == lease.owner && *counter == lease.counter =>
                {
                    *since
                }
                _ => now,
            };
            seen.insert(
                lease.shard.clone(),
                (lease.owner.clone(), lease.counter, since),
            );
        }
        self.seen = seen;
        let live = |lease: &Lease, seen: &HashMap<String, (Option<String>, u64, Instant)>| {
            lease.owner.is_some()
                && seen
                    .get(&lease.shard)
                    .is_some_and(|(_, _, since)| now - *since < self.spec.lease_duration)
        };
        // Leases handed over to this worker: adopted through a conditional renewal on
        // the scanned counter, like a take, so that a lease someone took meanwhile is
        // not read twice.
        for lease in &self.leases {
            if lease.owner.as_deref() == Some(me.as_str())
                && !lease.finished()
                && !self.held().contains_key(&lease.shard)
            {
                let started = Instant::now();
                counts.renewals += 1;
                match self.table.adopt(lease).await {
                    Ok(Some(adopted)) => {
                        counts.handed_in += 1;
                        changes.push(self.hold(&adopted, started));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(message = "Cannot adopt a lease handed over.", shard = %lease.shard, %error)
                    }
                }
            }
        }
        let open: Vec<&Lease> = self.leases.iter().filter(|l| !l.finished()).collect();
        let mut per_worker: HashMap<String, Vec<&Lease>> = HashMap::new();
        for lease in &open {
            if live(lease, &self.seen)
                && let Some(owner) = &lease.owner
                && *owner != me
            {
                per_worker.entry(owner.clone()).or_default().push(lease);
            }
        }
        let workers = per_worker.len() + 1;
        let target = open.len().div_ceil(workers);
        let mut mine = self.held().len();
        // Unowned and expired leases first.
        for lease in &open {
            if mine >= target {
                break;
            }
            if self.held().contains_key(&lease.shard) || live(lease, &self.seen) {
                continue;
            }
            let started = Instant::now();
            match self.table.take(lease).await {
                Ok(Some(taken)) => {
                    tracing::info!(message = "Took a lease.", shard = %lease.shard, from = lease.owner.as_deref().unwrap_or("nobody"));
                    mine += 1;
                    counts.taken += 1;
                    changes.push(self.hold(&taken, started));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot take a lease.", shard = %lease.shard, %error)
                }
            }
        }
        // Still short: ask the most loaded worker for one lease (one at a time), if it
        // holds more than its share, or its share while this worker is two short (so
        // 4 leases over 3 workers end 2-1-1, not 2-2-0).
        let asked = open
            .iter()
            .any(|l| l.pending_owner.as_deref() == Some(me.as_str()));
        if mine < target
            && !asked
            && let Some((_, leases)) = per_worker
                .iter()
                .max_by_key(|(worker, leases)| (leases.len(), (*worker).clone()))
            && (leases.len() > target || (leases.len() == target && mine + 1 < target))
            && let Some(lease) = leases.iter().find(|l| l.pending_owner.is_none())
        {
            match self.table.request(lease).await {
                Ok(true) => {
                    tracing::info!(message = "Asked for a lease.", shard = %lease.shard, owner = lease.owner.as_deref().unwrap_or(""));
                    counts.requested += 1;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot ask for a lease.", shard = %lease.shard, %error)
                }
            }
        }
    }

    /// Writes acknowledged positions of held shards, all at once; a shard read to its
    /// end then gives up its lease. Returns the shards whose write failed, to be
    /// written again.
    pub async fn checkpoint(
        &mut self,
        positions: Vec<(String, ShardCheckpoint)>,
        changes: &mut Vec<Change>,
        counts: &mut LeaseCounts,
    ) -> Vec<String> {
        let positions: Vec<(String, ShardCheckpoint, String)> = positions
            .into_iter()
            .filter(|(shard, _)| self.held().contains_key(shard))
            .filter_map(|(shard, position)| {
                let value = checkpoint_value(&position)?;
                Some((shard, position, value))
            })
            .collect();
        counts.checkpoints += positions.len() as u64;
        let written = futures_util::future::join_all(
            positions
                .iter()
                .map(|(shard, _, value)| self.table.checkpoint(shard, value)),
        )
        .await;
        let mut failed = Vec::new();
        for ((shard, position, _), written) in positions.into_iter().zip(written) {
            match written {
                Ok(true) if position.finished => {
                    // Finished leases are never taken, so one whose release fails only
                    // keeps a stale owner (released again on shutdown).
                    self.held().remove(&shard);
                    if let Err(error) = self.table.release(&shard, None).await {
                        tracing::warn!(message = "Cannot release a finished shard's lease.", shard = %shard, %error)
                    }
                }
                Ok(true) => {}
                Ok(false) => {
                    self.held().remove(&shard);
                    counts.lost += 1;
                    changes.push(Change::Lost(shard));
                }
                Err(error) => {
                    tracing::warn!(message = "Cannot write a checkpoint; retrying with the next round.", shard = %shard, %error);
                    failed.push(shard);
                }
            }
        }
        failed
    }

    /// Hands a lease over to the worker that asked for it (after its last checkpoint).
    pub async fn hand_over(&mut self, shard: &str, counts: &mut LeaseCounts) {
        let Some(held) = self.held().remove(shard) else {
            return;
        };
        match self.table.release(shard, held.handoff_to.as_deref()).await {
            Ok(_) => {
                counts.handed_out += 1;
                tracing::info!(message = "Handed a lease over.", shard = %shard, to = held.handoff_to.as_deref().unwrap_or("nobody"));
            }
            Err(error) => {
                // Not renewed any more, so it runs out, and the asker takes it then.
                tracing::warn!(message = "Cannot hand a lease over; it runs out instead.", shard = %shard, %error)
            }
        }
    }

    /// Gives up every lease (on shutdown, after the last checkpoints): those held, any
    /// the table still names this worker as owner of (handed over meanwhile, or a
    /// finished one whose release failed), and withdraws its requests for others.
    pub async fn release_all(&mut self) {
        let me = self.table.worker.clone();
        self.stop_renewing();
        let mut mine: Vec<String> = std::mem::take(&mut *self.held()).into_keys().collect();
        let mut asked = Vec::new();
        match self.table.scan().await {
            Ok(leases) => {
                for lease in leases {
                    if lease.owner.as_deref() == Some(me.as_str()) && !mine.contains(&lease.shard) {
                        mine.push(lease.shard.clone());
                    }
                    if lease.pending_owner.as_deref() == Some(me.as_str()) {
                        asked.push(lease.shard);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(message = "Cannot scan the lease table before releasing.", %error)
            }
        }
        for shard in mine {
            if let Err(error) = self.table.release(&shard, None).await {
                tracing::warn!(message = "Cannot release a lease; it runs out instead.", shard = %shard, %error);
            }
        }
        for shard in asked {
            if let Err(error) = self.table.withdraw(&shard).await {
                tracing::warn!(message = "Cannot withdraw a request for a lease.", shard = %shard, %error);
            }
        }
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
