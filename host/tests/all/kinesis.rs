//! Tests against a real local Kinesis implementation (npm `kinesis-local`, i.e.
//! kinesis-mock), started here on 127.0.0.1. `scripts/test` installs it.

use crate::{http, read_ndjson, rows_after, rows_now, signal, sorted_ports, start_run, summary};
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

// Shared with the `kinesis` benchmark, which uses other parts of it.
#[allow(dead_code)]
pub use flowenrich_test_support::kinesis_local::*;

/// Running pipelines against a local Kinesis.
pub trait RunPipeline {
    /// Starts `flowenrich run` on `pipeline` (with `{endpoint}` replaced by this
    /// Kinesis's address) in `dir`, with the environment to reach it (fake credentials,
    /// no instance metadata).
    fn run(&self, dir: &Path, pipeline: &str) -> Child;
}

impl RunPipeline for KinesisLocal {
    fn run(&self, dir: &Path, pipeline: &str) -> Child {
        let pipeline = pipeline.replace("{endpoint}", &self.endpoint);
        start_run(dir, &pipeline, KinesisLocal::aws_env)
    }
}

#[test]
fn a_changelog_stream_feeds_the_table_while_flows_run() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("app-changes", 2);
    // Before the pipeline starts: two events in one record, on either shard.
    kinesis.put(
        "app-changes",
        "a",
        "{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"api\"}}\n\
         {\"ts\": 100, \"op\": \"assign\", \"cidr\": \"10.9.0.0/16\", \"attrs\": {\"app\": \"vpc\"}}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = kinesis.run(
        dir.path(),
        r#"
[metadata.apps]
type = "aws_kinesis_streams"
stream_name = "app-changes"
endpoint = "{endpoint}"
region = "us-east-1"
retention_secs = 0
poll_interval_ms = 100

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
    );
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut sent = 0;
    let mut send = |stdin: &mut std::process::ChildStdin, dst: &str| -> serde_json::Value {
        writeln!(
            stdin,
            "2 1 eni-1 10.0.0.1 {dst} 1 443 6 1 10 200 260 ACCEPT OK"
        )
        .unwrap();
        stdin.flush().unwrap();
        sent += 1;
        rows_after(&out, sent).pop().unwrap()
    };
    let wait_for = |send: &mut dyn FnMut() -> serde_json::Value, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = send();
            if row["dst_app"] == want && row["src_app"] == "api" {
                return;
            }
            assert!(Instant::now() < deadline, "never saw dst_app {want}: {row}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The stream's backlog is read from the start.
    wait_for(&mut || send(&mut stdin, "10.9.1.1"), "vpc");

    // A change put while flows run: later batches see it. A bad line in the same record
    // is counted and skipped; the good one is used.
    kinesis.put(
        "app-changes",
        "b",
        "not json\n{\"ts\": 150, \"op\": \"assign\", \"ip\": \"10.9.1.1\", \"attrs\": {\"app\": \"db\"}}\n",
    );
    wait_for(&mut || send(&mut stdin, "10.9.1.1"), "db");

    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = summary(&stderr, "metadata.apps");
    assert!(summary.contains("invalid_json 1"), "{summary}");
    assert!(summary.contains("received 4 "), "{summary}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn the_kinesis_source_reads_text_and_cloudwatch_envelopes_from_every_shard() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    let line = |port: u32| {
        format!("2 123456789012 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK")
    };
    // Raw text, two lines in one record.
    kinesis.put_bytes(
        "flows",
        "k1",
        format!("{}\n{}\n", line(1), line(2)).into_bytes(),
    );
    // A CloudWatch Logs subscription record with three flow lines.
    let events: Vec<serde_json::Value> = [3, 4, 5]
        .map(|p| serde_json::json!({"id": p.to_string(), "timestamp": 1, "message": line(p)}))
        .into();
    let envelope = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "vpc-flow-logs",
        "logStream": "eni-1-all", "subscriptionFilters": ["to-kinesis"],
        "logEvents": events,
    });
    kinesis.put_bytes("flows", "k2", gzip(envelope.to_string().as_bytes()));
    // An envelope whose one message holds two lines (an escaped newline), and one whose
    // second event has no message: dead-lettered whole, its first event's line too.
    let two_lines = serde_json::json!({
        "messageType": "DATA_MESSAGE", "logEvents": [
            {"id": "19", "timestamp": 1, "message": format!("{}\n{}", line(19), line(20))}],
    });
    kinesis.put_bytes("flows", "k5", gzip(two_lines.to_string().as_bytes()));
    let no_message = serde_json::json!({
        "messageType": "DATA_MESSAGE", "logEvents": [
            {"id": "21", "timestamp": 1, "message": line(21)}, {"id": "22", "timestamp": 1}],
    });
    kinesis.put_bytes("flows", "k6", gzip(no_message.to_string().as_bytes()));
    // CloudWatch's control message is skipped; a corrupt gzip record is dead-lettered.
    kinesis.put_bytes(
        "flows",
        "k3",
        gzip(br#"{"messageType": "CONTROL_MESSAGE", "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#),
    );
    let (bad_shard, bad_sequence) = kinesis.put_bytes("flows", "k4", vec![0x1f, 0x8b, 0, 1, 2]);
    for port in 6..=15 {
        kinesis.put_bytes("flows", &format!("key{port}"), line(port).into_bytes());
    }
    // A record with a line over max_line_bytes: its other line goes on, the long one to
    // the dead letters. And one with CRLF line endings.
    let long = "x".repeat(300);
    kinesis.put_bytes(
        "flows",
        "k16",
        format!("{}\n{long}\n", line(16)).into_bytes(),
    );
    kinesis.put_bytes(
        "flows",
        "k17",
        format!("{}\r\n{}\r\n", line(17), line(18)).into_bytes(),
    );

    let dir = tempfile::tempdir().unwrap();
    let child = kinesis.run(
        dir.path(),
        r#"
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "flows"
endpoint = "{endpoint}"
region = "us-east-1"
max_line_bytes = 200

[transforms.t]
type = "wasm"
inputs = ["flows"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"

[sinks.bad_records]
type = "file"
inputs = ["flows.dead_letter"]
path = "bad.ndjson"
"#,
    );
    let read = |name: &str| rows_now(&dir.path().join(name));
    let deadline = Instant::now() + Duration::from_secs(60);
    while (read("out.ndjson").len() < 20 || read("bad.ndjson").len() < 3)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM: drain, flush, exit 0.
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (rows, bad) = (read("out.ndjson"), read("bad.ndjson"));
    assert_eq!((rows.len(), bad.len()), (20, 3), "{stderr}");

    assert_eq!(
        sorted_ports(&rows),
        (1..=20).collect::<Vec<u64>>(),
        "every line once"
    );
    let corrupt = bad
        .iter()
        .find(|letter| letter["data_base64"] == "H4sAAQI=")
        .expect("the corrupt record's letter");
    assert_eq!(corrupt["shard"], bad_shard.as_str());
    assert_eq!(corrupt["sequence"], bad_sequence.as_str());
    let envelope = bad
        .iter()
        .find(|letter| letter["data_base64"].is_string() && letter["data_base64"] != "H4sAAQI=")
        .expect("the broken envelope's letter");
    let error = envelope["error"].as_str().unwrap();
    assert!(
        error.starts_with("not a CloudWatch Logs envelope: missing field `message` at byte "),
        "{envelope}"
    );
    let too_long = bad
        .iter()
        .find(|letter| letter.get("line_prefix").is_some())
        .expect("the long line's letter");
    assert_eq!(too_long["line_prefix"], long.as_str(), "{too_long}");
    let summary = summary(&stderr, "flows");
    assert!(summary.contains("invalid_record 2"), "{summary}");
    assert!(summary.contains("line_too_long 1"), "{summary}");
}

#[test]
fn after_a_split_children_are_read_only_after_their_parent_is_drained() {
    reshard(1, 2);
}

#[test]
fn after_a_merge_the_child_is_read_only_after_both_parents_are_drained() {
    reshard(2, 1);
}

/// Lines of one partition key before and after resharding `from` → `to` shards must come
/// out in order and once each, plus lines of other keys once each.
fn reshard(from: i32, to: i32) {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("resharded", from);
    let line =
        |port: u32| format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK");
    // The same key before and after a split: its records go to the parent, then to
    // one child. The source starts only afterwards, so it sees all three shards at once.
    for port in 1..=10 {
        kinesis.put_bytes("resharded", "one-key", line(port).into_bytes());
        kinesis.put_bytes(
            "resharded",
            &format!("other{port}"),
            line(100 + port).into_bytes(),
        );
    }
    kinesis.update_shard_count("resharded", to);
    for port in 11..=20 {
        kinesis.put_bytes("resharded", "one-key", line(port).into_bytes());
        kinesis.put_bytes(
            "resharded",
            &format!("other{port}"),
            line(100 + port).into_bytes(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let child = kinesis.run(
        dir.path(),
        r#"
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "resharded"
endpoint = "{endpoint}"
region = "us-east-1"
batch_lines = 3

[transforms.t]
type = "wasm"
inputs = ["flows"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
    );
    let out = dir.path().join("out.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows_now(&out).len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give a wrongly re-read shard the chance to show up twice.
    std::thread::sleep(Duration::from_millis(600));
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let ports: Vec<u64> = read_ndjson(&out)
        .iter()
        .map(|r| r["srcport"].as_u64().unwrap())
        .collect();
    let one_key: Vec<u64> = ports.iter().copied().filter(|&p| p < 100).collect();
    assert_eq!(
        one_key,
        (1..=20).collect::<Vec<u64>>(),
        "parents first, in order, once: {stderr}"
    );
    let mut others: Vec<u64> = ports.iter().copied().filter(|&p| p > 100).collect();
    others.sort_unstable();
    assert_eq!(
        others,
        (101..=120).collect::<Vec<u64>>(),
        "every other line once"
    );
}

#[test]
fn checkpoints_resume_after_a_restart_and_a_crash_loses_nothing() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("resumed", 2);
    let line =
        |port: u32| format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK");
    let put = |ports: std::ops::RangeInclusive<u32>| {
        for port in ports {
            kinesis.put_bytes("resumed", &format!("k{port}"), line(port).into_bytes());
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = r#"
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "resumed"
endpoint = "{endpoint}"
region = "us-east-1"

[transforms.t]
type = "wasm"
inputs = ["flows"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
append = true
"#;
    let out = dir.path().join("out.ndjson");
    let ports = || sorted_ports(&rows_now(&out));
    // Runs the pipeline until `want` rows are out, then stops it with `how`.
    let run_until = |want: usize, how: &str| {
        let child = kinesis.run(dir.path(), pipeline);
        let deadline = Instant::now() + Duration::from_secs(60);
        while ports().len() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let checkpoints catch up with what is out.
        std::thread::sleep(Duration::from_millis(300));
        signal(&child, how);
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    put(1..=10);
    let stderr = run_until(10, "TERM");
    assert_eq!(ports(), (1..=10).collect::<Vec<u64>>(), "{stderr}");
    let store = dir.path().join(".flowenrich/flows.checkpoints.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    assert_eq!(saved["shards"].as_object().unwrap().len(), 2, "{saved}");

    // A graceful restart resumes where the checkpoints say: nothing twice.
    put(11..=20);
    let stderr = run_until(20, "TERM");
    assert_eq!(ports(), (1..=20).collect::<Vec<u64>>(), "{stderr}");

    // A crash (SIGKILL) may re-deliver the unacknowledged tail, but loses nothing.
    put(21..=25);
    run_until(25, "KILL");
    put(26..=30);
    let stderr = run_until(30, "TERM");
    let mut seen = ports();
    seen.dedup();
    assert_eq!(seen, (1..=30).collect::<Vec<u64>>(), "{stderr}");
    assert!(
        ports()[..20] == (1..=20).collect::<Vec<u64>>()[..],
        "the acknowledged part is never repeated"
    );
}

#[test]
fn the_kinesis_sink_puts_every_line_keyed_by_a_field() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("enriched", 2);
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (1..=40)
        .map(|port| {
            format!(
                "2 1 eni-1 10.0.0.{} 10.0.9.9 {port} 443 6 1 10 200 260 ACCEPT OK\n",
                port % 4
            )
        })
        .collect();
    std::fs::write(dir.path().join("flows.log"), lines).unwrap();
    let output = kinesis
        .run(
            dir.path(),
            r#"
[sources.in]
type = "file"
path = "flows.log"
batch_lines = 7

[transforms.t]
type = "wasm"
inputs = ["in"]

[sinks.stream]
type = "aws_kinesis_streams"
inputs = ["t"]
stream_name = "enriched"
endpoint = "{endpoint}"
region = "us-east-1"
partition_key_field = "srcaddr"
"#,
        )
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (shards, rows): (Vec<String>, Vec<serde_json::Value>) =
        kinesis.read_all("enriched").into_iter().unzip();
    let mut shard_of: std::collections::HashMap<String, String> = Default::default();
    for (shard, row) in shards.iter().zip(&rows) {
        let addr = row["srcaddr"].as_str().unwrap().to_string();
        let first = shard_of
            .entry(addr.clone())
            .or_insert_with(|| shard.clone());
        assert_eq!(first, shard, "every record of {addr} in one shard");
    }
    assert_eq!(
        sorted_ports(&rows),
        (1..=40).collect::<Vec<u64>>(),
        "{stderr}"
    );
    let summary = summary(&stderr, "stream");
    assert!(summary.contains("sent 40"), "{summary}");
}

#[test]
fn a_sink_outage_slows_the_pipeline_and_loses_nothing() {
    let kinesis = KinesisLocal::start();
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (1..=30)
        .map(|port| format!("2 1 eni-1 10.0.0.1 10.0.9.9 {port} 443 6 1 10 200 260 ACCEPT OK\n"))
        .collect();
    std::fs::write(dir.path().join("flows.log"), lines).unwrap();
    // The sink's endpoint is not up yet: every put fails until it is.
    let late = Later::with_stream("late", 1);
    let mut child = kinesis.run(
        dir.path(),
        &r#"
[sources.in]
type = "file"
path = "flows.log"
batch_lines = 10

[transforms.t]
type = "wasm"
inputs = ["in"]

[sinks.stream]
type = "aws_kinesis_streams"
inputs = ["t"]
stream_name = "late"
endpoint = "http://127.0.0.1:LATE_PORT"
region = "us-east-1"
"#
        .replace("LATE_PORT", &late.port.to_string()),
    );
    // Collect stderr as it comes, to see the sink failing before the stream exists.
    let stderr_pipe = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr_pipe)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().contains("PutRecords failed") {
        assert!(
            Instant::now() < deadline,
            "the sink never failed: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still retrying, not finished"
    );
    assert!(
        log.lock().unwrap().contains("component_id=\"stream\""),
        "the retry names the sink"
    );
    let kinesis = late.start();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    assert!(status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = kinesis
        .read_all("late")
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    assert_eq!(
        sorted_ports(&rows),
        (1..=30).collect::<Vec<u64>>(),
        "{stderr}"
    );
    let summary = summary(&stderr, "stream");
    assert!(summary.contains("kinesis_put_retries_total"), "{summary}");
}

#[test]
fn an_unreachable_endpoint_is_retried_from_the_same_position() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let kinesis = KinesisLocal::start_on(port, Some(store.path()));
    kinesis.create_stream("outage", 2);
    let line =
        |port: u32| format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK");
    for port in 1..=10 {
        kinesis.put_bytes("outage", &format!("k{port}"), line(port).into_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let child = kinesis.run(
        dir.path(),
        &format!(
            r#"
[api]
address = "{api}"

[sources.flows]
type = "aws_kinesis_streams"
stream_name = "outage"
endpoint = "{{endpoint}}"
region = "us-east-1"

[transforms.t]
type = "wasm"
inputs = ["flows"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#
        ),
    );
    let out = dir.path().join("out.ndjson");
    assert_eq!(rows_after(&out, 10).len(), 10);

    // The per-shard series are on the admin endpoint: both shards read, no lag left.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = http(&api, "GET", "/metrics");
        let lagging = metrics
            .lines()
            .filter(|l| l.starts_with("kinesis_checkpoint_lag_batches{"))
            .filter(|l| !l.ends_with(" 0"))
            .count();
        if metrics.matches("kinesis_millis_behind_latest{").count() == 2 && lagging == 0 {
            break metrics;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("# TYPE kinesis_millis_behind_latest gauge"),
        "{metrics}"
    );
    let records: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("kinesis_shard_records_total{component_id=\"flows\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(records, 10, "{metrics}");
    assert!(http(&api, "GET", "/health").contains("\"ok\":true"));

    // The endpoint goes away (after persisting its streams) and the host keeps failing...
    std::thread::sleep(Duration::from_millis(500));
    drop(kinesis);
    let failed = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.contains("error_type=\"read_failed\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    // Gone for at least 3 s, and until reads have failed (the SDK's own retries come
    // first).
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(3) || failed(&http(&api, "GET", "/metrics")) == 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "reads failed while it was gone"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...until it is back on the same address with the same streams; new records follow.
    let kinesis = KinesisLocal::start_on(port, Some(store.path()));
    for port in 11..=20 {
        kinesis.put_bytes("outage", &format!("k{port}"), line(port).into_bytes());
    }
    let rows = rows_after(&out, 20);
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rows_at_end = rows_now(&out);
    assert_eq!(rows_at_end.len(), 20, "nothing read twice: {stderr}");
    assert_eq!(sorted_ports(&rows), (1..=20).collect::<Vec<u64>>());
}
