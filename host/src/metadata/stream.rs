//! A metadata table fed by a changelog stream: contract-3 events read from a Kinesis data
//! stream ("stream + cache + stream": no database on the hot path).
//!
//! A reader thread polls every shard of the stream, folds the events it reads into the
//! changelog (after any bootstrap files), and at most once per poll interval builds a new
//! table off the hot path and swaps it in. Each record holds one or more JSON lines; a
//! line that is not a valid event is logged and counted and the rest are used. With a
//! retention window the changelog it keeps is compacted to what the window needs, so
//! memory follows the window, not the stream's age. The stream is read from its start
//! (`trim_horizon`) or from new records only (`latest`); metadata needs no checkpoints,
//! since a restart reads the changelog again.

use super::events::{BadLine, Event, Target};
use super::{SharedTable, TableSpec};
use crate::metrics::ComponentMetrics;
use aws_sdk_kinesis::types::ShardIteratorType;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a changelog stream is and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (or use `arn`).
    pub name: Option<String>,
    /// Stream ARN (or use `name`).
    pub arn: Option<String>,
    /// Endpoint override (a local Kinesis in tests); `None` uses AWS's.
    pub endpoint: Option<String>,
    /// Region; `None` uses the standard AWS configuration chain.
    pub region: Option<String>,
    /// Read from the oldest record (`true`) or only new ones.
    pub from_start: bool,
    /// Pause between polling rounds, and the shortest time between two table builds.
    pub poll_interval: Duration,
}

/// A running changelog reader; stops when dropped.
pub struct StreamReader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl StreamReader {
    /// Starts reading `stream` into `shared`, on top of `spec` (its files are the
    /// bootstrap snapshot, its retention and AWS ranges apply to every build).
    pub fn start(
        name: String,
        spec: TableSpec,
        stream: StreamSpec,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
    ) -> StreamReader {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("metadata-{name}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(message = "Cannot start the changelog reader.", table = %name, %error);
                        return;
                    }
                };
                runtime.block_on(read(name, spec, stream, shared, metrics, stopping));
            })
            .expect("spawn changelog reader");
        StreamReader {
            stop,
            handle: Some(handle),
        }
    }
}

/// Builds a Kinesis client from the standard AWS configuration chain, with `endpoint`
/// and `region` overrides.
pub async fn client(endpoint: Option<&str>, region: Option<&str>) -> aws_sdk_kinesis::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    aws_sdk_kinesis::Client::new(&loader.load().await)
}

/// One shard's reading position.
struct ShardState {
    iterator: Option<String>,
    last_sequence: Option<String>,
    finished: bool,
}

/// How often the shard list is fetched again (new shards after a reshard).
const RELIST: Duration = Duration::from_secs(5);
/// Shortest pause between two polls of a shard.
const MIN_POLL: Duration = Duration::from_millis(200);

async fn read(
    name: String,
    spec: TableSpec,
    stream: StreamSpec,
    shared: Arc<SharedTable>,
    metrics: Arc<ComponentMetrics>,
    stop: Arc<AtomicBool>,
) {
    let client = client(stream.endpoint.as_deref(), stream.region.as_deref()).await;
    let mut shards: HashMap<String, ShardState> = HashMap::new();
    // The bootstrap files are read once (their bad lines were counted at start-up);
    // every build starts from them and adds the stream's events.
    let mut events: Vec<Event> = Vec::new();
    for path in &spec.files {
        if let Ok(log) = super::events::read_changelog_file(path) {
            events.extend(log.events);
        }
    }
    let spec = TableSpec {
        files: Vec::new(),
        ..spec
    };
    let mut listed_at: Option<Instant> = None;
    let mut dirty = false;
    let mut built_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if listed_at.is_none_or(|at| at.elapsed() >= RELIST) {
            match list_shards(&client, &stream).await {
                Ok(ids) => {
                    for id in ids {
                        shards.entry(id).or_insert(ShardState {
                            iterator: None,
                            last_sequence: None,
                            finished: false,
                        });
                    }
                    listed_at = Some(Instant::now());
                }
                Err(error) => {
                    metrics.error("stream_list_failed", 1);
                    tracing::warn!(message = "Cannot list the changelog stream's shards; retrying.", table = %name, %error);
                }
            }
        }
        for (shard_id, state) in shards.iter_mut().filter(|(_, s)| !s.finished) {
            match poll_shard(&client, &stream, shard_id, state).await {
                Ok(records) => {
                    for data in records {
                        let text = String::from_utf8_lossy(&data);
                        for (number, line) in text.lines().enumerate() {
                            if line.trim().is_empty() {
                                continue;
                            }
                            metrics.received(1);
                            match Event::parse(line) {
                                Ok(event) => {
                                    events.push(event);
                                    dirty = true;
                                }
                                Err(error) => {
                                    metrics.error(error.error_type(), 1);
                                    let bad = BadLine {
                                        line_number: number + 1,
                                        line: line.to_string(),
                                        error,
                                    };
                                    tracing::warn!(message = "Rejected changelog event.", table = %name, shard = %shard_id, line = %bad.line, error = %bad.error);
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    metrics.error("stream_read_failed", 1);
                    tracing::warn!(message = "Changelog read failed; the shard is read again from its last record.", table = %name, shard = %shard_id, %error);
                    state.iterator = None;
                }
            }
        }
        if dirty && built_at.elapsed() >= stream.poll_interval {
            built_at = Instant::now();
            match super::load_with(&spec, &events) {
                Ok((table, _)) => {
                    tracing::info!(message = "Rebuilt metadata from the changelog stream.", table = %name, events = table.events(), addresses = table.addresses(), networks = table.networks(), owners = table.owners());
                    let cutoff = table.cutoff();
                    shared.replace(table);
                    metrics.count("metadata_reloads_total", 1);
                    compact(&mut events, cutoff);
                    dirty = false;
                }
                Err(error) => {
                    metrics.count("metadata_reload_failures_total", 1);
                    tracing::error!(message = "Cannot build the table; keeping the previous one.", table = %name, %error);
                }
            }
        }
        // Kinesis allows 5 GetRecords calls per shard per second.
        tokio::time::sleep(stream.poll_interval.max(MIN_POLL)).await;
        shared.reap();
    }
}

async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamSpec,
) -> Result<Vec<String>, aws_sdk_kinesis::Error> {
    let mut ids = Vec::new();
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
        ids.extend(page.shards().iter().map(|s| s.shard_id().to_string()));
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(ids);
        }
    }
}

