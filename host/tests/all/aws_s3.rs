//! The `aws_s3` source against real local S3 and SQS APIs (moto in server mode, on
//! 127.0.0.1): bucket notifications to a queue, objects written while the pipeline runs.

use crate::leases::dynalite::Dynalite;
use crate::{counter, exit_within, read_ndjson, rows_after, signal, start_run, summary};
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
fn sigterm_in_the_middle_of_an_object_stops_reading_and_hands_its_message_back() {
    let moto = Moto::start();
    let queue = moto.bucket_notifying_queue("flow-logs", "objects");
    let dir = tempfile::tempdir().unwrap();
    let total = 150_000;
    // A long visibility: only a hand-back makes the message visible again soon.
    let first = start_run(
        dir.path(),
        &pipeline(&moto, &queue, 600, "first.ndjson"),
        KinesisLocal::aws_env,
    );
    moto.put_object("flow-logs", "big.log.gz", gzip(&lines(0, total)));
    rows_after(&dir.path().join("first.ndjson"), 500);
    let signalled = Instant::now();
    signal(&first, "TERM");
    let output = first.wait_with_output().unwrap();
    let stopped_in = signalled.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = read_ndjson(&dir.path().join("first.ndjson")).len();
    assert!(written < total as usize, "read to its end after SIGTERM");
    // Visible again at once, not after its 600 s: the next reader takes it.
    assert_eq!(moto.queued(&queue), (1, 0));
    let second = start_run(
        dir.path(),
        &pipeline(&moto, &queue, 600, "second.ndjson"),
        KinesisLocal::aws_env,
    );
    let rows = rows_after(&dir.path().join("second.ndjson"), total as usize);
    wait_empty(&moto, &queue);
    signal(&second, "TERM");
    assert!(second.wait_with_output().unwrap().status.success());
    assert_eq!(which(&rows).len(), total as usize);
    eprintln!(
        "aws_s3 SIGTERM: stopped {stopped_in:?} after the signal with {written} of {total} lines out"
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
    let (year, month, day, hour, minute, second) = flowenrich::util::civil_utc(seconds);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Source ports per object in [`keyed_lines`].
const PORTS: u32 = 1000;

/// `n` lines of object `object`: destination port `object + 1`, source ports 1 to
/// [`PORTS`] in turn (so each (`srcport`, `dstport`) has `n / PORTS` flows).
fn keyed_lines(object: u32, n: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                "2 123456789012 eni-1 10.0.0.1 10.0.0.2 {} {} 6 1 10 1700000000 1700000060 ACCEPT OK\n",
                i % PORTS + 1,
                object + 1
            )
        })
        .collect()
}

/// Flows per (`srcport`, `dstport`) in the rows the druid sink published.
fn flows_by_key(kinesis: &KinesisLocal) -> std::collections::BTreeMap<(u64, u64), u64> {
    let mut sums = std::collections::BTreeMap::new();
    for row in crate::exactly_once::stream_rows(kinesis) {
        let key = (
            row["srcport"].as_u64().unwrap(),
            row["dstport"].as_u64().unwrap(),
        );
        *sums.entry(key).or_default() += row["flows"].as_u64().unwrap();
    }
    sums
}

/// Where the objects of [`claiming_host`] come from: `queue`, polled every second, its
/// messages invisible for 3 s.
fn from_queue(queue: &str) -> String {
    format!(
        "[sources.s3.sqs]\nqueue_url = \"{queue}\"\npoll_secs = 1\nvisibility_timeout_secs = 3\n"
    )
}

