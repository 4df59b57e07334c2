//! Every flow read from a Kinesis source is counted exactly once in the rows the `druid`
//! sink publishes (summed as Druid's `longSum` sums them), across a crash at every step
//! of the publication protocol (test-only failpoints), kill -9 at random moments and
//! PutRecords answers that are lost after the stream applied them. Against the real
//! local Kinesis.

use crate::delivery::put_flows;
use crate::kinesis::{KinesisLocal, LostAnswers};
use crate::{exit_within, signal, start_run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Kinesis `flows` → `wasm` → `druid` rows (one per `srcport`, so a row repeated shows)
/// on `output`, which is `stream_name = ...` (with `endpoint`) or `path = ...`.
fn pipeline(kinesis: &KinesisLocal, output: &str) -> String {
    pipeline_holding(kinesis, output, "")
}

/// As [`pipeline`], with `transform` added to the transform's settings (and the table
/// `apps` from `apps.jsonl` when they name it).
fn pipeline_holding(kinesis: &KinesisLocal, output: &str, transform: &str) -> String {
    let metadata = if transform.contains("metadata") {
        "[metadata.apps]\ntype = \"file\"\npath = \"apps.jsonl\"\nretention_secs = 0\n"
    } else {
        ""
    };
    format!(
        r#"
{metadata}
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "flows"
endpoint = "{endpoint}"
region = "us-east-1"
checkpoints = "cp.json"
batch_lines = 50

[transforms.t]
type = "wasm"
inputs = ["flows"]
{transform}

[sinks.druid]
type = "druid"
inputs = ["t"]
dimensions = ["srcport"]
flush_interval_secs = 1
# Sharded: the faults reach rows rolled up on three threads.
workers = 3
{output}
"#,
        endpoint = kinesis.endpoint
    )
}

/// Flows per `srcport` in `rows`.
pub fn flows_by_port(rows: impl IntoIterator<Item = Value>) -> BTreeMap<u64, u64> {
    let mut sums = BTreeMap::new();
    for row in rows {
        *sums.entry(row["srcport"].as_u64().unwrap()).or_default() +=
            row["flows"].as_u64().unwrap();
    }
    sums
}

/// Asserts that the rows hold exactly one flow per port 1..=n (and says, briefly, how
/// they differ when not).
pub fn assert_exact(rows: Vec<Value>, n: u32, context: &str) {
    let sums = flows_by_port(rows);
    let total: u64 = sums.values().sum();
    let twice = sums.values().filter(|&&f| f > 1).count();
    let missing = (1..=u64::from(n)).filter(|p| !sums.contains_key(p)).count();
    assert!(
        total == u64::from(n) && twice == 0 && missing == 0 && sums.len() == n as usize,
        "{total} flows for {n}: {twice} ports counted more than once, {missing} missing; {context}"
    );
}

pub fn stream_rows(kinesis: &KinesisLocal) -> Vec<Value> {
    kinesis
        .read_all("rollups")
        .into_iter()
        .map(|(_, row)| row)
        .collect()
}

fn file_rows(dir: &Path) -> Vec<Value> {
    crate::rollup_rows_so_far(&dir.join("rollups"))
}

/// Runs the pipeline until the rows hold every flow, then stops it; returns its stderr.
fn run_until_complete(dir: &Path, pipeline: &str, n: u32, rows: &dyn Fn() -> Vec<Value>) -> String {
    let before = flows_by_port(rows()).len();
    let started = Instant::now();
    let child = start_run(dir, pipeline, KinesisLocal::aws_env);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut first = None;
    while flows_by_port(rows()).len() < n as usize {
        if first.is_none() && flows_by_port(rows()).len() > before {
            first = Some(started.elapsed());
        }
        assert!(Instant::now() < deadline, "not every flow arrived");
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "first new flow {first:?} after the start, all {:?}",
        started.elapsed()
    );
    // One more flush interval: anything counted twice would show now.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// Runs once with `failpoint` armed (the process dies there as after kill -9), then
/// again without; the rows must hold every flow once.
fn crash_at(failpoint: &str, to_files: bool, n: u32) {
    crash_holding_at(failpoint, to_files, n, "", &[]);
}

/// As [`crash_at`], with `transform` settings and flows from `srcport` 1..=n to
/// `10.0.0.2`, except those whose port `unknown` lists, which go to `10.0.0.9` (owned by
/// no one).
fn crash_holding_at(failpoint: &str, to_files: bool, n: u32, transform: &str, unknown: &[u32]) {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    let dir = tempfile::tempdir().unwrap();
    let output = if to_files {
        "path = \"rollups\"\nappend = true".to_string()
    } else {
        kinesis.create_stream("rollups", 2);
        format!(
            "stream_name = \"rollups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"",
            kinesis.endpoint
        )
    };
    let pipeline = pipeline_holding(&kinesis, &output, transform);
    if unknown.is_empty() {
        put_flows(&kinesis, "flows", 1..=n);
    } else {
        let records: Vec<(String, Vec<u8>)> = (1..=n)
            .map(|port| {
                let dst = if unknown.contains(&port) {
                    "10.0.0.9"
                } else {
                    "10.0.0.2"
                };
                (
                    format!("k{port}"),
                    format!("2 1 eni-1 10.0.0.1 {dst} {port} 443 6 1 10 200 260 ACCEPT OK")
                        .into_bytes(),
                )
            })
            .collect();
        kinesis.put_many("flows", &records);
        std::fs::write(
            dir.path().join("apps.jsonl"),
            "{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"a\"}}\n{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.2\", \"attrs\": {\"app\": \"b\"}}\n",
        )
        .unwrap();
    }
    let mut child = start_run(dir.path(), &pipeline, |c| {
        KinesisLocal::aws_env(c);
        c.env("FLOWENRICH_FAILPOINTS", format!("{failpoint}=exit"));
    });
    let status = exit_within(&mut child, 60, &format!("{failpoint} was never reached"));
    assert_eq!(
        status.code(),
        Some(137),
        "{failpoint}: died at the failpoint"
    );
    let path = dir.path().to_path_buf();
    let rows: Box<dyn Fn() -> Vec<Value> + '_> = if to_files {
        Box::new(move || file_rows(&path))
    } else {
        Box::new(|| stream_rows(&kinesis))
    };
    let stderr = run_until_complete(dir.path(), &pipeline, n, &*rows);
    assert_exact(rows(), n, &format!("{failpoint}: {stderr}"));
}

#[test]
fn a_crash_at_every_step_of_a_publication_to_a_stream_counts_every_flow_once() {
    for failpoint in [
        "druid.after_begin",
        // Rows of one publication go in several requests (1,000 rows, 500 a request):
        // a crash between two leaves it half written.
        "kinesis_sink.after_request",
        "druid.after_write",
        "druid.after_end",
    ] {
        crash_at(failpoint, false, 1000);
    }
}

#[test]
fn a_crash_at_every_step_of_a_publication_to_files_counts_every_flow_once() {
    for failpoint in ["druid.after_begin", "druid.after_write", "druid.after_end"] {
        crash_at(failpoint, true, 300);
    }
}

#[test]
fn a_crash_between_the_parts_of_a_held_batch_counts_every_flow_once() {
    // Every other flow waits (holdback) for an owner of its destination that never
    // comes: its batch goes to the rollup only once they are released, whole.
    let unknown: Vec<u32> = (1..=400).filter(|p| p % 2 == 0).collect();
    let transform = "metadata = \"apps\"\nholdback_secs = 2";
    for failpoint in ["druid.after_end", "druid.after_write"] {
        crash_holding_at(failpoint, false, 400, transform, &unknown);
    }
}

#[test]
fn lost_put_records_answers_count_nothing_twice() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    kinesis.create_stream("rollups", 2);
    let proxy = LostAnswers::start(&kinesis.endpoint, 2);
    let n = 600;
    put_flows(&kinesis, "flows", 1..=n);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(
        &kinesis,
        &format!(
            "stream_name = \"rollups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"",
            proxy.endpoint
        ),
    );
    let stderr = run_until_complete(dir.path(), &pipeline, n, &|| stream_rows(&kinesis));
    assert_eq!(proxy.lost.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_exact(stream_rows(&kinesis), n, &stderr);
    let summary = crate::summary(&stderr, "druid");
    assert!(
        crate::counter(summary, "kinesis_read_backs_total") >= 1,
        "{summary}"
    );
}

#[test]
fn kill_9_at_random_moments_counts_every_flow_once() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    kinesis.create_stream("rollups", 2);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(
        &kinesis,
        &format!(
            "stream_name = \"rollups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"",
            kinesis.endpoint
        ),
    );
    let n = 1200;
    // The records come in three waves, with a kill -9 at a different moment in each.
    let mut seed = crate::kinesis::free_port() as u64;
    for wave in 0..3 {
        let before = flows_by_port(stream_rows(&kinesis)).len();
        put_flows(&kinesis, "flows", wave * 400 + 1..=wave * 400 + 400);
        let child = start_run(dir.path(), &pipeline, KinesisLocal::aws_env);
        // Wait until this wave starts arriving, then a little more, at random.
        let deadline = Instant::now() + Duration::from_secs(60);
        while flows_by_port(stream_rows(&kinesis)).len() == before {
            assert!(Instant::now() < deadline, "wave {wave} never arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(seed >> 33 & 0x3ff));
        signal(&child, "KILL");
        let _ = child.wait_with_output();
    }
    let stderr = run_until_complete(dir.path(), &pipeline, n, &|| stream_rows(&kinesis));
    assert_exact(stream_rows(&kinesis), n, &stderr);
}

#[test]
fn a_rollup_thread_that_dies_has_nothing_it_held_acknowledged() {
    // The sink rolls up on three threads, and one of them panics on the second batch
    // handed to a helper. Its rows are gone, so none of the batches may be
    // acknowledged: run again, every flow is counted once.
    let n = 1000;
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(&kinesis, "path = \"rollups\"\nappend = true");
    put_flows(&kinesis, "flows", 1..=n);
    let mut child = start_run(dir.path(), &pipeline, |c| {
        KinesisLocal::aws_env(c);
        c.env("FLOWENRICH_FAILPOINTS", "druid.shard_add=panic@2");
    });
    let status = exit_within(&mut child, 60, "the run did not stop");
    assert!(!status.success(), "a dead rollup thread fails the run");
    let rows = || file_rows(dir.path());
    let stderr = run_until_complete(dir.path(), &pipeline, n, &rows);
    assert_exact(rows(), n, &format!("after a rollup thread died: {stderr}"));
}
