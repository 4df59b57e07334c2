//! The `druid` sink: enriched flows rolled up per time bucket and dimensions, the way
//! Druid itself rolls them up, then delivered as JSON rows either to a Kinesis stream
//! that a Druid Kinesis supervisor ingests or to local NDJSON files (one per bucket).
//!
//! Each row is `{"timestamp": <bucket start, epoch ms>, <dimension>: <value>, ...,
//! "flows": n, "bytes": sum, "packets": sum}`. The bucket is the flow's `start` rounded
//! down to `granularity_secs`. Partial aggregates are written every `flush_interval_secs`
//! (and at shutdown): two rows with the same bucket and dimensions are summed again by
//! Druid's rollup (`longSum`), so splitting a bucket across flushes changes no query
//! result. The batches a flush covers are acknowledged upstream only once its rows are
//! written (for Kinesis: accepted by PutRecords), so the source's checkpoints stay end to
//! end. [`supervisor_spec`] derives the matching Druid supervisor spec.
//!
//! Exactly once: the rows of batches from a checkpointed (Kinesis) source go out as
//! *publications* logged beside the checkpoint file ([`Checkpoints::begin_publication`]
//! before any row goes out, [`Checkpoints::end_publication`] before the batches are
//! acknowledged). After a crash the first batch of a store settles its pending
//! publication (the stream read back and only missing rows written; files replaced
//! whole), and batches wholly at or before a shard's published position, as it was when
//! the run first saw the shard, are skipped: they are a reading again. The steps and
//! what a crash at each leaves are in `docs/delivery.md`.
//!
//! From a source with a lease table, each publication covers one shard holding and is
//! logged in the shard's lease row ([`crate::lease_publications`]); batches of a holding
//! that is gone are left to the shard's next holder (forsaken, never acknowledged).

use crate::checkpoint::{CheckpointError, Checkpoints, Publication, Scope, sequence_le};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::kinesis::{KinesisSinkSpec, KinesisWriter};
use crate::sinks::{AttemptError, io_attempt, retrying};
use crate::topology::output::{Ended, Input, Taken};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Dimensions rolled up on when a pipeline names none.
pub const DEFAULT_DIMENSIONS: [&str; 13] = [
    "src_app",
    "dst_app",
    "src_cluster",
    "dst_cluster",
    "src_account",
    "dst_account",
    "src_region",
    "dst_region",
    "src_zone",
    "dst_zone",
    "protocol",
    "action",
    "flow_direction",
];

/// Flow-log fields that are integers (their dimensions are Druid `long`s).
const INTEGER_FIELDS: [&str; 10] = [
    "version",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "tcp_flags",
    "traffic_path",
];

/// The metrics of every row.
pub const METRICS: [&str; 3] = ["flows", "bytes", "packets"];

/// The supervisor's `count` metric: how many sink rows Druid rolled into each of its
/// rows (not a number of flows: use `SUM("flows")`).
pub const COUNT_METRIC: &str = "sink_rows";

/// Column names a dimension may not take: the row's own columns and the ones Druid
/// reserves.
pub const RESERVED_COLUMNS: [&str; 6] = [
    "timestamp",
    "__time",
    "flows",
    "bytes",
    "packets",
    COUNT_METRIC,
];

/// Druid's segment granularity for buckets of `secs` seconds: `HOUR` when they divide
/// an hour, `DAY` when they divide a day; `None` for other widths (refused by the
/// config check), since a query granularity must not be coarser than its segments.
pub fn segment_granularity(secs: u64) -> Option<&'static str> {
    match secs {
        0 => None,
        s if 3600 % s == 0 => Some("HOUR"),
        s if 86_400 % s == 0 => Some("DAY"),
        _ => None,
    }
}

/// Where rows go.
#[derive(Debug, Clone)]
pub enum DruidOutput {
    /// NDJSON files in `dir`, one per bucket (`flows-20231114T2213Z.ndjson`), and one
    /// per bucket and publication for rows of a checkpointed source
    /// (`flows-20231114T2213Z.<publication>.ndjson`); unless `append`, the run starts
    /// them afresh.
    Files {
        /// The directory.
        dir: PathBuf,
        /// Keep what earlier runs wrote.
        append: bool,
    },
    /// One record per row on a Kinesis stream.
    Kinesis(KinesisSinkSpec),
}

/// Everything the sink needs.
#[derive(Debug, Clone)]
pub struct DruidSpec {
    /// Druid's dataSource.
    pub data_source: String,
    /// Dimensions rolled up on, in row order.
    pub dimensions: Vec<String>,
    /// Bucket width in seconds (Druid's queryGranularity).
    pub granularity_secs: u64,
    /// How often partial aggregates are written.
    pub flush_interval: Duration,
    /// Where rows go.
    pub output: DruidOutput,
    /// A Druid Overlord to submit the supervisor spec to when the sink starts.
    pub overlord_url: Option<String>,
}

/// Separates the parts of a group's key: a byte that JSON text never holds raw.
const SEP: char = '\u{1}';

/// Flows rolled up in memory until the next flush.
pub struct Rollup {
    dimensions: Vec<String>,
    granularity: u64,
    /// Key: the bucket, then each dimension's JSON text, joined by [`SEP`].
    groups: FxHashMap<String, [u64; 3]>,
    /// The key being built for the current line (reused).
    key: String,
    /// Each dimension's JSON text in the current line (reused).
    values: Vec<(usize, usize)>,
}

