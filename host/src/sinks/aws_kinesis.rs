//! The `aws_kinesis_streams` sink: every line becomes one record of a Kinesis data stream
//! (e.g. the stream a Druid Kinesis supervisor ingests).
//!
//! Lines go out with PutRecords in requests of at most 500 records and 5 MiB. Records
//! that a request rejects (throttling, internal errors) and requests that fail on the
//! way (timeouts, an endpoint away, throttling) are sent again with a doubling, jittered
//! pause until they are accepted: a batch is done, and so acknowledged upstream, only
//! when every one of its lines is in the stream. A slow or unreachable stream therefore
//! slows the pipeline instead of losing records. Errors that no retry can mend (the
//! stream deleted, access denied, a KMS key gone: [`fatal_code`]) fail the pipeline.

use crate::aws::kinesis::{StreamConfig, StreamRef};
use crate::config::{BuildError, Invalid, Upstream};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::{AttemptError, BuiltSink, SinkError, SinkKind, retrying};
use crate::topology::output::Input;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `aws_kinesis_streams` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids.
    pub inputs: Vec<String>,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub stream: StreamConfig,
    /// Top-level JSON field whose value is the partition key (e.g. `srcaddr`); default
    /// (or a line without it): a hash of the line, spread over the shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key_field: Option<String>,
}

impl Config {
    /// What the writer needs.
    pub fn spec(&self) -> KinesisSinkSpec {
        KinesisSinkSpec {
            stream: self.stream.clone(),
            partition_key: self
                .partition_key_field
                .clone()
                .map_or(PartitionKey::Spread, PartitionKey::Field),
        }
    }
}

impl SinkKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn validate(&self, key: &str, _upstream: &Upstream) -> Result<(), Invalid> {
        self.stream.validate(key)
    }

    fn build(&self, _id: &str) -> Result<BuiltSink, BuildError> {
        let spec = self.spec();
        Ok(Box::new(move |input, cx| {
            run(&cx.id, &spec, input, &cx.metrics, &cx.lifecycle)?;
            Ok(None)
        }))
    }
}

/// Why a write to the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum KinesisSinkError {
    /// A PutRecords call failed as a whole.
    #[error("PutRecords failed: {summary}")]
    Put {
        /// The error code and message (or what the client saw).
        summary: String,
        /// The SDK's error.
        #[source]
        error: aws_sdk_kinesis::Error,
    },
    /// PutRecords took part of a request.
    #[error("PutRecords rejected {rejected} of {sent} records")]
    Rejected {
        /// Records not taken.
        rejected: usize,
        /// Records sent.
        sent: usize,
    },
    /// The stream could not be read back to settle an unknown outcome.
    #[error("reading the stream back: {0}")]
    ReadBack(#[source] aws_sdk_kinesis::Error),
    /// The drain deadline passed before (or while) the stream was read back.
    #[error("gave up at the drain deadline before reading the stream back")]
    ReadBackGivenUp,
}

impl crate::sinks::Labeled for KinesisSinkError {
    fn error_type(&self) -> &'static str {
        "put_failed"
    }
}

/// Records per PutRecords request (the API's limit).
const MAX_RECORDS: usize = 500;
/// Bytes (data + partition keys) per PutRecords request (the API's limit).
const MAX_BYTES: usize = 5 << 20;
/// How long after a call whose outcome is unknown the stream is read back: a request
/// the client gave up on (a timeout) may still be applied by the service meanwhile.
pub const READ_BACK_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
/// Largest record payload Kinesis accepts.
const MAX_RECORD: usize = 1 << 20;

/// How records get their partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// A key spread evenly over the shards (a hash of the line).
    Spread,
    /// The value of this top-level JSON field (a line without it: spread).
    Field(String),
}

/// Everything the sink needs.
#[derive(Debug, Clone)]
pub struct KinesisSinkSpec {
    /// The stream and how to reach it.
    pub stream: StreamConfig,
    /// How records are keyed.
    pub partition_key: PartitionKey,
}

/// The partition key of `line`.
pub fn key_of(line: &str, key: &PartitionKey) -> String {
    let spread = || {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        line.hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    };
    match key {
        PartitionKey::Spread => spread(),
        PartitionKey::Field(field) => serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| match v.get(field) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => {
                    Some(s.chars().take(256).collect())
                }
                Some(serde_json::Value::Null) | None => None,
                Some(other) => Some(other.to_string().chars().take(256).collect()),
            })
            .unwrap_or_else(spread),
    }
}

