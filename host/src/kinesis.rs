//! Reading Kinesis data streams with `aws-sdk-kinesis`: the client, shard discovery and
//! per-shard polling shared by the `aws_kinesis_streams` source and metadata tables.

use aws_sdk_kinesis::types::ShardIteratorType;

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

/// A stream and how to reach it: what every Kinesis reader and writer is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream.
    pub stream: StreamRef,
    /// Endpoint override (a local Kinesis in tests); `None` uses AWS's.
    pub endpoint: Option<String>,
    /// Region; `None` uses the standard AWS configuration chain.
    pub region: Option<String>,
}

impl StreamConfig {
    /// A client from the standard AWS configuration chain (environment, profile, IMDS),
    /// with the endpoint and region overrides.
    pub async fn client(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&aws_config(&self.region, &self.endpoint).await)
    }

    /// A client whose calls the SDK never repeats by itself: for writers, which must see
    /// every failed attempt (a repeated PutRecords whose first answer was lost writes its
    /// records twice) and retry on their own terms.
    pub async fn client_without_retries(&self) -> aws_sdk_kinesis::Client {
        let config = aws_config(&self.region, &self.endpoint).await;
        let config = aws_sdk_kinesis::config::Builder::from(&config)
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }
}

/// How long connecting to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long one attempt of an AWS call may take (a hung endpoint is given up on).
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an AWS call may take with the SDK's own retries.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

/// AWS settings from the standard configuration chain (environment, profile, IMDS), with
/// region and endpoint overrides and timeouts on every call ([`CONNECT_TIMEOUT`],
/// [`ATTEMPT_TIMEOUT`], [`OPERATION_TIMEOUT`]): what every AWS client here is made from.
pub async fn aws_config(
    region: &Option<String>,
    endpoint: &Option<String>,
) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// How often readers fetch the shard list again (new shards after a reshard).
pub const RELIST: std::time::Duration = std::time::Duration::from_secs(5);
/// Shortest pause between two polls of a shard (Kinesis allows 5 GetRecords per second).
pub const MIN_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A pause between `d / 2` and `d`, so that callers that failed together do not retry
/// together.
pub fn jittered(d: std::time::Duration) -> std::time::Duration {
    let fraction = (random_u64() % 1000) as u32;
    d / 2 + d / 2 * fraction / 1000
}

/// A random number, good for jitter and unique ids (not for secrets): RandomState is
/// seeded from the OS for every process and differently for every instance.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

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
                    self.latest_from = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs() as i64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(800));
            assert!(
                d >= Duration::from_millis(400) && d <= Duration::from_millis(800),
                "{d:?}"
            );
        }
    }
}
