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

use crate::kinesis::{StreamConfig, StreamRef};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::{AttemptError, retrying};
use crate::topology::output::Input;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

/// Records per PutRecords request (the API's limit).
const MAX_RECORDS: usize = 500;
/// Bytes (data + partition keys) per PutRecords request (the API's limit).
const MAX_BYTES: usize = 5 << 20;
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
pub fn requests(entries: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.0.len() + entry.1.len();
        match out.last_mut() {
            Some(last) if last.len() < MAX_RECORDS && bytes + size <= MAX_BYTES => {
                bytes += size;
                last.push(entry);
            }
            _ => {
                bytes = size;
                out.push(vec![entry]);
            }
        }
    }
    out
}

/// A connection to the stream that puts lines as records, each until it is accepted.
pub struct KinesisWriter {
    id: String,
    spec: KinesisSinkSpec,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_kinesis::Client,
}

impl KinesisWriter {
    /// Connects (lazily: the first request reaches the endpoint) for sink `id`.
    pub fn new(id: &str, spec: &KinesisSinkSpec) -> Result<KinesisWriter, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = runtime.block_on(spec.stream.client_without_retries());
        Ok(KinesisWriter {
            id: id.to_string(),
            spec: spec.clone(),
            runtime,
            client,
        })
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
    ) -> Result<u64, String> {
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
        let mut put = 0;
        for request in requests(entries) {
            let sent = request.len() as u64;
            let mut pending = request;
            retrying(&self.id, "put_failed", metrics, lifecycle, || {
                self.runtime.block_on(put_once(
                    &self.client,
                    &self.spec.stream.stream,
                    &mut pending,
                    metrics,
                ))
            })?;
            put += sent;
        }
        Ok(put)
    }
}

/// Sends every batch until the input closes.
pub fn run(
    id: &str,
    spec: &KinesisSinkSpec,
    input: &mut Input,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), String> {
    let writer = KinesisWriter::new(id, spec)?;
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
async fn put_once(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    pending: &mut Vec<(String, String)>,
    metrics: &ComponentMetrics,
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
            Err(AttemptError::Transient(format!(
                "PutRecords rejected {} of {before} records",
                pending.len()
            )))
        }
        Err(error) => {
            metrics.count("kinesis_put_retries_total", pending.len() as u64);
            let code = error.code().map(str::to_string);
            let message = match (&code, error.message()) {
                (Some(code), message) => {
                    format!("PutRecords failed: {code}: {}", message.unwrap_or_default())
                }
                _ => format!(
                    "PutRecords failed: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&error)
                ),
            };
            if fatal_code(code.as_deref()) {
                Err(AttemptError::Fatal(message))
            } else {
                Err(AttemptError::Transient(message))
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