/// Splits entries into PutRecords requests within the API's limits.
pub fn requests(mut entries: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !entries.is_empty() {
        let n = first_request_len(&entries);
        out.push(entries.drain(..n).collect());
    }
    out
}

/// A connection to the stream that puts lines as records, each until it is accepted.
pub struct KinesisWriter {
    id: String,
    spec: KinesisSinkSpec,
    runtime: &'static tokio::runtime::Runtime,
    client: aws_sdk_kinesis::Client,
}

impl KinesisWriter {
    /// Connects (lazily: the first request reaches the endpoint) for sink `id`.
    pub fn new(id: &str, spec: &KinesisSinkSpec) -> KinesisWriter {
        let runtime = crate::aws::runtime();
        let client = runtime.block_on(spec.stream.client_without_retries());
        KinesisWriter {
            id: id.to_string(),
            spec: spec.clone(),
            runtime,
            client,
        }
    }

    /// Puts every line of `text` as one record and returns once all are in the stream
    /// (lines over the record size limit are counted and dropped); returns how many were
    /// put, or the error that stopped it (a permanent one, or the last transient one when
    /// the drain deadline passed).
    pub fn write(
        &self,
        text: &str,
        metrics: &ComponentMetrics,
        lifecycle: &Lifecycle,
    ) -> Result<u64, SinkError> {
        let mut entries = Vec::new();
        for line in text.lines() {
            if line.len() > MAX_RECORD {
                metrics.error("record_too_large", 1);
                metrics.discarded(1);
                tracing::error!(message = "Line larger than a Kinesis record; dropped.", component_id = %self.id, bytes = line.len());
                continue;
            }
            entries.push((line.to_string(), key_of(line, &self.spec.partition_key)));
        }
        let put = entries.len() as u64;
        // At least once: a request whose answer was lost is sent again.
        self.put_all(entries, metrics, lifecycle, None, &|| true)?;
        Ok(put)
    }

    /// Puts `lines` (each one row carrying `"publication": "<id>/<n>"`, see
    /// [`publication_of`]) so that each is in the stream exactly once, also when
    /// answers are lost: when an attempt's outcome is unknown (no answer), the stream is
    /// read back from `since_ms` (epoch milliseconds) and only the rows it does not hold
    /// yet are sent again. With `settle`, it starts with a read-back (a publication
    /// begun before a crash). Every request is sent only while `may_write` says so (a
    /// lease still held): `Ok(false)` when it stopped for that.
    pub fn put_exactly_once(
        &self,
        lines: &[String],
        since_ms: u64,
        settle: bool,
        metrics: &ComponentMetrics,
        lifecycle: &Lifecycle,
        may_write: &dyn Fn() -> bool,
    ) -> Result<bool, SinkError> {
        let entries = lines
            .iter()
            .map(|line| (line.clone(), key_of(line, &self.spec.partition_key)))
            .collect();
        self.put_all(
            entries,
            metrics,
            lifecycle,
            Some((since_ms, settle)),
            may_write,
        )
    }

    /// Puts every entry, in requests within the API's limits, retrying transient
    /// failures. With `read_back` (`since_ms`, start with a read-back), an attempt whose
    /// outcome is unknown is settled by reading the stream back before anything is sent
    /// again. No request is sent once `may_write` says no: then `Ok(false)`.
    fn put_all(
        &self,
        mut pending: Vec<(String, String)>,
        metrics: &ComponentMetrics,
        lifecycle: &Lifecycle,
        read_back: Option<(u64, bool)>,
        may_write: &dyn Fn() -> bool,
    ) -> Result<bool, SinkError> {
        let mut unknown = read_back.is_some_and(|(_, settle)| settle);
        retrying(&self.id, metrics, lifecycle, || {
            if unknown && let Some((since_ms, _)) = read_back {
                // A call given up on may still be applied by the service a moment
                // later: the read-back waits for that first.
                if !lifecycle.pause(READ_BACK_DELAY) {
                    return Err(AttemptError::Transient(Box::new(
                        KinesisSinkError::ReadBackGivenUp,
                    )));
                }
                let present = self
                    .runtime
                    .block_on(published_since(
                        &self.client,
                        &self.spec.stream.stream(),
                        since_ms,
                        lifecycle,
                    ))
                    .map_err(|e| AttemptError::Transient(Box::new(e)))?;
                metrics.count("kinesis_read_backs_total", 1);
                let before = pending.len();
                pending.retain(|(line, _)| {
                    publication_of(line).is_none_or(|id| !present.contains(id))
                });
                metrics.count("kinesis_settled_total", (before - pending.len()) as u64);
                unknown = false;
            }
            while !pending.is_empty() {
                if !may_write() {
                    return Ok(false);
                }
                let n = first_request_len(&pending);
                let mut request: Vec<(String, String)> = pending[..n].to_vec();
                let result = self.runtime.block_on(put_once(
                    &self.client,
                    &self.spec.stream.stream(),
                    &mut request,
                    metrics,
                    &mut unknown,
                ));
                // What the request did not take (all of it, when it failed) stays.
                pending.splice(..n, request);
                result?;
                crate::failpoint::hit("kinesis_sink.after_request");
            }
            Ok(true)
        })
    }
}

