//! The lease table in DynamoDB: this worker's conditional reads and writes of lease rows.

use super::{AT_TIMESTAMP, LATEST, Lease, LeaseError, LeaseSpec, TRIM_HORIZON, new_epoch};
use crate::aws::kinesis::StartAt;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The lease table and this worker's calls on it.
pub struct LeaseTable {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    pub(super) worker: String,
}

/// A DynamoDB string.
pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// A DynamoDB number.
pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl LeaseTable {
    /// A client for `spec`'s table from the standard AWS configuration chain.
    /// Every call gives up after one renewal interval, so that a hung request neither
    /// outlives the lease it renews nor holds up a shutdown.
    pub async fn connect(spec: &LeaseSpec) -> LeaseTable {
        let config = spec.client.sdk_config().await;
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
    /// (hash key `key`, see [`crate::sources::aws_kinesis::leases::publications`]), on-demand capacity, unless
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