/// Reads what is new in one shard (getting an iterator first if needed).
async fn poll_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamSpec,
    shard_id: &str,
    state: &mut ShardState,
) -> Result<Vec<Vec<u8>>, aws_sdk_kinesis::Error> {
    if state.iterator.is_none() {
        let request = client
            .get_shard_iterator()
            .set_stream_name(stream.name.clone())
            .set_stream_arn(stream.arn.clone())
            .shard_id(shard_id);
        let request = match &state.last_sequence {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None if stream.from_start => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            None => request.shard_iterator_type(ShardIteratorType::Latest),
        };
        state.iterator = request.send().await?.shard_iterator().map(str::to_string);
    }
    let Some(iterator) = state.iterator.clone() else {
        state.finished = true;
        return Ok(Vec::new());
    };
    let page = client
        .get_records()
        .shard_iterator(iterator)
        .limit(1000)
        .send()
        .await?;
    let records: Vec<Vec<u8>> = page
        .records()
        .iter()
        .map(|r| r.data().as_ref().to_vec())
        .collect();
    if let Some(last) = page.records().last() {
        state.last_sequence = Some(last.sequence_number().to_string());
    }
    match page.next_shard_iterator() {
        Some(next) => state.iterator = Some(next.to_string()),
        // A closed shard that has been read to its end.
        None => state.finished = true,
    }
    Ok(records)
}

/// Drops events no lookup inside the retention window needs: per target, everything
/// before its latest event at or before `cutoff`.
fn compact(events: &mut Vec<Event>, cutoff: u64) {
    if cutoff == 0 {
        return;
    }
    let mut keep_from: HashMap<Target, (u64, usize)> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        if event.ts <= cutoff {
            let entry = keep_from.entry(event.target).or_insert((event.ts, i));
            if event.ts >= entry.0 {
                *entry = (event.ts, i);
            }
        }
    }
    let mut i = 0;
    events.retain(|event| {
        let index = i;
        i += 1;
        match keep_from.get(&event.target) {
            Some(&(_, at)) => event.ts > cutoff || index == at,
            None => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_what_the_window_needs() {
        let line = |ts: u64, ip: &str, app: &str| {
            Event::parse(&format!(
                r#"{{"ts": {ts}, "op": "assign", "ip": "{ip}", "attrs": {{"app": "{app}"}}}}"#
            ))
            .unwrap()
        };
        let mut events = vec![
            line(100, "10.0.0.1", "a"),
            line(200, "10.0.0.1", "b"),
            line(200, "10.0.0.1", "c"),
            line(400, "10.0.0.1", "d"),
            line(150, "10.0.0.2", "e"),
            line(50, "10.0.0.2", "f"),
        ];
        let before = super::super::load_with(&TableSpec::default(), &events)
            .unwrap()
            .0;
        compact(&mut events, 300);
        let kept: Vec<u64> = events.iter().map(|e| e.ts).collect();
        assert_eq!(kept, vec![200, 400, 150]);
        let after = super::super::load_with(&TableSpec::default(), &events)
            .unwrap()
            .0;
        for ip in ["10.0.0.1", "10.0.0.2"] {
            for t in [300, 350, 400, 500] {
                let ip = ip.parse().unwrap();
                let app = |table: &super::super::Table| {
                    let owner = table.owner(table.lookup(ip, t)).unwrap();
                    owner.attrs.get("app").cloned()
                };
                assert_eq!(app(&before), app(&after), "{ip} at {t}");
            }
        }
    }
}
