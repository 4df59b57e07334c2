//! The `aws_s3` source: flow-log objects that AWS delivers to S3, announced by S3 event
//! notifications on an SQS queue (plain, or wrapped by SNS or EventBridge), as Vector's
//! and Elastic's S3 inputs read them.
//!
//! The source long-polls the queue; for each `ObjectCreated` notification it streams the
//! object (gzip or plain text, its first line an S3 header that sets its format; or
//! Parquet, read a row group at a time and handed over as the same lines, see
//! [`parquet`]) into batches of lines, each object its own stream, each batch with an
//! acknowledgement. The
//! message is deleted only once every line of every object it names has been taken by
//! every sink; until then its visibility is extended (every half
//! `visibility_timeout_secs`), and a message still in flight at shutdown is made visible
//! again at once for the next reader. A host that dies leaves its messages to reappear
//! when their visibility runs out, and another host (or this one, restarted) reads the
//! object again: every line is delivered at least once. `s3:TestEvent` messages and
//! events other than object creations are deleted and counted; a message that is no S3
//! notification, and an object that cannot be read, go to `<id>.dead_letter` and the
//! message is deleted.
//!
//! With `leases`, every object is claimed in a lease table before it is read, and a
//! `druid` sink's publications are logged in the claim's row, so that a fleet counts
//! every flow of an object once in Druid rows ([`claims`]).
//!
//! Counters: `sqs_messages_total`, `sqs_messages_deleted_total`,
//! `sqs_visibility_extensions_total`, `s3_test_events_total`, `s3_other_events_total`,
//! `s3_objects_total`, `s3_object_bytes_total`; errors `invalid_notification`,
//! `object_unreadable`, `sqs_receive_failed`, `sqs_delete_failed`.

pub mod claims;
pub mod notifications;
pub mod parquet;

use super::{BatchAcks, Batcher, BuiltSource, LineLimits, SourceContext, SourceKind};
use crate::batch::LineBatch;
use crate::config::{BoxError, BuildError, Invalid};
use crate::sources::aws_kinesis::checkpoint::Checkpoints;
use crate::util::error_chain;
use claims::{Claimed, Claims};
use notifications::{Notification, ObjectRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `aws_s3` source's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Region of the bucket and the queue. Default: the standard AWS configuration chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override for S3 and SQS alike, e.g. a local moto server
    /// (`http://127.0.0.1:5000`; S3 is then addressed path-style). Default: AWS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The queue that announces the objects (or `backfill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsConfig>,
    /// Instead of a queue: the objects under a prefix, modified at or after a start time,
    /// read once in key order; the source ends when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
    /// A lease table shared by every host reading the queue (DynamoDB, created if
    /// missing): each object is claimed there before it is read, and `druid` sinks log
    /// their publications in its row, so every flow of an object is counted once in
    /// Druid rows across redeliveries, crashes and hosts (without it: at least once).
    /// The keys of a Kinesis source's `leases`; `scan_interval_ms` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<Box<crate::sources::aws_kinesis::leases::Config>>,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub lines: LineLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_are_read_to_the_second() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_utc("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        for bad in [
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00+01:00",
            "2026-12-01 00:00:00Z",
            "x026-12-01T00:00:00Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}

/// The SQS queue of S3 event notifications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue's URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
    pub queue_url: String,
    /// Seconds a receive waits for messages (long polling, 0–20).
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// Seconds a received message stays invisible to other readers; extended while its
    /// objects are in flight (1–43200).
    #[serde(default = "default_visibility_timeout_secs")]
    pub visibility_timeout_secs: u64,
    /// Delete each message once every line of its objects is acknowledged (off: leave
    /// it to reappear, for a dry run).
    #[serde(default = "default_delete_message")]
    pub delete_message: bool,
}

/// A backfill: the objects a listing finds instead of a queue's notifications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    /// The bucket.
    pub bucket: String,
    /// Only keys that start with this (`AWSLogs/123456789012/vpcflowlogs/`).
    #[serde(default)]
    pub prefix: String,
    /// Only objects last modified at or after this UTC time (`2026-12-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