/// Why a line was not rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not a JSON object.
    InvalidJson,
    /// No integer `start` to put it in a bucket.
    NoStart,
}

/// The members of a flat JSON object (no nested objects or arrays), as raw key text
/// (without quotes) and raw value text, given to `member`; `None` when the line is not
/// such an object (then the caller parses it fully). Enriched flows are flat objects, so
/// this is the fast path: nothing is allocated and each byte is looked at once.
fn flat_members<'a>(line: &'a str, mut member: impl FnMut(&'a str, &'a str)) -> Option<()> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // The end of the string that starts at `at` (a quote), just past its closing quote.
    // Only plain strings take the fast path: a control byte or a `\u` escape sends the
    // line to the full parser (which checks it), and any other escape must be valid.
    let string_end = |mut at: usize| -> Option<usize> {
        at += 1;
        while at < bytes.len() {
            match bytes[at] {
                b'"' => return Some(at + 1),
                b'\\' => match bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    _ => return None,
                },
                0..0x20 => return None,
                _ => at += 1,
            }
        }
        None
    };
    skip(&mut i);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    skip(&mut i);
    if bytes.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        skip(&mut i);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &line[i + 1..key_end - 1];
        if key.contains('\\') {
            // An escaped key is compared decoded by the full parser.
            return None;
        }
        i = key_end;
        skip(&mut i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip(&mut i);
        let value_start = i;
        match bytes.get(i)? {
            b'"' => i = string_end(i)?,
            b'{' | b'[' => return None,
            _ => {
                while i < bytes.len() && !matches!(bytes[i], b',' | b'}') {
                    i += 1;
                }
            }
        }
        let value = line[value_start..i].trim_end();
        if bytes[value_start] != b'"' && !is_scalar(value) {
            return None;
        }
        member(key, value);
        skip(&mut i);
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => {
                i += 1;
                skip(&mut i);
                return (i == bytes.len()).then_some(());
            }
            _ => return None,
        }
    }
}

