//! The `aws_kinesis_streams` source: flow-log lines from every shard of a Kinesis data
//! stream.
//!
//! Every shard that may be read is polled at once (up to 64 GetRecords calls in flight,
//! on one thread's async runtime); each shard is its own stream of lines (so a format
//! header applies per shard). The shard list is fetched again every few seconds, and a
//! child shard from a split or merge is read only once all its parents have been
//! read to their end (the KCL's rule), so per-key order survives resharding. Records are
//! raw flow-log text (one or many lines) or CloudWatch Logs subscription envelopes
//! (gzip JSON: the `logEvents` of a `DATA_MESSAGE`; a `CONTROL_MESSAGE` is skipped),
//! detected per record or configured. A record that cannot be decoded goes to
//! `<id>.dead_letter` with its shard and sequence number, and the shard keeps flowing.
//!
//! Batches end on record boundaries and carry an acknowledgement; a shard's checkpoint
//! advances only once every sink has taken all its records up to that point (see
//! [`crate::sources::aws_kinesis::checkpoint`]). A restarted source resumes after each shard's checkpoint, and
//! a shard checkpointed as finished is never read again.
//!
//! Per-shard series (on the admin endpoint's `/metrics`): `kinesis_shard_records_total`,
//! `kinesis_shard_bytes_total`, `kinesis_millis_behind_latest` (as GetRecords reports it)
//! and `kinesis_checkpoint_lag_batches` (batches sent downstream and not yet taken by
//! every sink); totals `kinesis_records_total`, `kinesis_bytes_total`,
//! `kinesis_throttles_total`, `kinesis_expired_iterators_total`.

pub mod checkpoint;
mod config;
pub mod decode;
mod envelope;
pub mod leases;

pub use config::Config;
pub use decode::{DecodeError, Decoded, RecordFormat, decode};

use crate::aws::kinesis::{MIN_POLL, RELIST, Record, ShardCursor, StartAt};
use crate::batch::{ByteBudget, LineBatch};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sources::BATCH_MAX_BYTES;
use crate::topology::output::Output;
use crate::util::jittered;
use checkpoint::{Checkpoints, ShardCheckpoint, sequence_le};
use decode::base64;
use leases::publications::LeaseLog;
use leases::{Change, Coordinator, LeaseCounts, LeaseSpec, LeaseTable};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One shard being read.
struct Shard {
    id: Arc<str>,
    cursor: ShardCursor,
    /// Where the shard starts when it has no position.
    start: StartAt,
    parents: Vec<String>,
    /// Lines of whole records not sent yet.
    text: String,
    lines: usize,
    /// The last batch's length: the next batch's text is given that much room at its
    /// first record (one allocation per batch, not one per doubling), and none while
    /// the shard has nothing pending.
    room: usize,
    /// Sequence of the last record taken into `text` (or skipped) and not acknowledged
    /// by a sent batch yet.
    sequence: Option<String>,
    /// Batches sent in this run.
    batches: u64,
    /// The shard's end has been sent downstream (or was checkpointed in an earlier run).
    done: bool,
    /// After a failed read: the current backoff and when the shard may be read again.
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Another host asked for the shard's lease: not read any more, and handed over
    /// once what was read is acknowledged (or at this deadline).
    handing_off: Option<Instant>,
    /// Sequence numbers a batch must end at (where `druid` sinks' publications ended:
    /// [`Checkpoints::boundaries`]).
    boundaries: Vec<String>,
}

impl Shard {
    fn new(
        id: &str,
        position: ShardCheckpoint,
        start: StartAt,
        parents: Vec<String>,
        boundaries: Vec<String>,
    ) -> Shard {
        Shard {
            boundaries,
            id: id.into(),
            cursor: ShardCursor::after(position.sequence),
            start,
            parents,
            text: String::new(),
            lines: 0,
            room: 0,
            sequence: None,
            batches: 0,
            done: position.finished,
            backoff: Duration::ZERO,
            retry_at: None,
            handing_off: None,
        }
    }
}

