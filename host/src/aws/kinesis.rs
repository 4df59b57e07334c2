//! Reading Kinesis data streams with `aws-sdk-kinesis`: the client, shard discovery and
//! per-shard polling shared by the `aws_kinesis_streams` source and metadata tables.

use aws_sdk_kinesis::types::ShardIteratorType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stream, by name or ARN (exactly one is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    /// Stream name.
    pub name: Option<String>,
    /// Stream ARN.
    pub arn: Option<String>,
}

/// Where a shard without a saved position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record the stream retains.
    TrimHorizon,
    /// Records written after reading starts.
    Latest,
    /// Records written at or after this epoch second.
    Timestamp(i64),
}

/// A stream and how to reach it: the keys every Kinesis table, source and sink has
/// (flattened into their configs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct StreamConfig {
    /// The stream's name (or `stream_arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The stream's ARN (or `stream_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    /// Endpoint override, e.g. a local Kinesis (`http://127.0.0.1:4567`). Default:
    /// AWS's endpoint for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region. Default: the standard AWS configuration chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl StreamConfig {
    /// The stream, by name or ARN.
    pub fn stream(&self) -> StreamRef {
        StreamRef {
            name: self.stream_name.clone(),
            arn: self.stream_arn.clone(),
        }
    }

    /// Where the client connects. (The keys are the stream's own, not a flattened
    /// [`crate::aws::ClientConfig`]: serde cannot refuse unknown keys through a flatten
    /// inside a flatten.)
    pub fn client_config(&self) -> crate::aws::ClientConfig {
        crate::aws::ClientConfig {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
        }
    }

    /// Whether any key of the stream is set.
    pub fn is_set(&self) -> bool {
        self.stream_name.is_some() || self.stream_arn.is_some()
    }

    /// `key.stream_name` names the stream exactly once.
    pub fn validate(&self, key: &str) -> Result<(), crate::config::Invalid> {
        if self.stream_name.is_some() == self.stream_arn.is_some() {
            return Err(crate::config::Invalid::new(
                format!("{key}.stream_name"),
                "needs exactly one of `stream_name` and `stream_arn`",
            ));
        }
        Ok(())
    }

    /// A client from the standard AWS configuration chain (environment, profile, IMDS),
    /// with the endpoint and region overrides.
    pub async fn client(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.client_config().sdk_config().await)
    }

    /// A client whose calls the SDK never repeats by itself: for writers, which must see
    /// every failed attempt (a repeated PutRecords whose first answer was lost writes its
    /// records twice) and retry on their own terms.
    pub async fn client_without_retries(&self) -> aws_sdk_kinesis::Client {
        let config = self.client_config().sdk_config().await;
        let config = aws_sdk_kinesis::config::Builder::from(&config)
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }
}

/// Where a reader starts the shards it has no position in: the keys of every Kinesis
/// reader (flattened into the source's and the changelog table's configs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct StartConfig {
    /// `trim_horizon` (the oldest record the stream retains, the default), `latest`
    /// (only records written after reading starts) or `at_timestamp` (with
    /// `start_timestamp`).
    #[serde(default)]
    pub start_position: StartPosition,
    /// Epoch seconds to start at, for `start_position = "at_timestamp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<i64>,
}

impl StartConfig {
    /// Where shards without a position start.
    pub fn start_at(&self) -> StartAt {
        self.start_position.start_at(self.start_timestamp)
    }

    /// `start_timestamp` is set exactly when `start_position = "at_timestamp"`.
    pub fn validate(&self, key: &str) -> Result<(), crate::config::Invalid> {
        if (self.start_position == StartPosition::AtTimestamp) != self.start_timestamp.is_some() {
            return Err(crate::config::Invalid::new(
                format!("{key}.start_timestamp"),
                "is required with, and only with, `start_position = \"at_timestamp\"`",
            ));
        }
        Ok(())
    }
}

/// Where a Kinesis reader starts a shard it has no position in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest record the stream retains.
    #[default]
    TrimHorizon,
    /// Only records written after reading starts.
    Latest,
    /// Records written at or after `start_timestamp` (sources only).
    AtTimestamp,
}

impl StartPosition {
    /// Where to start, with the timestamp of `at_timestamp`.
    pub fn start_at(self, timestamp: Option<i64>) -> StartAt {
        match self {
            StartPosition::TrimHorizon => StartAt::TrimHorizon,
            StartPosition::Latest => StartAt::Latest,
            StartPosition::AtTimestamp => StartAt::Timestamp(timestamp.unwrap_or_default()),
        }
    }
}