/// Host `name` of a fleet sharing the claims table and the objects of `objects` (a
/// queue, or a backfill), into druid rows on the stream `rollups`.
fn claiming_host(
    name: &str,
    (moto, objects): (&Moto, &str),
    dynamo: &Dynalite,
    kinesis: &KinesisLocal,
    (dir, batch_lines): (&std::path::Path, usize),
    failpoint: Option<&str>,
) -> std::process::Child {
    let pipeline = format!(
        r#"
[sources.s3]
type = "aws_s3"
region = "us-east-1"
endpoint = "{moto}"
batch_lines = {batch_lines}

{objects}
[sources.s3.leases]
table_name = "s3-claims"
endpoint = "{dynamo}"
worker_id = "{name}"
lease_duration_ms = 3000
scan_interval_ms = 1000
checkpoint_interval_ms = 200

[transforms.t]
type = "wasm"
inputs = ["s3"]

[sinks.druid]
type = "druid"
inputs = ["t"]
dimensions = ["srcport", "dstport"]
flush_interval_secs = 1
stream_name = "rollups"
endpoint = "{kinesis}"
region = "us-east-1"
"#,
        moto = moto.endpoint,
        dynamo = dynamo.endpoint,
        kinesis = kinesis.endpoint
    );
    start_run(dir, &pipeline, |c| {
        KinesisLocal::aws_env(c);
        if let Some(failpoint) = failpoint {
            c.env("FLOWENRICH_FAILPOINTS", format!("{failpoint}=exit"));
        }
    })
}