/// Most shard reads in flight at once (GetRecords calls, one per shard).
const CONCURRENT_READS: usize = 64;
/// The most one GetRecords answer can hold (Kinesis's limit).
pub const GET_RECORDS_MAX_BYTES: usize = 10 << 20;

/// First and longest pause after a failed read (doubled on each failure, with jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// At the end of a run with leases: how long the source waits for acknowledgements
/// before renewing its leases again, and the first pause between checkpoint retries.
const HANDOFF_WAKE: Duration = Duration::from_millis(200);

/// Where batches go.
struct Sending<'a> {
    output: &'a Output,
    dead_letters: &'a Output,
    metrics: &'a ComponentMetrics,
    checkpoints: &'a Checkpoints,
    /// Bytes of this source's batches alive downstream (`max_in_flight_mib`).
    budget: &'a ByteBudget,
    /// Set when the pipeline stops: nothing waits on the budget any more.
    stop: &'a std::sync::atomic::AtomicBool,
}

impl Shard {
    /// Sends what is pending (with its acknowledgement); `end` marks the shard's end.
    fn send(&mut self, to: &Sending<'_>, end: bool) {
        if self.lines == 0 && self.sequence.is_none() && !end {
            return;
        }
        let ack = to
            .checkpoints
            .ack(&self.id, self.batches, self.sequence.take(), end);
        let (permit, waited) = to.budget.acquire(self.text.len(), to.stop);
        if waited {
            to.metrics.count("in_flight_budget_waits_total", 1);
        }
        to.metrics
            .gauge("in_flight_batch_bytes", to.budget.used() as i64);
        let batch = LineBatch {
            columns: None,
            permit: Some(permit),
            text: std::mem::take(&mut self.text),
            lines: std::mem::take(&mut self.lines),
            stream: self.id.clone(),
            stream_start: self.batches == 0,
            stream_end: end,
            acks: vec![ack],
        };
        // As much as this batch and an eighth more: a batch a little longer than the
        // one before needs no second allocation (and copy) of its text.
        self.room = (batch.text.len() + batch.text.len() / 8).min(2 * BATCH_MAX_BYTES);
        self.batches += 1;
        to.metrics.sent(batch.lines as u64);
        to.output.send(Arc::new(batch));
    }

    /// Takes what one poll returned, or backs off after a failed one.
    fn handle(
        &mut self,
        component: &str,
        polled: Result<Vec<Record>, aws_sdk_kinesis::Error>,
        config: &Config,
        to: &Sending<'_>,
    ) {
        let metrics = to.metrics;
        let shard_id = &*self.id.clone();
        match polled {
            Ok(records) => {
                self.backoff = Duration::ZERO;
                self.retry_at = None;
                let bytes = records.iter().map(|r| r.data.len() as u64).sum();
                metrics.count("kinesis_records_total", records.len() as u64);
                metrics.count("kinesis_bytes_total", bytes);
                metrics.shard_count(
                    "kinesis_shard_records_total",
                    shard_id,
                    records.len() as u64,
                );
                metrics.shard_count("kinesis_shard_bytes_total", shard_id, bytes);
                if let Some(behind) = self.cursor.millis_behind_latest {
                    metrics.shard_gauge("kinesis_millis_behind_latest", shard_id, behind);
                }
                for record in &records {
                    self.take(component, record, config, to);
                }
                self.send(to, false);
                // Batches sent but not yet taken by every sink (checkpoint lag).
                let lag = self
                    .batches
                    .saturating_sub(to.checkpoints.checkpointed_batches(shard_id));
                metrics.shard_gauge("kinesis_checkpoint_lag_batches", shard_id, lag as i64);
                if self.cursor.finished {
                    self.send(to, true);
                    self.done = true;
                    tracing::info!(message = "Shard read to its end.", component_id = %component, shard = %shard_id);
                }
            }
            Err(error) => {
                use aws_sdk_kinesis::Error as E;
                match &error {
                    E::ProvisionedThroughputExceededException(_) => {
                        metrics.count("kinesis_throttles_total", 1)
                    }
                    E::ExpiredIteratorException(_) => {
                        metrics.count("kinesis_expired_iterators_total", 1)
                    }
                    _ => metrics.error("read_failed", 1),
                }
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                let pause = jittered(self.backoff);
                self.retry_at = Some(Instant::now() + pause);
                tracing::warn!(message = "Shard read failed; it is read again from its last record after a pause.", component_id = %component, shard = %shard_id, pause_ms = pause.as_millis() as u64, %error);
                // A new iterator is asked for from the last record read.
                self.cursor.reset();
            }
        }
    }