/// How often readers fetch the shard list again (new shards after a reshard).
pub const RELIST: std::time::Duration = std::time::Duration::from_secs(5);
/// Shortest pause between two polls of a shard (Kinesis allows 5 GetRecords per second).
pub const MIN_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A shard and the shards it was split or merged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id.
    pub id: String,
    /// Parent and adjacent parent (a merge has two), if any.
    pub parents: Vec<String>,
}

/// Every shard the stream lists (open and closed ones still retained).
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<Vec<ShardInfo>, aws_sdk_kinesis::Error> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut request = client.list_shards();
        request = match &next {
            Some(token) => request.next_token(token),
            None => request
                .set_stream_name(stream.name.clone())
                .set_stream_arn(stream.arn.clone()),
        };
        let page = request.send().await?;
        shards.extend(page.shards().iter().map(|s| {
            ShardInfo {
                id: s.shard_id().to_string(),
                parents: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_string)
                    .collect(),
            }
        }));
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(shards);
        }
    }
}

/// One record's payload and position.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record's bytes.
    pub data: Vec<u8>,
    /// Its sequence number in the shard.
    pub sequence: String,
}

/// A reading position in one shard.
#[derive(Debug, Default)]
pub struct ShardCursor {
    iterator: Option<String>,
    /// Sequence number of the last record read.
    pub last_sequence: Option<String>,
    /// The shard is closed and has been read to its end.
    pub finished: bool,
    /// How far the last read was behind the shard's tip, as Kinesis reported it.
    pub millis_behind_latest: Option<i64>,
    /// When a `latest` start first got an iterator (epoch seconds): a new iterator
    /// before any record was read starts there, not at the tip of the moment, so
    /// nothing written during a failed read is skipped.
    latest_from: Option<i64>,
}

impl ShardCursor {
    /// A cursor that continues after `sequence` (or starts per `start` when `None`).
    pub fn after(sequence: Option<String>) -> ShardCursor {
        ShardCursor {
            last_sequence: sequence,
            ..ShardCursor::default()
        }
    }

    /// Forgets the iterator (after an error or expiry); the next poll asks for one again
    /// from the last record read, so nothing is skipped or read twice.
    pub fn reset(&mut self) {
        self.iterator = None;
        self.millis_behind_latest = None;
    }

    /// Reads what is new in the shard, getting an iterator first if needed.
    pub async fn poll(
        &mut self,
        client: &aws_sdk_kinesis::Client,
        stream: &StreamRef,
        shard_id: &str,
        start: StartAt,
    ) -> Result<Vec<Record>, aws_sdk_kinesis::Error> {
        if self.finished {
            return Ok(Vec::new());
        }
        if self.iterator.is_none() {
            let request = client
                .get_shard_iterator()
                .set_stream_name(stream.name.clone())
                .set_stream_arn(stream.arn.clone())
                .shard_id(shard_id);
            let start = match (start, self.latest_from) {
                (StartAt::Latest, Some(seconds)) => StartAt::Timestamp(seconds),
                (other, _) => other,
            };
            let request = match (&self.last_sequence, start) {
                (Some(sequence), _) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(sequence),
                (None, StartAt::TrimHorizon) => {
                    request.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                (None, StartAt::Latest) => {
                    self.latest_from = Some(crate::util::epoch_seconds());
                    request.shard_iterator_type(ShardIteratorType::Latest)
                }
                (None, StartAt::Timestamp(seconds)) => request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs(seconds)),
            };
            self.iterator = request.send().await?.shard_iterator().map(str::to_string);
        }
        let Some(iterator) = self.iterator.clone() else {
            self.finished = true;
            return Ok(Vec::new());
        };
        let page = client
            .get_records()
            .shard_iterator(iterator)
            .limit(1000)
            .send()
            .await?;
        let records: Vec<Record> = page
            .records()
            .iter()
            .map(|r| Record {
                data: r.data().as_ref().to_vec(),
                sequence: r.sequence_number().to_string(),
            })
            .collect();
        if let Some(last) = records.last() {
            self.last_sequence = Some(last.sequence.clone());
        }
        self.millis_behind_latest = page.millis_behind_latest();
        match page.next_shard_iterator() {
            Some(next) => self.iterator = Some(next.to_string()),
            // A closed shard that has been read to its end.
            None => self.finished = true,
        }
        Ok(records)
    }
}