/// Epoch seconds of a UTC time written `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())
            .flatten()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn default_poll_secs() -> u64 {
    15
}

fn default_visibility_timeout_secs() -> u64 {
    300
}

fn default_delete_message() -> bool {
    true
}

impl SourceKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        self.lines.validate(key)?;
        if let Some(leases) = &self.leases {
            leases.validate(&format!("{key}.leases"))?;
        }
        let sqs = match (&self.sqs, &self.backfill) {
            (Some(sqs), None) => sqs,
            (None, Some(backfill)) => {
                if backfill.bucket.trim().is_empty() {
                    return Err(Invalid::new(format!("{key}.backfill.bucket"), "is empty"));
                }
                if let Some(time) = &backfill.start_time
                    && parse_utc(time).is_none()
                {
                    return Err(Invalid::new(
                        format!("{key}.backfill.start_time"),
                        format!("`{time}` is not a UTC time like `2026-12-01T00:00:00Z`"),
                    ));
                }
                return Ok(());
            }
            _ => {
                return Err(Invalid::new(
                    format!("{key}.sqs"),
                    "needs exactly one of `sqs` (a queue of notifications) and `backfill` (a listing)",
                ));
            }
        };
        let key = format!("{key}.sqs");
        if sqs.queue_url.trim().is_empty() {
            return Err(Invalid::new(format!("{key}.queue_url"), "is empty"));
        }
        if sqs.poll_secs > 20 {
            return Err(Invalid::new(
                format!("{key}.poll_secs"),
                "is over 20 (SQS's longest wait)",
            ));
        }
        let visibility = sqs.visibility_timeout_secs;
        if !(1..=43_200).contains(&visibility) {
            return Err(Invalid::new(
                format!("{key}.visibility_timeout_secs"),
                "must be 1-43200 (SQS's range)",
            ));
        }
        Ok(())
    }

    fn build(&self, _id: &str) -> Result<BuiltSource, BuildError> {
        let config = self.clone();
        Ok(Box::new(move |cx| run(config, cx)))
    }
}

/// A received message whose objects are in flight.
struct InFlight {
    receipt: String,
    /// The objects' names in the acknowledgement store.
    objects: Vec<String>,
    /// When its visibility was last set.
    visible_from: Instant,
    /// Some object of it is held by another host: handed back, not deleted, once this
    /// host's objects are done.
    elsewhere: bool,
    /// Some object of it was left part way (the pipeline is stopping): it cannot finish
    /// here, and goes back to the queue.
    incomplete: bool,
}

impl InFlight {
    /// A message (`receipt`; empty for a listed object) received just now, none of its
    /// objects read yet.
    fn new(receipt: String) -> Self {
        InFlight {
            receipt,
            objects: Vec::new(),
            visible_from: Instant::now(),
            elsewhere: false,
            incomplete: false,
        }
    }
}

/// The clients and state of one running source.
struct Reader<'a> {
    config: &'a Config,
    /// The queue, unless this is a backfill.
    queue: Option<&'a SqsConfig>,
    cx: &'a SourceContext,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    runtime: &'static tokio::runtime::Runtime,
    store: Checkpoints,
    in_flight: Vec<InFlight>,
    /// Objects read in this run (numbers their readings, so a repeated notification of
    /// one object is its own stream).
    readings: u64,
    /// Claims on objects in a lease table, when the fleet shares one.
    claims: Option<Claims>,
    /// Under claims: objects whose end the table records (their messages may go).
    recorded: std::collections::HashSet<String>,
}