/// Whether `text` is a JSON number, `true`, `false` or `null`.
fn is_scalar(text: &str) -> bool {
    matches!(text, "true" | "false" | "null") || is_json_number(text.as_bytes())
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &[u8]) -> bool {
    let mut i = usize::from(text.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while text.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == text.len()
}

impl Rollup {
    /// An empty rollup on `dimensions` with buckets of `granularity` seconds.
    pub fn new(dimensions: &[String], granularity: u64) -> Rollup {
        Rollup {
            dimensions: dimensions.to_vec(),
            granularity: granularity.max(1),
            groups: FxHashMap::default(),
            key: String::new(),
            values: Vec::new(),
        }
    }

    /// Adds one enriched flow (a JSON object).
    pub fn add(&mut self, line: &str) -> Result<(), Skipped> {
        // Each dimension's value as a range of `line`, or of `owned` for the slow path.
        let mut owned = String::new();
        self.values.clear();
        self.values.resize(self.dimensions.len(), (0, 0));
        let (mut start, mut bytes, mut packets) = (None, None, None);
        let dimensions = &self.dimensions;
        let values = &mut self.values;
        let base = line.as_ptr() as usize;
        let fast = flat_members(line, |key, value| {
            let number = || value.parse::<u64>().ok();
            match key {
                "start" => start = number(),
                "bytes" => bytes = number(),
                "packets" => packets = number(),
                _ => {}
            }
            if let Some(at) = dimensions.iter().position(|d| d == key) {
                let offset = value.as_ptr() as usize - base;
                values[at] = (offset, offset + value.len());
            }
        });
        let text: &str = if fast.is_some() {
            line
        } else {
            // Not a flat object: parse it properly (or reject it).
            let flow: Value = serde_json::from_str(line).map_err(|_| Skipped::InvalidJson)?;
            let object = flow.as_object().ok_or(Skipped::InvalidJson)?;
            start = object.get("start").and_then(Value::as_u64);
            bytes = object.get("bytes").and_then(Value::as_u64);
            packets = object.get("packets").and_then(Value::as_u64);
            for (at, dimension) in dimensions.iter().enumerate() {
                let value = object.get(dimension).unwrap_or(&Value::Null).to_string();
                values[at] = (owned.len(), owned.len() + value.len());
                owned.push_str(&value);
            }
            &owned
        };
        // A start beyond what milliseconds can hold is no time.
        let start = start
            .filter(|&s| s.checked_mul(1000).is_some())
            .ok_or(Skipped::NoStart)?;
        let bucket = start - start % self.granularity;
        self.key.clear();
        let _ = write!(self.key, "{bucket}");
        for &(from, to) in self.values.iter() {
            self.key.push(SEP);
            // A dimension the flow lacks is null.
            self.key
                .push_str(if from == to { "null" } else { &text[from..to] });
        }
        let sums = match self.groups.get_mut(self.key.as_str()) {
            Some(sums) => sums,
            None => self.groups.entry(self.key.clone()).or_insert([0; 3]),
        };
        sums[0] += 1;
        sums[1] = sums[1].saturating_add(bytes.unwrap_or(0));
        sums[2] = sums[2].saturating_add(packets.unwrap_or(0));
        Ok(())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Takes every row out, as `(bucket start, NDJSON line)` ordered by bucket and
    /// dimension values.
    pub fn drain(&mut self) -> Vec<(u64, String)> {
        let mut groups: Vec<(u64, Vec<String>, [u64; 3])> = self
            .groups
            .drain()
            .map(|(key, sums)| {
                let mut parts = key.split(SEP);
                let bucket = parts.next().and_then(|b| b.parse().ok()).unwrap_or(0);
                (bucket, parts.map(str::to_string).collect(), sums)
            })
            .collect();
        groups.sort();
        groups
            .into_iter()
            .map(|(bucket, values, sums)| {
                let mut row = format!("{{\"timestamp\":{}", bucket * 1000);
                for (dimension, value) in self.dimensions.iter().zip(&values) {
                    row.push(',');
                    row.push_str(&Value::String(dimension.clone()).to_string());
                    row.push(':');
                    row.push_str(value);
                }
                for (name, sum) in METRICS.iter().zip(sums) {
                    row.push_str(&format!(",\"{name}\":{sum}"));
                }
                row.push_str("}\n");
                (bucket, row)
            })
            .collect()
    }
}

/// `2023-11-14T22:13` style UTC time of `epoch` seconds, without separators that some
/// file systems refuse (`20231114T2213Z`).
pub fn bucket_name(epoch: u64) -> String {
    // Howard Hinnant's civil-from-days.
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Removes the bucket files of an earlier run from `dir`.
fn start_afresh(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("flows-") && name.ends_with(".ndjson") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// How many redirects (a standby Overlord pointing at the leader) [`submit`] follows.
const MAX_REDIRECTS: usize = 3;

/// POSTs `spec` to `<overlord>/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true`
/// (plain HTTP/1.1; Druid 33+ then leaves an unchanged running supervisor alone, older
/// versions ignore the parameter), following a standby Overlord's redirect to the
/// leader; returns the status line and body, or why it failed.
pub fn submit(overlord: &str, spec: &Value) -> Result<String, String> {
    let body = spec.to_string();
    let mut url = format!(
        "{}/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true",
        overlord.trim_end_matches('/')
    );
    for _ in 0..=MAX_REDIRECTS {
        let answer = post_json(&url, &body)?;
        let status = answer.lines().next().unwrap_or_default().to_string();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        let (head, reply) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if matches!(code, "301" | "302" | "307" | "308") {
            let location = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("location")
                        .then(|| value.trim().to_string())
                })
                .ok_or_else(|| format!("the Overlord answered `{status}` without a Location"))?;
            url = if location.starts_with("http") {
                location
            } else {
                let (scheme_host, _) = split_url(&url)?;
                format!("{scheme_host}{location}")
            };
            continue;
        }
        let reply = reply.trim();
        return if code.starts_with('2') {
            Ok(format!("{status} {reply}"))
        } else {
            Err(format!("the Overlord answered `{status}`: {reply}"))
        };
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects from the Overlord"
    ))
}

/// `http://host:port` and the path (with its query) of a plain-HTTP URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}`: only http:// is supported here; submit over TLS with `flowenrich druid-spec PIPELINE.toml | curl -X POST -H 'Content-Type: application/json' -d @- 'https://.../druid/indexer/v1/supervisor?skipRestartIfUnmodified=true'`")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    Ok((format!("http://{authority}"), path.to_string()))
}

