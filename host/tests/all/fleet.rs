//! Exactly once into Druid for a fleet: two hosts share the stream through a lease table
//! (real local DynamoDB and Kinesis), roll flows up into one output stream, and one of
//! them dies (a failpoint at every step of a publication, and kill -9) in the middle of
//! publishing the shard it holds; the other takes the shard over, settles what was left
//! half published, and every flow is counted once. A DynamoDB outage costs nothing
//! either.

use crate::delivery::put_flows;
use crate::exactly_once::{assert_exact, flows_by_port, stream_rows};
use crate::kinesis::KinesisLocal;
use crate::leases::dynalite::Dynalite;
use crate::leases::{TABLE, owners, source};
use crate::{counter, exit_within, signal, start_run, summary};
use std::process::Child;
use std::time::{Duration, Instant};

/// Host `name`: the shared stream `flows` → `wasm` → `druid` rows (one per `srcport`)
/// on the stream `rollups`, flushed every second.
fn host(
    name: &str,
    dir: &std::path::Path,
    kinesis: &KinesisLocal,
    dynamo: &Dynalite,
    failpoint: Option<&str>,
) -> Child {
    let pipeline = source(name, kinesis, dynamo, 200, 50)
        + &format!(
            r#"
[transforms.t]
type = "wasm"
inputs = ["flows"]

[sinks.druid]
type = "druid"
inputs = ["t"]
dimensions = ["srcport"]
flush_interval_secs = 1
workers = 2
stream_name = "rollups"
endpoint = "{endpoint}"
region = "us-east-1"
"#,
            endpoint = kinesis.endpoint
        );
    start_run(dir, &pipeline, |c| {
        KinesisLocal::aws_env(c);
        if let Some(failpoint) = failpoint {
            c.env("FLOWENRICH_FAILPOINTS", format!("{failpoint}=exit"));
        }
    })
}

/// Waits up to `secs` for `done`.
fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn holds(dynamo: &Dynalite, name: &str) -> bool {
    owners(dynamo).values().any(|o| o.as_deref() == Some(name))
}

#[test]
fn a_host_that_dies_mid_publication_leaves_every_flow_counted_once() {
    let kinesis = KinesisLocal::start();
    let dynamo = Dynalite::start();
    kinesis.create_stream("flows", 2);
    kinesis.create_stream("rollups", 2);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = host("host-b", dir_b.path(), &kinesis, &dynamo, None);
    wait("host-b holds the leases", 60, || {
        owners(&dynamo).len() == 2 && owners(&dynamo).values().all(|o| o.is_some())
    });
    // 1,200 flows a round: about 600 rows per shard's publication, two PutRecords
    // requests, so a crash after the first leaves one half written.
    let per_round = 1200;
    let mut n = 0;
    for failpoint in [
        Some("druid.after_begin"),
        Some("kinesis_sink.after_request"),
        Some("druid.after_write"),
        Some("druid.after_end"),
        // A real kill -9 as soon as host-a's rows start to arrive.
        None,
    ] {
        let context = failpoint.unwrap_or("kill -9");
        // host-a joins and is handed one of host-b's two leases (a graceful handoff).
        let mut a = host("host-a", dir_a.path(), &kinesis, &dynamo, failpoint);
        wait("host-a holds a lease", 60, || holds(&dynamo, "host-a"));
        let before = flows_by_port(stream_rows(&kinesis)).len();
        put_flows(&kinesis, "flows", n + 1..=n + per_round);
        n += per_round;
        match failpoint {
            Some(_) => {
                let status = exit_within(&mut a, 60, &format!("{context} was never reached"));
                assert_eq!(status.code(), Some(137), "{context}: died at the failpoint");
            }
            None => {
                wait("rows arrive", 60, || {
                    flows_by_port(stream_rows(&kinesis)).len() > before
                });
                signal(&a, "KILL");
                let _ = a.wait();
            }
        }
        // host-b takes the shard over once its lease runs out, completes what host-a
        // left begun, and reads on from host-a's last checkpoint.
        let started = Instant::now();
        wait("every flow is in the rows", 90, || {
            flows_by_port(stream_rows(&kinesis)).len() >= n as usize
        });
        eprintln!(
            "{context}: every flow in the rows {:?} after host-a died",
            started.elapsed()
        );
        // host-a may have written every row before it died: what host-b does once it
        // has the shard (settle, skip what is published) must not add any.
        wait(
            "host-b holds every lease and nothing is half published",
            90,
            || {
                let leases = dynamo.leases(TABLE);
                leases
                    .iter()
                    .all(|l| l.owner.as_deref() == Some("host-b") && !l.publishing)
            },
        );
        // One more flush: anything counted twice would show now.
        std::thread::sleep(Duration::from_millis(1500));
        assert_exact(stream_rows(&kinesis), n, context);
    }
    signal(&b, "TERM");
    let output = b.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let druid = summary(&stderr, "druid");
    assert!(
        counter(druid, "druid_publications_settled_total") >= 3,
        "host-b completed what host-a left begun: {druid}"
    );
    assert!(
        dynamo.leases(TABLE).iter().all(|l| l.owner.is_none()),
        "SIGTERM released every lease"
    );
}

#[test]
fn a_dynamodb_outage_loses_nothing_and_counts_nothing_twice() {
    let kinesis = KinesisLocal::start();
    let tables = tempfile::tempdir().unwrap();
    let mut dynamo = Dynalite::start_in(Some(tables.path()));
    kinesis.create_stream("flows", 2);
    kinesis.create_stream("rollups", 2);
    let dir = tempfile::tempdir().unwrap();
    let a = host("host-a", dir.path(), &kinesis, &dynamo, None);
    wait("host-a holds the leases", 60, || {
        owners(&dynamo).values().filter(|o| o.is_some()).count() == 2
    });
    put_flows(&kinesis, "flows", 1..=600);
    wait("the first flows are in the rows", 60, || {
        flows_by_port(stream_rows(&kinesis)).len() >= 600
    });
    // DynamoDB goes away for longer than a lease period, while flows keep coming: the
    // host can neither renew, checkpoint nor log publications, and stops reading.
    dynamo.stop();
    put_flows(&kinesis, "flows", 601..=1200);
    std::thread::sleep(Duration::from_secs(8));
    dynamo.resume();
    let resumed = Instant::now();
    wait("every flow is in the rows", 90, || {
        flows_by_port(stream_rows(&kinesis)).len() >= 1200
    });
    eprintln!(
        "DynamoDB outage: every flow in the rows {:?} after it came back",
        resumed.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_exact(stream_rows(&kinesis), 1200, "a DynamoDB outage");
    signal(&a, "TERM");
    let output = a.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let source = summary(&stderr, "flows");
    assert!(counter(source, "lease_lost_total") >= 1, "{source}");
}