fn run(config: Config, cx: SourceContext) -> Result<(), BoxError> {
    let runtime = crate::aws::runtime();
    let base = runtime.block_on(
        crate::aws::ClientConfig {
            endpoint: config.endpoint.clone(),
            region: config.region.clone(),
        }
        .sdk_config(),
    );
    let s3_config = aws_sdk_s3::config::Builder::from(&base)
        .force_path_style(config.endpoint.is_some())
        .build();
    let store = Checkpoints::in_memory().halted_by(cx.lifecycle.halted());
    let claims = match &config.leases {
        Some(leases) => Some(Claims::connect(leases, &store, &cx.id).inspect_err(|_| {
            cx.metrics.error("lease_table_failed", 1);
        })?),
        None => None,
    };
    let mut reader = Reader {
        config: &config,
        queue: config.sqs.as_ref(),
        cx: &cx,
        s3: aws_sdk_s3::Client::from_conf(s3_config),
        sqs: aws_sdk_sqs::Client::new(&base),
        runtime,
        store,
        in_flight: Vec::new(),
        readings: 0,
        claims,
        recorded: Default::default(),
    };
    let stop = cx.lifecycle.stop_flag();
    if let Some(backfill) = &config.backfill {
        reader.backfill(backfill, stop)?;
    }
    while config.backfill.is_none() && !stop.load(Ordering::Relaxed) {
        reader.settle();
        match reader.receive(stop) {
            Ok(messages) => {
                for message in messages {
                    if stop.load(Ordering::Relaxed) {
                        // Not started: visible again at once.
                        if let Some(receipt) = message.receipt_handle() {
                            reader.make_visible(receipt, 0);
                        }
                        continue;
                    }
                    reader.handle(&message);
                }
            }
            Err(error) => {
                cx.metrics.error("sqs_receive_failed", 1);
                tracing::warn!(message = "Cannot receive from the queue; retrying.", component_id = %cx.id, %error);
                sleep_unless(stop, Duration::from_secs(1));
            }
        }
    }
    // What every sink has taken by now is deleted; the rest goes back to the queue.
    // Under claims, the positions reached are written before the claims are let go.
    let wait = match &reader.claims {
        Some(claims) => claims.drain_timeout(),
        None => Duration::from_secs(5),
    };
    let deadline = Instant::now() + wait;
    while reader.in_flight.iter().any(|m| !m.incomplete) && Instant::now() < deadline {
        reader.settle();
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.settle();
    // Claims first, so that whoever receives a message handed back can take its claim.
    if let Some(claims) = reader.claims.as_mut() {
        claims.release_all(&cx.metrics);
    }
    for message in std::mem::take(&mut reader.in_flight) {
        reader.make_visible(&message.receipt, 0);
    }
    Ok(())
}

/// Sleeps for `pause`, or less once `stop` is set.
fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Reader<'_> {
    /// One long poll of the queue (given up early when `stop` is set).
    fn receive(&self, stop: &AtomicBool) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let Some(sqs) = self.queue else {
            return Ok(Vec::new());
        };
        let call = self
            .sqs
            .receive_message()
            .queue_url(&sqs.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(sqs.poll_secs as i32)
            .visibility_timeout(sqs.visibility_timeout_secs as i32)
            .send();
        let answer = self.runtime.block_on(async {
            tokio::pin!(call);
            loop {
                tokio::select! {
                    answer = &mut call => return Some(answer),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stop.load(Ordering::Relaxed) {
                            return None;
                        }
                    }
                }
            }
        });
        match answer {
            None => Ok(Vec::new()),
            Some(Ok(answer)) => Ok(answer.messages.unwrap_or_default()),
            Some(Err(error)) => Err(error_chain(&error)),
        }
    }

    /// Reads what one message announces and keeps it in flight (or deletes it now when
    /// there is nothing to wait for).
    fn handle(&mut self, message: &aws_sdk_sqs::types::Message) {
        let metrics = &self.cx.metrics;
        metrics.count("sqs_messages_total", 1);
        let Some(receipt) = message.receipt_handle().map(str::to_string) else {
            return;
        };
        let body = message.body().unwrap_or_default();
        let objects = match notifications::parse(body) {
            Ok(Notification::Objects(objects)) => objects,
            Ok(Notification::Test) => {
                metrics.count("s3_test_events_total", 1);
                self.delete(&receipt);
                return;
            }
            Ok(Notification::Other(events)) => {
                metrics.count("s3_other_events_total", events.len() as u64);
                tracing::debug!(message = "Deleting a notification of events other than object creations.", component_id = %self.cx.id, ?events);
                self.delete(&receipt);
                return;
            }
            Err(error) => {
                metrics.error("invalid_notification", 1);
                self.dead_letter(
                    "sqs",
                    serde_json::json!({
                        "error": error.to_string(),
                        "component": self.cx.id,
                        "message_id": message.message_id(),
                        "body_prefix": body.chars().take(1024).collect::<String>(),
                    }),
                );
                self.delete(&receipt);
                return;
            }
        };
        let mut message = InFlight::new(receipt);
        for object in &objects {
            if let Some(name) = self.read_object(object, &mut message) {
                message.objects.push(name);
            }
        }
        self.in_flight.push(message);
        self.settle();
    }

    /// Streams one object into batches; returns its name in the store (`None`: nothing
    /// of it to wait for). An object that cannot be read (or stops being readable part
    /// way) is dead-lettered from there. Under claims, an object is read only once
    /// claimed, and reading stops if the claim goes.
    fn read_object(&mut self, object: &ObjectRef, message: &mut InFlight) -> Option<String> {
        self.readings += 1;
        let stream = format!("s3://{}/{}", object.bucket, object.key);
        let (name, boundaries) = match self.claims.as_mut() {
            Some(claims) => {
                let name = claims::claim_key(&object.bucket, &object.key, object.etag.as_deref());
                match claims.claim(&name, &self.store, &self.cx.metrics) {
                    Claimed::Read { boundaries } => (name, boundaries),
                    Claimed::Finished => return None,
                    Claimed::Elsewhere => {
                        message.elsewhere = true;
                        return None;
                    }
                }
            }
            None => (format!("{stream}#{}", self.readings), Vec::new()),
        };
        let lines = &self.config.lines;
        let sink = self.cx.sink(lines);
        let mut batcher = Batcher::new(&stream, sink)
            .with_acks(BatchAcks::new(self.store.clone(), name.clone()))
            .ending_at(boundaries);
        self.cx.metrics.count("s3_objects_total", 1);
        // The version announced, or the bytes of that ETag: never whatever the key holds
        // by now (that has a notification of its own).
        let opened = self.runtime.block_on(
            self.s3
                .get_object()
                .bucket(&object.bucket)
                .key(&object.key)
                .set_version_id(object.version_id.clone())
                .set_if_match(if_match(object))
                .send(),
        );
        let result = match opened {
            Ok(answer) => {
                let size = answer.content_length.unwrap_or(0).max(0) as u64;
                let body = Body {
                    runtime: self.runtime,
                    stream: answer.body,
                    chunk: bytes::Bytes::new(),
                    metrics: self.cx.metrics.clone(),
                };
                self.stream_lines(body, (object, size), &mut batcher, (&name, message))
            }
            Err(error) if superseded(&error) => Err(Stopped::Superseded),
            Err(error) => Err(Stopped::Unreadable(error_chain(&error))),
        };
        match result {
            Err(Stopped::ClaimLost) => {
                // Given up for good (a renewal that lands later must not revive it): the
                // message goes back to the queue, and whoever takes the claim reads it.
                tracing::info!(message = "An object's claim went while it was read; its next holder reads it.", component_id = %self.cx.id, object = %name);
                if let Some(claims) = self.claims.as_mut() {
                    claims.give_up(&name, &self.store);
                }
                message.incomplete = true;
                return None;
            }
            Err(Stopped::Superseded) => {
                // Written again since: the notification of the new bytes reads them.
                self.cx.metrics.count("s3_objects_superseded_total", 1);
                tracing::info!(message = "An object was written again before it was read; the newer one is read through its own notification.", component_id = %self.cx.id, bucket = %object.bucket, key = %object.key);
            }
            Err(Stopped::Stopping) => {
                // Not finished here: its message goes back to the queue.
                message.incomplete = true;
                tracing::info!(message = "Stopped in the middle of an object; it is read again from its last acknowledged position.", component_id = %self.cx.id, object = %name);
                return None;
            }
            Err(Stopped::Unreadable(error)) => {
                self.cx.metrics.error("object_unreadable", 1);
                tracing::error!(message = "Cannot read an S3 object; dead-lettered.", component_id = %self.cx.id, bucket = %object.bucket, key = %object.key, %error);
                self.dead_letter(
                    &stream,
                    serde_json::json!({
                        "error": format!("cannot read the object: {error}"),
                        "component": self.cx.id,
                        "stream": stream,
                        "bucket": object.bucket,
                        "key": object.key,
                        "etag": object.etag,
                        "version_id": object.version_id,
                    }),
                );
            }
            Ok(()) => {}
        }
        // The last batch ends the stream (and the object's acknowledgements).
        batcher.flush(true);
        Some(name)
    }

    /// Reads `body` (gzip or plain, or a Parquet object of `size` bytes) line by line
    /// into `batcher`, keeping `message` invisible meanwhile.
    fn stream_lines(
        &self,
        body: Body,
        (object, size): (&ObjectRef, u64),
        batcher: &mut Batcher<'_>,
        (name, message): (&str, &mut InFlight),
    ) -> Result<(), Stopped> {
        let unreadable = Stopped::Unreadable;
        let mut plain = BufReader::with_capacity(1 << 16, body);
        let head = plain.fill_buf().map_err(|e| unreadable(e.to_string()))?;
        // Between batches: keep the message invisible, and stop once the claim is gone
        // or the pipeline stops.
        let stop = self.cx.lifecycle.stop_flag();
        let go_on = |message: &mut InFlight| {
            self.keep_invisible(message);
            if stop.load(Ordering::Relaxed) {
                Err(Stopped::Stopping)
            } else if self.claims.as_ref().is_some_and(|c| !c.holds(name)) {
                Err(Stopped::ClaimLost)
            } else {
                Ok(())
            }
        };
        if head.starts_with(parquet::MAGIC) {
            // Parquet is read by ranges from its footer on: this download is not needed.
            drop(plain);
            let ranged = parquet::RangedObject {
                runtime: self.runtime,
                client: self.s3.clone(),
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                version_id: object.version_id.clone(),
                if_match: if_match(object),
                size,
                metrics: self.cx.metrics.clone(),
            };
            let mut sent = batcher.batches();
            let mut stopped = Ok(());
            let read = parquet::lines(ranged, |line| {
                batcher.push(line, line.len());
                if batcher.batches() != sent {
                    sent = batcher.batches();
                    stopped = go_on(message);
                    if stopped.is_err() {
                        return std::ops::ControlFlow::Break(());
                    }
                }
                std::ops::ControlFlow::Continue(())
            });
            stopped?;
            return read.map_err(|e| {
                unreadable(format!("Parquet, after {} batches: {e}", batcher.batches()))
            });
        }
        let gzip = crate::util::is_gzip(head);
        let mut text: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(plain),
            ))
        } else {
            Box::new(plain)
        };
        let max = self.config.lines.max_line_bytes;
        let mut line = Vec::new();
        let mut sent = batcher.batches();
        loop {
            let length = super::read_line_bounded(&mut text, &mut line, max + 1)
                .map_err(|e| unreadable(format!("after {} batches: {e}", batcher.batches())))?;
            if length == 0 {
                return Ok(());
            }
            batcher.push(&line, length);
            if batcher.batches() != sent {
                sent = batcher.batches();
                go_on(message)?;
            }
        }
    }

    /// Reads every object of a listing (key order, modified at or after the start time),
    /// then ends: the pipeline drains what is in flight and stops.
    fn backfill(&mut self, backfill: &Backfill, stop: &AtomicBool) -> Result<(), BoxError> {
        let since = backfill.start_time.as_deref().and_then(parse_utc);
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&backfill.bucket)
            .prefix(&backfill.prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = self.runtime.block_on(pages.next()) {
            let page = page.map_err(|e| format!("cannot list the bucket: {}", error_chain(&e)))?;
            for found in page.contents() {
                let modified = found.last_modified().map(|t| t.secs());
                if since.is_some_and(|since| modified.is_some_and(|m| m < since)) {
                    continue;
                }
                if let Some(key) = found.key() {
                    objects.push(ObjectRef {
                        bucket: backfill.bucket.clone(),
                        key: key.to_string(),
                        etag: found
                            .e_tag()
                            .map(|e| notifications::bare_etag(e).to_string()),
                        version_id: None,
                        size: found.size().map(|s| s.max(0) as u64),
                    });
                }
            }
        }
        self.cx
            .metrics
            .gauge("s3_backfill_objects", objects.len() as i64);
        // Under claims, objects another host holds are tried again once a lease period
        // has passed (so that a claim a dead host left is taken), until none is left.
        // Each object read is waited for like a message of its own (until its end is
        // recorded), so that it is forgotten as soon as it is done.
        let mut pending: Vec<&ObjectRef> = objects.iter().collect();
        while !pending.is_empty() && !stop.load(Ordering::Relaxed) {
            let mut held_elsewhere = Vec::new();
            for object in pending {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut listed = InFlight::new(String::new());
                if let Some(name) = self.read_object(object, &mut listed) {
                    listed.objects.push(name);
                }
                if listed.elsewhere {
                    held_elsewhere.push(object);
                } else if self.claims.is_some() {
                    self.in_flight.push(listed);
                }
                self.settle();
            }
            let Some(retry) = self.claims.as_ref().map(Claims::retry_secs) else {
                break;
            };
            if !held_elsewhere.is_empty() {
                sleep_unless(stop, Duration::from_secs(retry));
            }
            pending = held_elsewhere;
        }
        Ok(())
    }

    /// Deletes the messages whose objects every sink has taken, and extends the
    /// visibility of the others that need it.
    fn settle(&mut self) {
        let store = self.store.clone();
        let mut lost = Vec::new();
        if let Some(claims) = self.claims.as_mut() {
            let step = claims.step(&store, &self.cx.metrics);
            self.recorded.extend(step.finished);
            lost = step.lost;
        }
        if !lost.is_empty() {
            // Another host holds those objects now: their messages cannot finish here
            // and go back to the queue once the rest of them is done.
            for message in &mut self.in_flight {
                let before = message.objects.len();
                message.objects.retain(|o| !lost.contains(o));
                message.incomplete |= message.objects.len() != before;
            }
        }
        let recorded = &self.recorded;
        let claimed = self.claims.is_some();
        let done = |m: &InFlight| {
            m.objects.iter().all(|o| match claimed {
                true => recorded.contains(o),
                false => store.get(o).finished,
            })
        };
        let (finished, waiting): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(done);
        self.in_flight = waiting;
        for message in finished {
            for object in &message.objects {
                self.store.forget(object);
                self.recorded.remove(object);
            }
            if message.receipt.is_empty() {
                continue;
            }
            match (message.elsewhere, &self.claims) {
                // Back once the other host has finished, or its claim has run out.
                (true, Some(claims)) => {
                    let retry = claims.retry_secs();
                    self.make_visible(&message.receipt, retry);
                }
                _ if message.incomplete => self.make_visible(&message.receipt, 0),
                _ => self.delete(&message.receipt),
            }
        }
        let mut waiting = std::mem::take(&mut self.in_flight);
        for message in &mut waiting {
            self.keep_invisible(message);
        }
        self.in_flight = waiting;
    }

    /// Extends `message`'s visibility once half of it has passed.
    fn keep_invisible(&self, message: &mut InFlight) {
        let Some(sqs) = self.queue else {
            return;
        };
        let timeout = sqs.visibility_timeout_secs;
        if message.visible_from.elapsed() < Duration::from_millis(timeout * 500) {
            return;
        }
        let call = self
            .sqs
            .change_message_visibility()
            .queue_url(&sqs.queue_url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(timeout as i32)
            .send();
        match self.runtime.block_on(call) {
            Ok(_) => {
                message.visible_from = Instant::now();
                self.cx.metrics.count("sqs_visibility_extensions_total", 1);
            }
            Err(error) => {
                tracing::warn!(message = "Cannot extend a message's visibility; another reader may read its objects too.", component_id = %self.cx.id, error = %error_chain(&error));
            }
        }
    }

    /// Makes a message visible again after `secs` (it was not finished here).
    fn make_visible(&self, receipt: &str, secs: u64) {
        let Some(sqs) = self.queue else {
            return;
        };
        let call = self
            .sqs
            .change_message_visibility()
            .queue_url(&sqs.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs.min(43_200) as i32)
            .send();
        if let Err(error) = self.runtime.block_on(call) {
            tracing::debug!(message = "Cannot hand a message back; it reappears when its visibility runs out.", component_id = %self.cx.id, error = %error_chain(&error));
        }
    }

    /// Deletes a message (when `delete_message` is on).
    fn delete(&self, receipt: &str) {
        let Some(sqs) = self.queue.filter(|sqs| sqs.delete_message) else {
            return;
        };
        let call = self
            .sqs
            .delete_message()
            .queue_url(&sqs.queue_url)
            .receipt_handle(receipt)
            .send();
        match self.runtime.block_on(call) {
            Ok(_) => self.cx.metrics.count("sqs_messages_deleted_total", 1),
            Err(error) => {
                self.cx.metrics.error("sqs_delete_failed", 1);
                tracing::warn!(message = "Cannot delete a message; it reappears and its objects are read again.", component_id = %self.cx.id, error = %error_chain(&error));
            }
        }
    }

    /// Sends one dead letter.
    fn dead_letter(&self, stream: &str, letter: serde_json::Value) {
        if self.cx.dead_letters.is_unconnected() {
            self.cx.metrics.discarded(1);
            return;
        }
        self.cx.dead_letters.send(Arc::new(LineBatch {
            columns: None,
            permit: None,
            text: format!("{letter}\n"),
            lines: 1,
            stream: stream.into(),
            stream_start: false,
            stream_end: false,
            acks: Vec::new(),
        }));
    }
}