/// How many of `entries`, from the first, fit in one PutRecords request.
fn first_request_len(entries: &[(String, String)]) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for (data, key) in entries {
        let size = data.len() + key.len();
        if n == MAX_RECORDS || (n > 0 && bytes + size > MAX_BYTES) {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

/// The `publication` value (`"<id>/<n>"`) of a row, if it has one.
pub fn publication_of(line: &str) -> Option<&str> {
    let at = line.rfind(PUBLICATION_KEY)? + PUBLICATION_KEY.len();
    let rest = &line[at..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// How a row names its publication: `,"publication":"<id>/<n>"` before its closing brace.
const PUBLICATION_KEY: &str = "\"publication\":\"";

/// Adds `"publication": "<id>/<n>"` to a JSON object row (without its newline).
pub fn with_publication(row: &str, id: &str, n: usize) -> String {
    let body = row.trim_end().strip_suffix('}').unwrap_or(row);
    format!("{body},{PUBLICATION_KEY}{id}/{n}\"}}")
}

/// The publication ids of every record that `stream` received from `since_ms` (epoch
/// milliseconds) on, read from every shard up to its latest record.
///
/// A throttled read is tried again after a pause from where it was; the scan gives up
/// when the drain deadline passes.
async fn published_since(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    since_ms: u64,
    lifecycle: &Lifecycle,
) -> Result<std::collections::HashSet<String>, KinesisSinkError> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let describe = |e: aws_sdk_kinesis::Error| KinesisSinkError::ReadBack(e);
    let mut present = std::collections::HashSet::new();
    let shards = crate::aws::kinesis::list_shards(client, stream)
        .await
        .map_err(describe)?;
    for shard in shards {
        let mut iterator = client
            .get_shard_iterator()
            .set_stream_name(stream.name.clone())
            .set_stream_arn(stream.arn.clone())
            .shard_id(&shard.id)
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                since_ms as i64,
            ))
            .send()
            .await
            .map_err(|e| describe(e.into()))?
            .shard_iterator()
            .map(str::to_string);
        let mut pause = std::time::Duration::from_millis(200);
        while let Some(current) = iterator.clone() {
            if lifecycle.aborted() {
                return Err(KinesisSinkError::ReadBackGivenUp);
            }
            let page = match client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
            {
                Ok(page) => page,
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()) =>
                {
                    // Kinesis allows 5 reads a second per shard, shared with Druid.
                    tokio::time::sleep(crate::util::jittered(pause)).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
                Err(error) => {
                    return Err(describe(error.into()));
                }
            };
            for record in page.records() {
                if let Ok(text) = std::str::from_utf8(record.data().as_ref())
                    && let Some(id) = publication_of(text)
                {
                    present.insert(id.to_string());
                }
            }
            let caught_up =
                page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0;
            iterator = page.next_shard_iterator().map(str::to_string);
            if caught_up {
                break;
            }
        }
    }
    Ok(present)
}

/// Sends every batch until the input closes.
pub fn run(
    id: &str,
    spec: &KinesisSinkSpec,
    input: &mut Input,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), SinkError> {
    let writer = KinesisWriter::new(id, spec);
    while let Some(batch) = input.recv() {
        metrics.received(batch.lines as u64);
        let sent = writer.write(&batch.text, metrics, lifecycle)?;
        metrics.sent(sent);
        // All of it is in the stream: its acknowledgement may be released.
        batch.done();
    }
    Ok(())
}

/// Error codes after which sending again cannot succeed: the stream is gone or this
/// host may not write to it, or the request itself is wrong.
const FATAL_CODES: [&str; 10] = [
    "ResourceNotFoundException",
    "AccessDeniedException",
    "InvalidArgumentException",
    "ValidationException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSNotFoundException",
    "KMSInvalidStateException",
];

/// Whether a service error with this code is permanent.
pub fn fatal_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| FATAL_CODES.contains(&code))
}