/// One POST of a JSON `body` to `url`; the whole answer.
fn post_json(url: &str, body: &str) -> Result<String, String> {
    use std::io::Read;
    let (scheme_host, path) = split_url(url)?;
    let authority = scheme_host.trim_start_matches("http://");
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    use std::net::ToSocketAddrs;
    let resolved = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&resolved, Duration::from_secs(10))
        .map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // The answer is small; a bound keeps a misbehaving server from growing it.
    let mut answer = String::new();
    stream
        .take(1 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Writes publication `id`'s rows (each a row without its newline) as one file per
/// bucket in `dir`, `flows-<bucket>.<id>.ndjson`, each written aside, synced and renamed
/// into place: writing the same publication again replaces its files with the same
/// rows, so it is idempotent, and no other publication's rows are touched.
pub fn write_publication_files(dir: &Path, id: &str, lines: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut by_bucket: BTreeMap<u64, String> = BTreeMap::new();
    for line in lines {
        let text = by_bucket.entry(bucket_of(line)).or_default();
        text.push_str(line);
        text.push('\n');
    }
    for (bucket, text) in by_bucket {
        let path = dir.join(format!("flows-{}.{id}.ndjson", bucket_name(bucket)));
        crate::checkpoint::write_atomically(&path, text.as_bytes()).map_err(|e| match e {
            CheckpointError::Io { error, .. } => error,
            other => std::io::Error::other(other.to_string()),
        })?;
    }
    Ok(())
}

/// The file of `bucket`'s rows in `dir`.
fn bucket_path(dir: &Path, bucket: u64) -> PathBuf {
    dir.join(format!("flows-{}.ndjson", bucket_name(bucket)))
}

/// Appends rows (as [`Rollup::drain`] gives them) to their buckets' files in `dir`.
pub fn write_files(dir: &Path, rows: &[(u64, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut by_bucket: Vec<(u64, String)> = Vec::new();
    for (bucket, row) in rows {
        match by_bucket.last_mut() {
            Some((b, text)) if b == bucket => text.push_str(row),
            _ => by_bucket.push((*bucket, row.clone())),
        }
    }
    let mut created = false;
    for (bucket, text) in by_bucket {
        let path = bucket_path(dir, bucket);
        created |= !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let before = file.metadata()?.len();
        if let Err(error) = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // No torn row stays behind for the next attempt to append after.
            let _ = file.set_len(before);
            return Err(error);
        }
    }
    if created {
        // A new file's directory entry is durable before its rows are acknowledged.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How far before a publication began a read-back of the output stream starts (clock
/// skew between this host and Kinesis's arrival timestamps).
const READ_BACK_MARGIN_MS: u64 = 5 * 60 * 1000;

/// Where rows go, connected.
enum Writer<'a> {
    Files(&'a Path),
    Kinesis(Box<KinesisWriter>),
}

/// What the sink holds for the batches of one publication scope (a checkpoint store, or
/// a shard holding of one; or sources without checkpoints) until the next flush.
struct Pending {
    store: Option<Checkpoints>,
    scope: Scope,
    rollup: Rollup,
    /// The batches the rows came from: done (acknowledged) after the flush.
    covered: Vec<Taken>,
    /// Per shard, the last sequence number covered.
    covers: BTreeMap<String, String>,
    /// Per shard, how far the sink had published it when this run first saw it (in this
    /// scope): batches wholly before are a reading again of what is in Druid already.
    published_before: HashMap<String, Option<String>>,
}

/// Writes rows, as publications for checkpointed batches.
struct Publisher<'a> {
    id: &'a str,
    writer: Writer<'a>,
    metrics: &'a ComponentMetrics,
    lifecycle: &'a Lifecycle,
    /// Makes publication ids unique across runs.
    run: String,
    publications: u64,
}

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Its rows are written and it is logged as ended.
    Ended,
    /// Its shard's lease is gone: the next holder settles or reads it again.
    LeaseLost,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The bucket of a row (its `timestamp`, in epoch milliseconds, over 1000).
fn bucket_of(row: &str) -> u64 {
    row.strip_prefix("{\"timestamp\":")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| ms / 1000)
}

impl Publisher<'_> {
    /// Writes the rows rolled up from `pending`'s batches, then marks them done; or,
    /// when their lease holding is gone, forsakes them.
    fn flush(&mut self, pending: &mut Pending) -> Result<(), String> {
        let rows = pending.rollup.drain();
        let covers = std::mem::take(&mut pending.covers);
        let mut outcome = Published::Ended;
        if let Some(store) = &pending.store
            && !store.current(&pending.scope)
        {
            outcome = Published::LeaseLost;
        } else if !rows.is_empty() {
            outcome = match &pending.store {
                Some(store) => self.publish(store, &pending.scope, &rows, covers)?,
                None => {
                    self.write_plain(&rows)?;
                    Published::Ended
                }
            };
        }
        let forsaken = outcome == Published::LeaseLost && !pending.covered.is_empty();
        if forsaken {
            let lines: usize = pending.covered.iter().map(|b| b.lines).sum();
            self.metrics
                .count("druid_lease_lost_lines_total", lines as u64);
            tracing::info!(message = "A shard's lease went before its rows were published; its next holder reads them again.", component_id = %self.id, scope = ?pending.scope, lines);
        }
        for batch in pending.covered.drain(..) {
            match outcome {
                Published::Ended => batch.done(),
                Published::LeaseLost => batch.forsake(),
            }
        }
        Ok(())
    }

    /// Rows of batches without checkpoints (files, stdin): at least once is all a
    /// source without positions allows.
    fn write_plain(&self, rows: &[(u64, String)]) -> Result<(), String> {
        match &self.writer {
            Writer::Kinesis(writer) => {
                let text: String = rows.iter().map(|(_, row)| row.as_str()).collect();
                writer.write(&text, self.metrics, self.lifecycle)?;
            }
            Writer::Files(dir) => self.write_to(dir, || write_files(dir, rows))?,
        }
        self.sent(rows.len());
        Ok(())
    }

    /// One write of files in `dir`, retried while it fails transiently.
    fn write_to(&self, dir: &Path, write: impl Fn() -> std::io::Result<()>) -> Result<(), String> {
        retrying(
            self.id,
            "write_failed",
            self.metrics,
            self.lifecycle,
            || write().map_err(|e| io_attempt(dir.display(), e)),
        )
    }

    fn sent(&self, rows: usize) {
        self.metrics.sent(rows as u64);
        self.metrics.count("druid_rows_total", rows as u64);
    }

    /// The publication protocol (see the module docs): begin (durably, beside the
    /// checkpoint or in the lease row), write, end (durably), and only then acknowledge.
    fn publish(
        &mut self,
        store: &Checkpoints,
        scope: &Scope,
        rows: &[(u64, String)],
        covers: BTreeMap<String, String>,
    ) -> Result<Published, String> {
        self.publications += 1;
        let id = format!("{}-{}-{}", self.id, self.run, self.publications);
        let lines: Vec<String> = match &self.writer {
            Writer::Kinesis(_) => rows
                .iter()
                .enumerate()
                .map(|(n, (_, row))| {
                    crate::sinks::kinesis::with_publication(row.trim_end(), &id, n)
                })
                .collect(),
            Writer::Files(_) => rows
                .iter()
                .map(|(_, row)| row.trim_end().to_string())
                .collect(),
        };
        let publication = Publication {
            id,
            started_ms: epoch_ms(),
            covers,
            rows: lines.len(),
            chunks: 0,
        };
        if self
            .log(|| store.begin_publication(self.id, scope, publication.clone(), &lines))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_begin");
        if self.write(store, scope, &publication, &lines, false)? == Published::LeaseLost {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_write");
        if self
            .log(|| store.end_publication(self.id, scope))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_end");
        self.metrics.count("druid_publications_total", 1);
        Ok(Published::Ended)
    }

    /// Writes a publication's rows so that each is written once: to a stream, settling
    /// unknown outcomes by reading it back (and sending only while `scope` may be
    /// written); to files, as the publication's own files.
    fn write(
        &self,
        store: &Checkpoints,
        scope: &Scope,
        publication: &Publication,
        lines: &[String],
        settle: bool,
    ) -> Result<Published, String> {
        match &self.writer {
            Writer::Kinesis(writer) => {
                let written = writer.put_exactly_once(
                    lines,
                    publication.started_ms.saturating_sub(READ_BACK_MARGIN_MS),
                    settle,
                    self.metrics,
                    self.lifecycle,
                    &|| store.may_write(scope),
                )?;
                if !written {
                    return Ok(Published::LeaseLost);
                }
            }
            Writer::Files(dir) => {
                self.write_to(dir, || write_publication_files(dir, &publication.id, lines))?
            }
        }
        self.sent(lines.len());
        Ok(Published::Ended)
    }

    /// One operation on the publication log, retried while it fails transiently (a
    /// full disk, DynamoDB away or throttling); `None` when the lease it needs is gone.
    fn log<T>(
        &self,
        mut operation: impl FnMut() -> Result<T, CheckpointError>,
    ) -> Result<Option<T>, String> {
        retrying(
            self.id,
            "publication_log_failed",
            self.metrics,
            self.lifecycle,
            || match operation() {
                Ok(value) => Ok(Some(value)),
                Err(CheckpointError::LeaseLost { .. }) => Ok(None),
                Err(error) => Err(match &error {
                    CheckpointError::Io { error: io, .. } if crate::sinks::io_transient(io) => {
                        AttemptError::Transient(format!("publication log: {error}"))
                    }
                    CheckpointError::Lease(crate::leases::LeaseError::Dynamo { .. }) => {
                        AttemptError::Transient(error.to_string())
                    }
                    _ => AttemptError::Fatal(format!("publication log: {error}")),
                }),
            },
        )
    }

    /// Completes the publication a crash (or a host that lost its lease) left begun in
    /// `scope`, if any; `LeaseLost` when the scope's lease went meanwhile.
    fn settle(&self, store: &Checkpoints, scope: &Scope) -> Result<Published, String> {
        let Some(pending) = self.log(|| store.pending_publication(self.id, scope))? else {
            return Ok(Published::LeaseLost);
        };
        let Some((publication, lines)) = pending else {
            return Ok(Published::Ended);
        };
        if let Some(at) = store.settle_not_before(scope) {
            // The last holder may have sent a request just before its holding ran out.
            let wait = at.saturating_duration_since(Instant::now());
            if !self.lifecycle.pause(wait) {
                return Err("stopped before a publication left by the last holder of a lease could be completed".into());
            }
        }
        tracing::info!(message = "Completing a publication begun before a restart.", component_id = %self.id, publication = %publication.id, rows = lines.len());
        if self.write(store, scope, &publication, &lines, true)? == Published::LeaseLost {
            return Ok(Published::LeaseLost);
        }
        if self
            .log(|| store.end_publication(self.id, scope))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        self.metrics.count("druid_publications_settled_total", 1);
        Ok(Published::Ended)
    }
}

impl Pending {
    fn new(store: Option<Checkpoints>, scope: Scope, spec: &DruidSpec) -> Pending {
        Pending {
            store,
            scope,
            rollup: Rollup::new(&spec.dimensions, spec.granularity_secs),
            covered: Vec::new(),
            covers: BTreeMap::new(),
            published_before: HashMap::new(),
        }
    }

    /// Whether this group takes batches of `store` in `scope`.
    fn takes(&self, store: &Option<Checkpoints>, scope: &Scope) -> bool {
        match (&self.store, store) {
            (Some(a), Some(b)) => a.same(b) && self.scope == *scope,
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether `batch` is wholly a reading again of records whose flows `sink` published
    /// before this run saw their shard.
    fn published_already(&mut self, batch: &Taken, sink: &str) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        // Every shard's position is taken the first time it is seen, before this run
        // publishes anything of it.
        let (mut any, mut all) = (false, true);
        for ack in &batch.acks {
            let Some(sequence) = ack.sequence() else {
                continue;
            };
            let before = self
                .published_before
                .entry(ack.shard().to_string())
                .or_insert_with(|| store.published(ack.shard(), sink));
            match before {
                Some(published) if sequence_le(sequence, published) => any = true,
                _ => all = false,
            }
        }
        any && all
    }

    /// Adds `batch`'s positions to what the next publication covers.
    fn cover(&mut self, batch: &Taken) {
        for ack in &batch.acks {
            let Some(sequence) = ack.sequence() else {
                continue;
            };
            let entry = self.covers.entry(ack.shard().to_string()).or_default();
            if entry.is_empty() || sequence_le(entry, sequence) {
                *entry = sequence.to_string();
            }
        }
    }
}

/// The checkpoint store and publication scope of `batch`: an error when its
/// acknowledgements span several scopes (under leases, a batch must come from one shard).
fn scope_of(batch: &Taken) -> Result<(Option<Checkpoints>, Scope), String> {
    let Some(first) = batch.acks.first() else {
        return Ok((None, Scope::Store));
    };
    let store = first.store().clone();
    let scope = store.scope(first);
    if batch
        .acks
        .iter()
        .any(|a| !a.store().same(&store) || store.scope(a) != scope)
    {
        return Err("a batch carries acknowledgements of several shards or sources, which one publication cannot cover".into());
    }
    Ok((Some(store), scope))
}

/// Rolls up every batch until the input closes, writing rows every flush interval and at
/// the end.
pub fn run(
    id: &str,
    spec: &DruidSpec,
    input: &mut Input,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), String> {
    let writer = match &spec.output {
        DruidOutput::Kinesis(stream) => Writer::Kinesis(Box::new(KinesisWriter::new(id, stream)?)),
        DruidOutput::Files { dir, append } => {
            if !append {
                start_afresh(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            Writer::Files(dir)
        }
    };
    if let Some(url) = &spec.overlord_url {
        match supervisor_spec(spec).and_then(|body| submit(url, &body)) {
            Ok(answer) => {
                tracing::info!(message = "Supervisor spec submitted to the Overlord.", component_id = %id, overlord = %url, %answer)
            }
            Err(error) => {
                metrics.error("overlord_submit_failed", 1);
                tracing::error!(message = "Could not submit the supervisor spec; rows flow anyway.", component_id = %id, overlord = %url, %error);
            }
        }
    }
    let mut publisher = Publisher {
        id,
        writer,
        metrics,
        lifecycle,
        run: format!("{:016x}", crate::kinesis::random_u64()),
        publications: 0,
    };
    // One per publication scope the batches come from (and one for batches without).
    let mut pending: Vec<Pending> = Vec::new();
    let mut flushed_at = Instant::now();
    loop {
        let wait = spec.flush_interval.saturating_sub(flushed_at.elapsed());
        match input.recv_timeout(wait) {
            Ok(Some(batch)) => {
                metrics.received(batch.lines as u64);
                let (store, scope) = scope_of(&batch)?;
                let at = match pending.iter().position(|p| p.takes(&store, &scope)) {
                    Some(at) => at,
                    None => {
                        // A scope seen for the first time: what a crash left half
                        // published is completed before anything else of it.
                        if let Some(store) = &store
                            && publisher.settle(store, &scope)? == Published::LeaseLost
                        {
                            metrics.count("druid_lease_lost_lines_total", batch.lines as u64);
                            batch.forsake();
                            continue;
                        }
                        pending.push(Pending::new(store, scope, spec));
                        pending.len() - 1
                    }
                };
                let group = &mut pending[at];
                if group.published_already(&batch, id) {
                    metrics.count("druid_republished_lines_skipped_total", batch.lines as u64);
                    batch.done();
                    continue;
                }
                for line in batch.text.lines() {
                    match group.rollup.add(line) {
                        Ok(()) => metrics.count("druid_flows_total", 1),
                        Err(skipped) => {
                            metrics.error(
                                match skipped {
                                    Skipped::InvalidJson => "invalid_json",
                                    Skipped::NoStart => "missing_start",
                                },
                                1,
                            );
                            metrics.discarded(1);
                        }
                    }
                }
                group.cover(&batch);
                // Only its acknowledgements wait for the flush, not its text.
                let mut batch = batch;
                batch.shrink();
                group.covered.push(batch);
            }
            Ok(None) => {}
            Err(Ended) => break,
        }
        if flushed_at.elapsed() >= spec.flush_interval {
            for group in &mut pending {
                publisher.flush(group)?;
            }
            // Holdings that are gone take no more batches.
            pending.retain(|p| p.store.as_ref().is_none_or(|s| s.current(&p.scope)));
            flushed_at = Instant::now();
        }
    }
    for group in &mut pending {
        publisher.flush(group)?;
    }
    Ok(())
}

/// The Druid Kinesis supervisor spec that ingests this sink's stream: dimensions typed
/// as they appear in the rows, `longSum` metrics over the pre-aggregated sums, and the
/// same rollup granularity.
pub fn supervisor_spec(spec: &DruidSpec) -> Result<Value, String> {
    let DruidOutput::Kinesis(kinesis) = &spec.output else {
        return Err(
            "this druid sink writes files; a supervisor spec needs `stream_name` (or `stream_arn`)"
                .into(),
        );
    };
    let stream = kinesis
        .stream
        .stream
        .name
        .clone()
        .or_else(|| {
            kinesis
                .stream
                .stream
                .arn
                .as_deref()
                .and_then(|arn| arn.rsplit('/').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    // A region the ARN names serves when none is configured.
    let arn_region = kinesis
        .stream
        .stream
        .arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let endpoint = match (
        &kinesis.stream.endpoint,
        kinesis.stream.region.clone().or(arn_region),
    ) {
        // Druid's AWS SDK adds https:// to an endpoint without a scheme, so a plain-HTTP
        // endpoint keeps its scheme.
        (Some(endpoint), _) => endpoint.trim_start_matches("https://").to_string(),
        (None, Some(region)) if region.starts_with("cn-") => {
            format!("kinesis.{region}.amazonaws.com.cn")
        }
        (None, Some(region)) => format!("kinesis.{region}.amazonaws.com"),
        (None, None) => {
            return Err(
                "set `region` (or `endpoint`): the spec must name the stream's endpoint".into(),
            );
        }
    };
    let segment = segment_granularity(spec.granularity_secs).ok_or_else(|| {
        format!(
            "granularity_secs = {} divides neither an hour nor a day",
            spec.granularity_secs
        )
    })?;
    let dimensions: Vec<Value> = spec
        .dimensions
        .iter()
        .map(|name| {
            let kind = if INTEGER_FIELDS.contains(&name.as_str()) {
                "long"
            } else {
                "string"
            };
            json!({"type": kind, "name": name})
        })
        .collect();
    let metrics: Vec<Value> = METRICS
        .iter()
        .map(|name| json!({"type": "longSum", "name": name, "fieldName": name}))
        .chain([json!({"type": "count", "name": COUNT_METRIC})])
        .collect();
    let query_granularity = match spec.granularity_secs {
        1 => json!("SECOND"),
        60 => json!("MINUTE"),
        900 => json!("FIFTEEN_MINUTE"),
        3600 => json!("HOUR"),
        86_400 => json!("DAY"),
        secs => json!({"type": "duration", "duration": secs * 1000}),
    };
    Ok(json!({
        "type": "kinesis",
        "spec": {
            "dataSchema": {
                "dataSource": spec.data_source,
                "timestampSpec": {"column": "timestamp", "format": "millis"},
                "dimensionsSpec": {"dimensions": dimensions},
                "metricsSpec": metrics,
                "granularitySpec": {
                    "type": "uniform",
                    "segmentGranularity": segment,
                    "queryGranularity": query_granularity,
                    "rollup": true
                }
            },
            "ioConfig": {
                "type": "kinesis",
                "stream": stream,
                "endpoint": endpoint,
                "inputFormat": {"type": "json"},
                "useEarliestSequenceNumber": true,
                "taskCount": 1,
                "replicas": 1,
                "taskDuration": "PT1H"
            },
            "tuningConfig": {"type": "kinesis", "maxRowsInMemory": 100000}
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_up_per_bucket_and_dimensions() {
        let dims: Vec<String> = ["src_app", "protocol"].map(String::from).into();
        let mut rollup = Rollup::new(&dims, 60);
        for line in [
            r#"{"start":120,"src_app":"api","protocol":6,"bytes":10,"packets":1}"#,
            r#"{"start":179,"src_app":"api","protocol":6,"bytes":5,"packets":2}"#,
            r#"{"start":180,"src_app":"api","protocol":6,"bytes":1,"packets":1}"#,
            r#"{"start":121,"src_app":null,"protocol":17,"bytes":null,"packets":3}"#,
        ] {
            rollup.add(line).unwrap();
        }
        assert_eq!(rollup.add("{\"start\":null}"), Err(Skipped::NoStart));
        assert_eq!(rollup.add("not json"), Err(Skipped::InvalidJson));
        let rows: Vec<String> = rollup.drain().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            rows,
            vec![
                "{\"timestamp\":120000,\"src_app\":\"api\",\"protocol\":6,\"flows\":2,\"bytes\":15,\"packets\":3}\n",
                "{\"timestamp\":120000,\"src_app\":null,\"protocol\":17,\"flows\":1,\"bytes\":0,\"packets\":3}\n",
                "{\"timestamp\":180000,\"src_app\":\"api\",\"protocol\":6,\"flows\":1,\"bytes\":1,\"packets\":1}\n",
            ]
        );
        assert!(rollup.is_empty());
    }

    #[test]
    fn the_fast_path_agrees_with_a_json_parser() {
        let dims: Vec<String> = ["a", "b", "c"].map(String::from).into();
        for line in [
            r#"{"start":60,"a":"x","b":7,"c":null,"bytes":3,"packets":1}"#,
            r#" { "start" : 60 , "a" : "x\"y,}" , "b":true,"bytes":3 } "#,
            r#"{"start":61,"b":{"nested":1},"a":"x"}"#,
            r#"{"start":62,"a":["list"],"bytes":9}"#,
            r#"{"start":63}"#,
            r#"{"start":64,"a":"\u00e9","b":-0,"c":1e5}"#,
            r#"{"\u0073tart":65,"a":"x"}"#,
        ] {
            let mut fast = Rollup::new(&dims, 60);
            fast.add(line).unwrap();
            // The reference: the same line through serde_json.
            let value: Value = serde_json::from_str(line).unwrap();
            let o = value.as_object().unwrap();
            let want = format!(
                "{{\"timestamp\":60000,\"a\":{},\"b\":{},\"c\":{},\"flows\":1,\"bytes\":{},\"packets\":{}}}\n",
                o.get("a").unwrap_or(&Value::Null),
                o.get("b").unwrap_or(&Value::Null),
                o.get("c").unwrap_or(&Value::Null),
                o.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                o.get("packets").and_then(Value::as_u64).unwrap_or(0),
            );
            assert_eq!(fast.drain()[0].1, want, "{line}");
        }
        let mut rollup = Rollup::new(&dims, 60);
        for bad in [
            "{\"start\":1",
            "{\"start\":1}}",
            "[1]",
            "{\"a\":1,}",
            "{\"start\":1,\"a\":xyz}",
            "{\"start\":1,\"a\":1x}",
            "{\"start\":1,\"a\":01}",
            "{\"start\":1,\"a\":1.}",
            "{\"start\":1,\"a\":-.5}",
            "{\"start\":1,\"a\":\"bad \\q escape\"}",
            "{\"start\":1,\"a\":\"raw \u{1} control\"}",
        ] {
            assert_eq!(rollup.add(bad), Err(Skipped::InvalidJson), "{bad}");
        }
    }

    fn spec_with(granularity_secs: u64, stream: crate::kinesis::StreamConfig) -> DruidSpec {
        DruidSpec {
            data_source: "d".into(),
            dimensions: vec!["src_app".into()],
            granularity_secs,
            flush_interval: Duration::from_secs(1),
            output: DruidOutput::Kinesis(KinesisSinkSpec {
                stream,
                partition_key: crate::sinks::kinesis::PartitionKey::Spread,
            }),
            overlord_url: None,
        }
    }

    fn stream(
        name: Option<&str>,
        arn: Option<&str>,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> crate::kinesis::StreamConfig {
        crate::kinesis::StreamConfig {
            stream: crate::kinesis::StreamRef {
                name: name.map(String::from),
                arn: arn.map(String::from),
            },
            endpoint: endpoint.map(String::from),
            region: region.map(String::from),
        }
    }

    #[test]
    fn the_spec_follows_granularity_region_and_endpoint() {
        let io = |spec: &Value| spec["spec"]["ioConfig"]["endpoint"].clone();
        let granularity = |spec: &Value| spec["spec"]["dataSchema"]["granularitySpec"].clone();
        let plain = stream(Some("s"), None, None, Some("us-east-1"));
        let minute = supervisor_spec(&spec_with(60, plain.clone())).unwrap();
        assert_eq!(granularity(&minute)["segmentGranularity"], "HOUR");
        assert_eq!(granularity(&minute)["queryGranularity"], "MINUTE");
        assert_eq!(
            minute["spec"]["dataSchema"]["metricsSpec"][3],
            json!({"type": "count", "name": "sink_rows"})
        );
        let two_hours = supervisor_spec(&spec_with(7200, plain.clone())).unwrap();
        assert_eq!(granularity(&two_hours)["segmentGranularity"], "DAY");
        assert_eq!(
            granularity(&two_hours)["queryGranularity"],
            json!({"type": "duration", "duration": 7_200_000})
        );
        assert_eq!(
            granularity(&supervisor_spec(&spec_with(86_400, plain.clone())).unwrap())["segmentGranularity"],
            "DAY"
        );
        assert!(supervisor_spec(&spec_with(7, plain)).is_err());
        assert!(segment_granularity(100_000).is_none() && segment_granularity(0).is_none());
        let local = stream(Some("s"), None, Some("http://127.0.0.1:4567"), None);
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, local)).unwrap()),
            "http://127.0.0.1:4567"
        );
        let tls = stream(Some("s"), None, Some("https://kinesis.example"), None);
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, tls)).unwrap()),
            "kinesis.example"
        );
        let china = stream(Some("s"), None, None, Some("cn-north-1"));
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, china)).unwrap()),
            "kinesis.cn-north-1.amazonaws.com.cn"
        );
        let arn = stream(
            None,
            Some("arn:aws:kinesis:eu-north-1:123456789012:stream/rollups"),
            None,
            None,
        );
        let by_arn = supervisor_spec(&spec_with(60, arn)).unwrap();
        assert_eq!(io(&by_arn), "kinesis.eu-north-1.amazonaws.com");
        assert_eq!(by_arn["spec"]["ioConfig"]["stream"], "rollups");
    }

    #[test]
    fn submit_follows_a_standby_overlords_redirect() {
        use std::io::{BufRead, Read};
        let leader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let standby = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let leader_url = format!("http://{}", leader.local_addr().unwrap());
        let serve = |listener: std::net::TcpListener, answer: String| {
            std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                write!(&stream, "{answer}").unwrap();
                request_line
            })
        };
        let standby_answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {leader_url}/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true\r\nContent-Length: 0\r\n\r\n"
        );
        let at_standby = serve(standby.try_clone().unwrap(), standby_answer);
        let at_leader = serve(
            leader,
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":1}".into(),
        );
        let answer = submit(
            &format!("http://{}", standby.local_addr().unwrap()),
            &json!({"type": "kinesis"}),
        )
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        for request in [at_standby.join().unwrap(), at_leader.join().unwrap()] {
            assert_eq!(
                request,
                "POST /druid/indexer/v1/supervisor?skipRestartIfUnmodified=true HTTP/1.1\r\n"
            );
        }
    }

    #[test]
    fn bucket_names_are_utc() {
        assert_eq!(bucket_name(0), "19700101T0000Z");
        assert_eq!(bucket_name(1_700_000_000), "20231114T2213Z");
        assert_eq!(bucket_name(951_782_400), "20000229T0000Z");
    }
}