#[test]
fn into_druid_rows_every_flow_of_an_object_counts_once_across_crashes_and_hosts() {
    let moto = Moto::start();
    let dynamo = Dynalite::start();
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("rollups", 1);
    let queue = moto.bucket_notifying_queue("flow-logs", "objects");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n";
    let per_object = 120_000;
    let mut keys = 0;
    let mut first_object = Vec::new();
    // Round 1: host-a dies right after the rows of its first publication went out, before
    // it logged their end. Round 2: host-a is killed (-9) once its rows start to arrive.
    for (round, failpoint) in [Some("druid.after_write"), None].into_iter().enumerate() {
        let context = failpoint.unwrap_or("kill -9");
        let a = claiming_host(
            "host-a",
            (&moto, &from_queue(&queue)),
            &dynamo,
            &kinesis,
            (dir_a.path(), 50),
            failpoint,
        );
        // Round 1 reads gzip text, round 2 Parquet (slower to decode, so host-a dies in
        // the middle of it).
        let lines = keyed_lines(round as u32, per_object);
        let (object, key) = match round {
            0 => (gzip(&format!("{header}{lines}")), "big-0.log.gz"),
            _ => (
                flowenrich_test_support::parquet_logs::v2_parquet(&lines, 20_000),
                "big-1.log.parquet",
            ),
        };
        if round == 0 {
            first_object = object.clone();
        }
        moto.put_object("flow-logs", key, object);
        let before: u64 = flows_by_key(&kinesis).values().sum();
        let mut a = a;
        match failpoint {
            Some(_) => {
                let status = exit_within(&mut a, 90, &format!("{context} was never reached"));
                assert_eq!(status.code(), Some(137), "{context}: died at the failpoint");
            }
            None => {
                let deadline = Instant::now() + Duration::from_secs(90);
                while flows_by_key(&kinesis).values().sum::<u64>() == before {
                    assert!(Instant::now() < deadline, "no row of host-a arrived");
                    std::thread::sleep(Duration::from_millis(50));
                }
                signal(&a, "KILL");
                let _ = a.wait();
            }
        }
        keys += PORTS as usize;
        let at_death = flows_by_key(&kinesis).values().sum::<u64>() - before;
        if failpoint.is_none() {
            assert!(
                at_death < u64::from(per_object),
                "host-a was killed only after it had published the whole object"
            );
        }
        let complete = |sums: &std::collections::BTreeMap<(u64, u64), u64>| {
            sums.len() == keys && sums.values().all(|&f| f >= u64::from(per_object / PORTS))
        };
        // The message comes back to host-b, which takes the claim once host-a's has run
        // out, completes what host-a left begun, skips what it published, and reads on
        // with batches of another size (so they end where host-a's publications did only
        // because the claim's row says where).
        let b = claiming_host(
            "host-b",
            (&moto, &from_queue(&queue)),
            &dynamo,
            &kinesis,
            (dir_b.path(), 70),
            None,
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        while !complete(&flows_by_key(&kinesis)) || moto.queued(&queue) != (0, 0) {
            if Instant::now() > deadline {
                signal(&b, "TERM");
                let output = b.wait_with_output().unwrap();
                panic!(
                    "{context}: {} flows of {}; queue {:?}\n{}",
                    flows_by_key(&kinesis).values().sum::<u64>(),
                    keys as u32 / PORTS * per_object,
                    moto.queued(&queue),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // One more flush: anything counted twice would show now.
        std::thread::sleep(Duration::from_millis(1500));
        if round == 0 {
            // The same object written again (same ETag): its notification is deleted
            // without a reading.
            moto.put_object("flow-logs", "big-0.log.gz", first_object.clone());
            wait_empty(&moto, &queue);
            std::thread::sleep(Duration::from_millis(1500));
        }
        signal(&b, "TERM");
        let output = b.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let sums = flows_by_key(&kinesis);
        let wrong = sums
            .values()
            .filter(|&&f| f != u64::from(per_object / PORTS))
            .count();
        assert!(
            sums.len() == keys && wrong == 0,
            "{context}: {} keys of {keys}, {wrong} not counted exactly once per flow",
            sums.len()
        );
        let source = summary(&stderr, "s3");
        let druid = summary(&stderr, "druid");
        if round == 0 {
            assert!(
                counter(druid, "druid_publications_settled_total") >= 1,
                "host-b completed host-a's publication: {druid}"
            );
            assert_eq!(
                counter(source, "s3_objects_already_read_total"),
                1,
                "{source}"
            );
        }
        eprintln!(
            "aws_s3 into druid, {context}: {at_death} of {per_object} flows out when host-a died; all, once, {:?} later; host-b skipped {} lines host-a had published",
            started.elapsed(),
            counter(druid, "druid_republished_lines_skipped_total")
        );
        let claims = dynamo.leases("s3-claims");
        assert!(
            claims
                .iter()
                .all(|c| c.checkpoint == "SHARD_END" && c.owner.is_none() && !c.publishing),
            "{claims:?}"
        );
    }
}

#[test]
fn two_hosts_backfilling_one_prefix_read_each_object_once_into_druid_rows() {
    let moto = Moto::start();
    let dynamo = Dynalite::start();
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("rollups", 1);
    moto.bucket_notifying_queue("flow-logs", "unused");
    let objects = 6;
    let per_object = 20_000;
    for object in 0..objects {
        let lines = keyed_lines(object, per_object);
        moto.put_object("flow-logs", &format!("logs/{object}.log"), gzip(&lines));
    }
    let backfill = "[sources.s3.backfill]\nbucket = \"flow-logs\"\nprefix = \"logs/\"\n";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hosts: Vec<_> = [("host-a", dir_a.path()), ("host-b", dir_b.path())]
        .into_iter()
        .map(|(name, dir)| {
            claiming_host(name, (&moto, backfill), &dynamo, &kinesis, (dir, 50), None)
        })
        .collect();
    let mut read = Vec::new();
    for host in hosts {
        let output = host.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        read.push(counter(summary(&stderr, "s3"), "s3_objects_total"));
    }
    // Each object read by one of them (SIGTERM-free: a backfill ends by itself).
    assert_eq!(
        read.iter().sum::<u64>(),
        u64::from(objects),
        "objects read per host: {read:?}"
    );
    let sums = flows_by_key(&kinesis);
    assert_eq!(sums.len(), (objects * PORTS) as usize);
    assert!(
        sums.values().all(|&f| f == u64::from(per_object / PORTS)),
        "every flow once"
    );
    let claims = dynamo.leases("s3-claims");
    assert_eq!(claims.len(), objects as usize);
    assert!(
        claims
            .iter()
            .all(|c| c.checkpoint == "SHARD_END" && c.owner.is_none())
    );
    eprintln!("aws_s3 backfill by two hosts: objects read per host {read:?}");
}