    fn take(&mut self, component: &str, record: &Record, config: &Config, to: &Sending<'_>) {
        // A batch ends at every boundary, so none holds records on both sides of one.
        if let Some(last) = &self.sequence
            && self
                .boundaries
                .iter()
                .any(|b| sequence_le(last, b) && !sequence_le(&record.sequence, b))
        {
            self.send(to, false);
        }
        if self.text.capacity() == 0 {
            self.text.reserve(self.room);
        }
        let start = self.text.len();
        match decode(
            &record.data,
            config.record_format,
            config.max_record_bytes,
            &mut self.text,
        ) {
            Ok(Decoded::Lines) => {
                let (count, longest, crlf) = line_stats(&self.text[start..]);
                to.metrics.received(count as u64);
                let mut letters = String::new();
                let mut long = 0;
                if longest <= config.lines.max_line_bytes && !crlf {
                    // Every line fits and none ends in a carriage return: the record's
                    // lines stay in the batch as they were decoded into it.
                    self.lines += count;
                } else {
                    let lines = self.text.split_off(start);
                    for line in lines.lines() {
                        if line.len() > config.lines.max_line_bytes {
                            to.metrics.error("line_too_long", 1);
                            letters.push_str(&crate::sources::long_line_letter(
                                component,
                                &self.id,
                                line.len(),
                                config.lines.max_line_bytes,
                                line.as_bytes(),
                            ));
                            long += 1;
                            continue;
                        }
                        crate::batch::push_line(&mut self.text, line.as_bytes());
                        self.lines += 1;
                    }
                }
                self.sequence = Some(record.sequence.clone());
                if long > 0 {
                    // The record's good lines go first; its long lines' dead letter
                    // holds the checkpoint at this record until it is delivered too.
                    self.send(to, false);
                    self.dead_letter(component, record, letters, long, to);
                } else if self.lines >= config.lines.batch_lines
                    || self.text.len() >= BATCH_MAX_BYTES
                {
                    self.send(to, false);
                }
            }
            Ok(Decoded::Control) => self.sequence = Some(record.sequence.clone()),
            Err(error) => {
                to.metrics.error(error.error_type(), 1);
                // What came before goes first, so the dead letter's acknowledgement
                // keeps its place in the shard's order.
                self.send(to, false);
                let letter = serde_json::json!({
                    "error": error.to_string(),
                    "component": component,
                    "shard": &*self.id,
                    "sequence": record.sequence,
                    "data_base64": base64(&record.data),
                });
                self.dead_letter(component, record, format!("{letter}\n"), 1, to);
            }
        }
    }