/// The `If-Match` of a read of `object` that names no version: its ETag.
fn if_match(object: &ObjectRef) -> Option<String> {
    match (&object.version_id, &object.etag) {
        (None, Some(etag)) => Some(format!("\"{etag}\"")),
        _ => None,
    }
}

/// Whether a read failed because the object is no longer the one announced (412).
fn superseded<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 412)
}

/// Why an object's reading stopped early.
enum Stopped {
    /// The key holds other bytes by now (412): nothing of it is read.
    Superseded,
    /// It cannot be read (from here on): dead-lettered.
    Unreadable(String),
    /// Its claim went to another host, which reads it.
    ClaimLost,
    /// The pipeline is stopping: the object is left for the next reading.
    Stopping,
}

/// An object's body as a blocking reader: each chunk is awaited on the AWS runtime from
/// the source's own thread, so what is held is one chunk, not the object.
pub struct Body {
    runtime: &'static tokio::runtime::Runtime,
    stream: aws_sdk_s3::primitives::ByteStream,
    chunk: bytes::Bytes,
    metrics: Arc<crate::metrics::ComponentMetrics>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.try_next()) {
                Ok(Some(chunk)) => {
                    self.metrics
                        .count("s3_object_bytes_total", chunk.len() as u64);
                    self.chunk = chunk;
                }
                Ok(None) => return Ok(0),
                Err(error) => return Err(std::io::Error::other(error_chain(&error))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}
