//! The `aws_s3` source against real local S3 and SQS APIs (moto in server mode, on
//! 127.0.0.1): bucket notifications to a queue, objects written while the pipeline runs.

use crate::{counter, read_ndjson, rows_after, signal, start_run, summary};
use flowenrich_test_support::kinesis_local::KinesisLocal;
use flowenrich_test_support::moto::Moto;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// `n` default-format (v2) lines, each its own `bytes`: `first..first + n`.
fn lines(first: u32, n: u32) -> String {
    (first..first + n)
        .map(|bytes| {
            format!(
                "2 123456789012 eni-1 10.0.0.1 10.0.0.2 1000 443 6 1 {bytes} 1700000000 1700000060 ACCEPT OK\n"
            )
        })
        .collect()
}

fn pipeline(moto: &Moto, queue: &str, visibility: u64, out: &str) -> String {
    format!(
        r#"
[sources.s3]
type = "aws_s3"
region = "us-east-1"
endpoint = "{endpoint}"
batch_lines = 100

[sources.s3.sqs]
queue_url = "{queue}"
poll_secs = 1
visibility_timeout_secs = {visibility}

[transforms.t]
type = "wasm"
inputs = ["s3"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "{out}"

[sinks.dead]
type = "file"
inputs = ["s3.dead_letter", "t.dead_letter"]
path = "dead-{out}"
"#,
        endpoint = moto.endpoint
    )
}

/// Waits until the queue holds no message at all, visible or in flight.
fn wait_empty(moto: &Moto, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queued = moto.queued(queue);
        if queued == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue still holds {queued:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Which lines came out (each line's `bytes`).
fn which(rows: &[serde_json::Value]) -> BTreeSet<u64> {
    rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect()
}

#[test]
fn announced_objects_are_read_and_their_messages_deleted_once_acknowledged() {
    let moto = Moto::start();
    let queue = moto.bucket_notifying_queue("flow-logs", "objects");
    let dir = tempfile::tempdir().unwrap();
    let child = start_run(
        dir.path(),
        &pipeline(&moto, &queue, 30, "out.ndjson"),
        KinesisLocal::aws_env,
    );
    // Written while the pipeline runs: a gzip object with an S3 header (its own format),
    // a plain one, a Parquet one, and one that is not the gzip it claims to be.
    let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n";
    moto.put_object(
        "flow-logs",
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/07/a.log.gz",
        gzip(&format!("{header}{}", lines(0, 250))),
    );
    moto.put_object("flow-logs", "plain/b.log", lines(1000, 50).into_bytes());
    // AWS's Parquet delivery, three row groups.
    moto.put_object(
        "flow-logs",
        "parquet/d.log.parquet",
        flowenrich_test_support::parquet_logs::v2_parquet(&lines(3000, 120), 50),
    );
    let mut corrupt = gzip(&lines(2000, 10));
    corrupt.truncate(corrupt.len() / 2);
    moto.put_object("flow-logs", "broken/c.log.gz", corrupt);
    let out = dir.path().join("out.ndjson");
    let rows = rows_after(&out, 420);
    wait_empty(&moto, &queue);
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rows_now = read_ndjson(&out);
    let want: BTreeSet<u64> = (0..250).chain(1000..1050).chain(3000..3120).collect();
    let got = which(&rows_now);
    assert!(got.is_superset(&want), "{} rows", rows.len());
    // The broken object: the lines before the damage may come out, and the object is a
    // dead letter naming its key.
    assert!(got.difference(&want).all(|p| (2000..2010).contains(p)));
    let dead = read_ndjson(&dir.path().join("dead-out.ndjson"));
    assert!(
        dead.iter().any(|d| d["key"] == "broken/c.log.gz"
            && d["error"]
                .as_str()
                .unwrap()
                .contains("cannot read the object")),
        "{dead:?}"
    );
    let summary = summary(&stderr, "s3");
    assert_eq!(counter(summary, "s3_objects_total"), 4, "{summary}");
    assert!(
        counter(summary, "sqs_messages_deleted_total") >= 4,
        "{summary}"
    );
}

#[test]
fn a_host_killed_in_the_middle_of_an_object_loses_no_line() {
    let moto = Moto::start();
    let queue = moto.bucket_notifying_queue("flow-logs", "objects");
    let dir = tempfile::tempdir().unwrap();
    let total = 150_000;
    let first = start_run(
        dir.path(),
        &pipeline(&moto, &queue, 3, "first.ndjson"),
        KinesisLocal::aws_env,
    );
    moto.put_object("flow-logs", "big.log.gz", gzip(&lines(0, total)));
    // Killed once part of the object is out.
    rows_after(&dir.path().join("first.ndjson"), 500);
    signal(&first, "KILL");
    let _ = first.wait_with_output();
    let written = read_ndjson(&dir.path().join("first.ndjson")).len();
    assert!(
        written < total as usize,
        "the object was read whole before the kill"
    );
    // Its message was not deleted: it reappears once its visibility runs out, and the
    // restarted host reads the object again.
    let (visible, in_flight) = moto.queued(&queue);
    assert_eq!(visible + in_flight, 1);
    let second = start_run(
        dir.path(),
        &pipeline(&moto, &queue, 3, "second.ndjson"),
        KinesisLocal::aws_env,
    );
    let second_out = dir.path().join("second.ndjson");
    let deadline = Instant::now() + Duration::from_secs(90);
    while crate::rows_now(&second_out).len() < total as usize {
        if Instant::now() > deadline {
            signal(&second, "TERM");
            let output = second.wait_with_output().unwrap();
            panic!(
                "{} rows after the restart; queue {:?}\n{}",
                crate::rows_now(&second_out).len(),
                moto.queued(&queue),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_empty(&moto, &queue);
    signal(&second, "TERM");
    let output = second.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut got = which(&read_ndjson(&dir.path().join("first.ndjson")));
    got.extend(which(&read_ndjson(&dir.path().join("second.ndjson"))));
    assert_eq!(got.len(), total as usize, "every line, at least once");
    eprintln!(
        "aws_s3 kill -9: {written} of {total} lines out before the kill, all after the restart"
    );
}

#[test]
fn a_backfill_reads_the_objects_under_a_prefix_from_a_start_time_and_ends() {
    let moto = Moto::start();
    moto.block_on(moto.s3.create_bucket().bucket("flow-logs").send())
        .unwrap();
    moto.put_object("flow-logs", "AWSLogs/old.log", lines(0, 10).into_bytes());
    moto.put_object("flow-logs", "elsewhere/x.log", lines(50, 10).into_bytes());
    // The start time: a whole second after the old object was written.
    std::thread::sleep(Duration::from_millis(1100));
    let start = crate::aws_s3::epoch_now() as i64 + 1;
    while crate::aws_s3::epoch_now() < start as f64 + 0.1 {
        std::thread::sleep(Duration::from_millis(50));
    }
    moto.put_object("flow-logs", "AWSLogs/a.log.gz", gzip(&lines(100, 30)));
    moto.put_object(
        "flow-logs",
        "AWSLogs/b.parquet",
        flowenrich_test_support::parquet_logs::v2_parquet(&lines(200, 20), 8),
    );
    let start = utc(start);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"
[sources.s3]
type = "aws_s3"
region = "us-east-1"
endpoint = "{endpoint}"

[sources.s3.backfill]
bucket = "flow-logs"
prefix = "AWSLogs/"
start_time = "{start}"

[transforms.t]
type = "wasm"
inputs = ["s3"]

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
        endpoint = moto.endpoint
    );
    let child = start_run(dir.path(), &pipeline, KinesisLocal::aws_env);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let got = which(&read_ndjson(&dir.path().join("out.ndjson")));
    let want: BTreeSet<u64> = (100..130).chain(200..220).collect();
    assert_eq!(got, want, "{stderr}");
}

/// Now, in epoch seconds.
fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `seconds` as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm).
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