/// One PutRecords call for `pending`; keeps in `pending` only the records it did not
/// take (throttled or failed inside the service), which are worth sending again.
///
/// `unknown` is set when the call got no answer (a timeout, a connection cut): then the
/// service may have taken any of the records.
pub(crate) async fn put_once(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    pending: &mut Vec<(String, String)>,
    metrics: &ComponentMetrics,
    unknown: &mut bool,
) -> Result<(), AttemptError> {
    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    let records: Vec<PutRecordsRequestEntry> = pending
        .iter()
        .map(|(data, key)| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(data.as_bytes().to_vec()))
                .partition_key(key)
                .build()
                .expect("data and key are set")
        })
        .collect();
    let result = client
        .put_records()
        .set_stream_name(stream.name.clone())
        .set_stream_arn(stream.arn.clone())
        .set_records(Some(records))
        .send()
        .await;
    match result {
        Ok(output) => {
            // Keep only the records this request rejected, in order.
            let rejected: Vec<bool> = output
                .records()
                .iter()
                .map(|r| r.error_code().is_some())
                .collect();
            let before = pending.len();
            let mut index = 0;
            pending.retain(|_| {
                let keep = rejected.get(index).copied().unwrap_or(true);
                index += 1;
                keep
            });
            if pending.is_empty() {
                return Ok(());
            }
            metrics.count("kinesis_put_retries_total", pending.len() as u64);
            Err(AttemptError::Transient(Box::new(
                KinesisSinkError::Rejected {
                    rejected: pending.len(),
                    sent: before,
                },
            )))
        }
        Err(error) => {
            metrics.count("kinesis_put_retries_total", pending.len() as u64);
            // A service error is an answer: nothing was written. No answer, or a failure
            // inside the service (5xx), may have left any of the records written.
            let server_failed = error
                .raw_response()
                .is_some_and(|r| r.status().as_u16() >= 500);
            *unknown = error.as_service_error().is_none() || server_failed;
            let code = error.code().map(str::to_string);
            let summary = match (&code, error.message()) {
                (Some(code), message) => format!("{code}: {}", message.unwrap_or_default()),
                _ => aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string(),
            };
            let fatal = fatal_code(code.as_deref());
            let error = Box::new(KinesisSinkError::Put {
                summary,
                error: error.into(),
            });
            if fatal {
                Err(AttemptError::Fatal(error))
            } else {
                Err(AttemptError::Transient(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_within_the_api_limits() {
        let small: Vec<(String, String)> =
            (0..1201).map(|i| (format!("{i}"), "k".into())).collect();
        let sizes: Vec<usize> = requests(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 201]);
        let big: Vec<(String, String)> =
            (0..12).map(|_| ("x".repeat(1 << 20), "k".into())).collect();
        for request in requests(big) {
            let bytes: usize = request.iter().map(|(d, k)| d.len() + k.len()).sum();
            assert!(
                bytes <= MAX_BYTES && request.len() == 4,
                "{}",
                request.len()
            );
        }
    }

    #[test]
    fn partition_keys() {
        let line = r#"{"srcaddr":"10.0.0.1","srcport":443,"src_app":null}"#;
        assert_eq!(
            key_of(line, &PartitionKey::Field("srcaddr".into())),
            "10.0.0.1"
        );
        assert_eq!(key_of(line, &PartitionKey::Field("srcport".into())), "443");
        let spread = key_of(line, &PartitionKey::Spread);
        assert_eq!(spread.len(), 16);
        assert_eq!(key_of(line, &PartitionKey::Field("src_app".into())), spread);
        assert_eq!(
            key_of("not json", &PartitionKey::Field("x".into())).len(),
            16
        );
    }
}