    /// Sends `letters` (`lines` of them) of `record` to the dead-letter output, with an
    /// acknowledgement in the shard's order.
    fn dead_letter(
        &mut self,
        component: &str,
        record: &Record,
        letters: String,
        lines: usize,
        to: &Sending<'_>,
    ) {
        let ack = to
            .checkpoints
            .ack(&self.id, self.batches, Some(record.sequence.clone()), false);
        self.batches += 1;
        if to.dead_letters.is_unconnected() {
            to.metrics.discarded(lines as u64);
            tracing::warn!(message = "Dead letter dropped (no sink takes this source's dead_letter output).", component_id = %component, shard = %self.id, sequence = %record.sequence, letters = %letters.trim_end());
            return;
        }
        to.dead_letters.send(Arc::new(LineBatch {
            columns: None,
            permit: None,
            text: letters,
            lines,
            stream: self.id.clone(),
            stream_start: false,
            stream_end: false,
            acks: vec![ack],
        }));
    }
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KinesisSourceError {
    /// The checkpoint store could not be opened.
    #[error("cannot open the checkpoint store")]
    Checkpoints(#[source] checkpoint::CheckpointError),
    /// The lease table could not be created or read.
    #[error("cannot use the lease table")]
    LeaseTable(#[source] leases::LeaseError),
}

/// Reads until `stop` is set, then sends what it holds. Network calls run on a runtime
/// of this thread; batches are sent outside it, since sending blocks while downstream is
/// full (backpressure). With a lease table, only shards whose lease this host holds are
/// read; on stop, the outputs are closed, and once everything read is acknowledged (or
/// [`LeaseSpec::handoff_timeout`] has passed) the last checkpoints are written and every
/// lease is released, so another host resumes exactly after what this one delivered.
///
/// A source that cannot start (no checkpoint store, no lease table) returns why: the
/// pipeline then fails instead of draining as if the stream had been read.
pub fn run(
    id: &str,
    config: &Config,
    output: Output,
    dead_letters: Output,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), KinesisSourceError> {
    let stop = lifecycle.stop_flag();
    let runtime = crate::aws::runtime();
    let lease_spec = config.leases.as_ref().map(|leases| leases.spec());
    let checkpoints = if lease_spec.is_some() {
        Checkpoints::in_memory()
    } else {
        Checkpoints::open(&config.checkpoints_path()).map_err(|error| {
            metrics.error("checkpoint_failed", 1);
            KinesisSourceError::Checkpoints(error)
        })?
    }
    .halted_by(lifecycle.halted());
    let mut leases = match &lease_spec {
        None => None,
        Some(lease_spec) => {
            let table = runtime.block_on(LeaseTable::connect(lease_spec));
            if let Err(error) = runtime.block_on(table.ensure_table()) {
                metrics.error("lease_table_failed", 1);
                return Err(KinesisSourceError::LeaseTable(error));
            }
            tracing::info!(message = "Sharing the stream through a lease table.", component_id = %id, table = %lease_spec.table, worker = %lease_spec.worker);
            let coordinator = Coordinator::new(table, lease_spec.clone());
            // `druid` sinks log their publications in the lease rows.
            checkpoints.use_lease_log(LeaseLog::new(lease_spec, coordinator.view()));
            Some(Leases {
                coordinator,
                spec: lease_spec.clone(),
                counts: LeaseCounts::default(),
                reported: LeaseCounts::default(),
                checkpointed_at: Instant::now(),
            })
        }
    };
    let budget = ByteBudget::new(config.max_in_flight_bytes());
    {
        // A send waiting on the budget looks at the stop flag when stopping starts.
        let budget = budget.clone();
        lifecycle.on_stop(move || budget.wake());
    }
    let to = Sending {
        output: &output,
        dead_letters: &dead_letters,
        metrics,
        checkpoints: &checkpoints,
        budget: &budget,
        stop,
    };
    let client = runtime.block_on(config.stream.client());
    let mut shards: HashMap<String, Shard> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut listed_at: Option<Instant> = None;
    let mut polled_at: Option<Instant> = None;
    let poll_interval = config.poll_interval().max(MIN_POLL);
    // With leases, the loop also wakes between polls for scans and what the renewer
    // found.
    let tick = lease_spec.as_ref().map_or(poll_interval, |l| {
        poll_interval
            .min(l.scan_interval)
            .min(l.renew_interval())
            .max(Duration::from_millis(10))
    });
    while !stop.load(Ordering::Relaxed) {
        if listed_at.is_none_or(|at| at.elapsed() >= RELIST) {
            match runtime.block_on(crate::aws::kinesis::list_shards(
                &client,
                &config.stream.stream(),
            )) {
                Ok(infos) => {
                    listed = infos.iter().map(|s| s.id.clone()).collect();
                    match &mut leases {
                        Some(leases) => {
                            let synced = runtime
                                .block_on(leases.coordinator.sync_shards(&infos, config.start()));
                            if let Err(error) = synced {
                                metrics.error("lease_table_failed", 1);
                                tracing::warn!(message = "Cannot add leases for new shards; retrying.", component_id = %id, %error);
                            }
                        }
                        None => {
                            for info in infos {
                                shards.entry(info.id.clone()).or_insert_with(|| {
                                    // A child of a reshard starts at its oldest record: nothing
                                    // written to it before it is first read may be skipped.
                                    let start = if info.parents.is_empty() {
                                        config.start()
                                    } else {
                                        StartAt::TrimHorizon
                                    };
                                    Shard::new(
                                        &info.id,
                                        checkpoints.get(&info.id),
                                        start,
                                        info.parents,
                                        checkpoints.boundaries(&info.id),
                                    )
                                });
                            }
                        }
                    }
                    listed_at = Some(Instant::now());
                }
                Err(error) => {
                    metrics.error("list_shards_failed", 1);
                    tracing::warn!(message = "Cannot list the stream's shards; retrying.", component_id = %id, %error);
                }
            }
        }
        if let Some(leases) = &mut leases {
            leases.step(runtime, &mut shards, &to);
        }
        if polled_at.is_some_and(|at| at.elapsed() < poll_interval) {
            lifecycle.sleep_unless_stopping(tick);
            continue;
        }
        polled_at = Some(Instant::now());
        // A child waits until every parent still listed has been read to its end. With
        // leases, the table says so (`SHARD_END`, written once the parent's last batch
        // was acknowledged, by whichever host read it), and only after a listing has
        // succeeded; without, this host's own reading does.
        let finished: HashSet<String> = shards
            .iter()
            .filter(|(_, s)| s.done)
            .map(|(id, _)| id.clone())
            .collect();
        let parents_done = |shard: &Shard| match &leases {
            None => shard
                .parents
                .iter()
                .all(|p| !listed.contains(p) || finished.contains(p)),
            Some(leases) => {
                shard.parents.is_empty()
                    || (listed_at.is_some()
                        && leases
                            .coordinator
                            .parents_done(&shard.parents, &|p| listed.contains(p)))
            }
        };
        // Every shard that may be read now is read at the same time (at most
        // CONCURRENT_READS requests in flight); their records are then taken in turn.
        let now = Instant::now();
        let mut ready: Vec<(&String, &mut Shard)> = shards
            .iter_mut()
            .filter(|(_, shard)| {
                !shard.done
                    && shard.handing_off.is_none()
                    && leases
                        .as_ref()
                        .is_none_or(|l| l.coordinator.holds(&shard.id))
                    && shard.retry_at.is_none_or(|at| now >= at)
                    && parents_done(shard)
            })
            .collect();
        let concurrent =
            (config.max_in_flight_bytes() / GET_RECORDS_MAX_BYTES).clamp(1, CONCURRENT_READS);
        let stream = config.stream.stream();
        for group in ready.chunks_mut(concurrent) {
            let polls = runtime.block_on(futures_util::future::join_all(group.iter_mut().map(
                |(shard_id, shard)| {
                    let start = shard.start;
                    shard.cursor.poll(&client, &stream, shard_id, start)
                },
            )));
            for ((shard_id, shard), polled) in group.iter_mut().zip(polls) {
                // The lease may have gone while the group was read, or while earlier
                // shards' records waited on backpressure: then the next owner reads
                // these records, not this host.
                if leases
                    .as_ref()
                    .is_some_and(|l| !l.coordinator.holds(shard_id))
                {
                    shard.cursor.reset();
                    continue;
                }
                shard.handle(id, polled, config, &to);
            }
        }
        lifecycle.sleep_unless_stopping(tick);
    }
    for shard in shards.values_mut().filter(|s| !s.done) {
        shard.send(&to, false);
    }
    // Downstream drains and flushes once the outputs close.
    drop(output);
    drop(dead_letters);
    if let Some(mut leases) = leases {
        let deadline = Instant::now() + leases.spec.handoff_timeout();
        // Wakes when the last batch is acknowledged; between wakes the leases are renewed
        // (the coordinator renews only when due) and an abort is noticed.
        let mut unacknowledged = checkpoints.in_flight();
        while unacknowledged > 0 && !lifecycle.aborted() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            leases.keep_alive(runtime, &checkpoints);
            unacknowledged = checkpoints.wait_acknowledged(left.min(HANDOFF_WAKE));
        }
        // The last checkpoints, retried with backoff (the leases kept alive) until written.
        let mut pause = HANDOFF_WAKE;
        while !leases
            .flush(runtime, &checkpoints, &mut Vec::new())
            .is_empty()
            && Instant::now() + pause < deadline
        {
            let _ = runtime.block_on(leases.coordinator.tick(true, &mut leases.counts));
            std::thread::sleep(crate::util::jittered(pause));
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        runtime.block_on(leases.coordinator.release_all());
        leases.report(metrics);
        tracing::info!(message = "Released every lease.", component_id = %id, unacknowledged_batches = unacknowledged);
    }
    Ok(())
}

/// Forgets a shard whose lease is gone: acks of what was read of it no longer move its
/// checkpoint.
fn stop_reading(shards: &mut HashMap<String, Shard>, checkpoints: &Checkpoints, shard: &str) {
    shards.remove(shard);
    checkpoints.restart(shard, ShardCheckpoint::default());
}

/// A source's side of a lease table.
struct Leases {
    coordinator: Coordinator,
    spec: LeaseSpec,
    counts: LeaseCounts,
    /// Counts already added to the metrics.
    reported: LeaseCounts,
    checkpointed_at: Instant,
}

impl Leases {
    /// One round: apply what the renewer found, scan and take, write checkpoints, and
    /// apply what changed to the shards being read.
    fn step(
        &mut self,
        runtime: &'static tokio::runtime::Runtime,
        shards: &mut HashMap<String, Shard>,
        to: &Sending<'_>,
    ) {
        let mut changes = runtime.block_on(self.coordinator.tick(false, &mut self.counts));
        if self.checkpointed_at.elapsed() >= self.spec.checkpoint_interval {
            self.flush(runtime, to.checkpoints, &mut changes);
        }
        for change in changes {
            match change {
                Change::Acquired {
                    shard,
                    position,
                    start,
                    parents,
                    epoch,
                    publications,
                } => {
                    tracing::info!(message = "Reading a shard under a lease.", shard = %shard, sequence = position.sequence.as_deref().unwrap_or("none"), pending_publications = publications.len());
                    to.checkpoints
                        .restart_leased(&shard, position.clone(), epoch, publications);
                    let boundaries = to.checkpoints.boundaries(&shard);
                    shards.insert(
                        shard.clone(),
                        Shard::new(&shard, position, start, parents, boundaries),
                    );
                }
                // Unsent lines are dropped: they were never acknowledged, and the new
                // owner reads them from the last checkpoint.
                Change::Lost(shard) => stop_reading(shards, to.checkpoints, &shard),
                Change::HandOff(shard) => {
                    if let Some(s) = shards.get_mut(&shard) {
                        s.send(to, false);
                        s.handing_off = Some(Instant::now() + self.spec.handoff_timeout());
                    }
                }
            }
        }
        // Hand over the shards whose reads are all acknowledged, once their last
        // checkpoint is written (a failed write is retried next round).
        let ready: Vec<String> = shards
            .iter()
            .filter(|(id, s)| {
                s.handing_off.is_some_and(|deadline| {
                    Instant::now() >= deadline
                        || to.checkpoints.checkpointed_batches(id) >= s.batches
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !ready.is_empty() {
            let mut lost = Vec::new();
            let failed = self.flush(runtime, to.checkpoints, &mut lost);
            for change in lost {
                if let Change::Lost(shard) = change {
                    stop_reading(shards, to.checkpoints, &shard);
                }
            }
            for shard in ready {
                if failed.contains(&shard) || !shards.contains_key(&shard) {
                    continue;
                }
                runtime.block_on(self.coordinator.hand_over(&shard, &mut self.counts));
                stop_reading(shards, to.checkpoints, &shard);
            }
        }
        self.report(to.metrics);
    }

    /// Checkpoints only, while stopping (the renewer keeps the leases alive).
    fn keep_alive(&mut self, runtime: &'static tokio::runtime::Runtime, checkpoints: &Checkpoints) {
        let _ = runtime.block_on(self.coordinator.tick(true, &mut self.counts));
        if self.checkpointed_at.elapsed() >= self.spec.checkpoint_interval {
            self.flush(runtime, checkpoints, &mut Vec::new());
        }
    }

    /// Writes every advanced position to the table; returns the shards whose write
    /// failed (marked advanced again, so the next flush retries them).
    fn flush(
        &mut self,
        runtime: &'static tokio::runtime::Runtime,
        checkpoints: &Checkpoints,
        changes: &mut Vec<Change>,
    ) -> Vec<String> {
        self.checkpointed_at = Instant::now();
        let advanced = checkpoints.take_advanced();
        if advanced.is_empty() {
            return Vec::new();
        }
        let failed = runtime.block_on(self.coordinator.checkpoint(
            advanced,
            changes,
            &mut self.counts,
        ));
        checkpoints.advanced_again(failed.clone());
        failed
    }

    fn report(&mut self, metrics: &ComponentMetrics) {
        let (now, was) = (self.counts, self.reported);
        metrics.count("lease_taken_total", now.taken - was.taken);
        metrics.count("lease_handed_in_total", now.handed_in - was.handed_in);
        metrics.count("lease_handed_out_total", now.handed_out - was.handed_out);
        metrics.count("lease_lost_total", now.lost - was.lost);
        metrics.count("lease_requested_total", now.requested - was.requested);
        metrics.count("lease_renewals_total", now.renewals - was.renewals);
        metrics.count("lease_checkpoints_total", now.checkpoints - was.checkpoints);
        metrics.count("lease_scans_total", now.scans - was.scans);
        metrics.gauge("leases_held", self.coordinator.held_count() as i64);
        self.reported = now;
    }
}

/// How many lines `text` (lines that each end with `\n`) holds, the length of the
/// longest without its newline, and whether any ends with `\r\n` (which `str::lines`
/// would shorten).
fn line_stats(text: &str) -> (usize, usize, bool) {
    let bytes = text.as_bytes();
    let (mut count, mut longest, mut start, mut crlf) = (0, 0, 0, false);
    for end in memchr::memchr_iter(b'\n', bytes) {
        count += 1;
        longest = longest.max(end - start);
        crlf |= end > start && bytes[end - 1] == b'\r';
        start = end + 1;
    }
    (count, longest, crlf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_stats_count_lines_and_measure_the_longest() {
        assert_eq!(super::line_stats(""), (0, 0, false));
        assert_eq!(super::line_stats("a\n"), (1, 1, false));
        assert_eq!(super::line_stats("abc\nde\nfghij\nk\n"), (4, 5, false));
        assert_eq!(super::line_stats("a\rb\n"), (1, 3, false));
        assert_eq!(super::line_stats("ab\ncd\r\n"), (2, 3, true));
    }
}
