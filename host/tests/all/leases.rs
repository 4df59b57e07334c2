//! A fleet of hosts sharing one stream through a DynamoDB lease table: a real local
//! DynamoDB (npm `dynalite`) and a real local Kinesis, both started here on 127.0.0.1,
//! and real `flowenrich` processes.

use crate::kinesis::KinesisLocal;
use crate::{counter, signal, start_run, summary};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynalite::Dynalite;
pub use flowenrich_test_support::dynalite;

pub const TABLE: &str = "flowenrich-flows";
const LEASE_MS: u64 = 3000;
const POLL_MS: u64 = 500;

/// One host: a `flowenrich` process reading the stream under leases into `out.txt`.
struct Host {
    name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// When the current process started.
    started: Instant,
}

impl Host {
    fn start(name: &str, kinesis: &KinesisLocal, dynamo: &Dynalite) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let child = start(name, dir.path(), kinesis, dynamo);
        Host {
            name: name.to_string(),
            dir,
            child: Some(child),
            started: Instant::now(),
        }
    }

    /// A new process of the same host (a rolling deploy), appending to the same output.
    fn restart(&mut self, kinesis: &KinesisLocal, dynamo: &Dynalite) {
        self.child = Some(start(&self.name, self.dir.path(), kinesis, dynamo));
        self.started = Instant::now();
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.txt")
    }

    /// Stops the process with `how` (`TERM`, `KILL`); its stderr.
    fn stop(&mut self, how: &str) -> String {
        let child = self.child.take().expect("running");
        signal(&child, how);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if how == "TERM" {
            assert!(output.status.success(), "{}: {stderr}", self.name);
        }
        stderr
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[sources.flows]` of host `name`: the stream `flows` read under leases (lease
/// period [`LEASE_MS`], scans every 100 ms, checkpoints every 200 ms), polled every
/// `poll_ms`, `batch_lines` lines per batch.
pub fn source(
    name: &str,
    kinesis: &KinesisLocal,
    dynamo: &Dynalite,
    poll_ms: u64,
    batch_lines: usize,
) -> String {
    format!(
        r#"
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "flows"
endpoint = "{kinesis}"
region = "us-east-1"
record_format = "text"
batch_lines = {batch_lines}
poll_interval_ms = {poll_ms}

[sources.flows.leases]
table_name = "{TABLE}"
endpoint = "{dynamo}"
worker_id = "{name}"
lease_duration_ms = {LEASE_MS}
scan_interval_ms = 100
checkpoint_interval_ms = 200
"#,
        kinesis = kinesis.endpoint,
        dynamo = dynamo.endpoint,
    )
}

fn start(name: &str, dir: &Path, kinesis: &KinesisLocal, dynamo: &Dynalite) -> Child {
    let pipeline = source(name, kinesis, dynamo, POLL_MS, 1000)
        + r#"
[sinks.out]
type = "file"
inputs = ["flows"]
path = "out.txt"
append = true
"#;
    start_run(dir, &pipeline, KinesisLocal::aws_env)
}

/// Record numbers in the order a host's output holds them.
fn delivered(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("rec ")?.split(' ').next()?.parse().ok())
        .collect()
}

/// Waits up to a minute for `done`, checking every 50 ms.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Owners of the leases of open shards (not read to their end).
pub fn owners(dynamo: &Dynalite) -> BTreeMap<String, Option<String>> {
    dynamo
        .leases(TABLE)
        .into_iter()
        .filter(|l| l.checkpoint != "SHARD_END")
        .map(|l| (l.shard, l.owner))
        .collect()
}

#[test]
fn a_fleet_of_hosts_shares_a_stream_through_leases() {
    let kinesis = Arc::new(KinesisLocal::start());
    let dynamo = Dynalite::start();
    kinesis.create_stream("flows", 4);

    // A writer puts numbered records under 24 keys until told to stop, and remembers
    // each record's key and shard.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<(u64, String, String)>>> = Arc::default();
    let writer = {
        let (kinesis, stop, written) = (kinesis.clone(), stop_writing.clone(), written.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{}", n % 24);
                let (shard, _) =
                    kinesis.put_bytes("flows", &key, format!("rec {n} {key}\n").into_bytes());
                written.lock().unwrap().push((n, key, shard));
                n += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let mut hosts = vec![Host::start("host-a", &kinesis, &dynamo)];
    // Every 20 ms, a look at every host's output: when each record first appeared
    // anywhere in the fleet.
    // Hosts b and c have no output yet.
    let outputs: Vec<PathBuf> = vec![hosts[0].out(), PathBuf::new(), PathBuf::new()];
    let outputs = Arc::new(Mutex::new(outputs));
    // (record, host) -> the look it was first seen at; `looks` counts the looks.
    let first_seen: Arc<Mutex<HashMap<(u64, usize), u64>>> = Arc::default();
    let looks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (outputs, first_seen, stop, looks) = (
            outputs.clone(),
            first_seen.clone(),
            stop_watching.clone(),
            looks.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let look = looks.load(Ordering::Relaxed);
                let paths = outputs.lock().unwrap().clone();
                let mut seen = first_seen.lock().unwrap();
                for (host, path) in paths.iter().enumerate() {
                    if path.as_os_str().is_empty() {
                        continue;
                    }
                    for n in delivered(path) {
                        seen.entry((n, host)).or_insert(look);
                    }
                }
                drop(seen);
                looks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let count = |hosts: &[Host]| -> usize {
        hosts
            .iter()
            .map(|h| delivered(&h.out()).into_iter().collect::<BTreeSet<u64>>())
            .fold(BTreeSet::new(), |all, h| &all | &h)
            .len()
    };
    wait_until("host-a reads", || count(&hosts) >= 50);
    assert!(
        owners(&dynamo)
            .values()
            .all(|o| o.as_deref() == Some("host-a"))
    );

    // Two hosts join: the shards spread over the three without a pause in delivery.
    let joined = Instant::now();
    hosts.push(Host::start("host-b", &kinesis, &dynamo));
    hosts.push(Host::start("host-c", &kinesis, &dynamo));
    *outputs.lock().unwrap() = hosts.iter().map(Host::out).collect();
    wait_until("every host holds a lease", || {
        let owners = owners(&dynamo);
        ["host-a", "host-b", "host-c"]
            .iter()
            .all(|h| owners.values().any(|o| o.as_deref() == Some(*h)))
    });
    println!(
        "two hosts joined: every host held a lease {} ms after they were started",
        joined.elapsed().as_millis()
    );

    // A rolling deploy of host-c: SIGTERM hands its leases back with their last
    // checkpoints; the new process joins again.
    let before = count(&hosts);
    wait_until("more records", || count(&hosts) >= before + 30);
    hosts[2].stop("TERM");
    assert!(
        owners(&dynamo)
            .values()
            .all(|o| o.as_deref() != Some("host-c")),
        "SIGTERM releases every lease"
    );
    let terminated: BTreeSet<u64> = delivered(&hosts[2].out()).into_iter().collect();
    hosts[2].restart(&kinesis, &dynamo);
    // Joining alone (the other two hold 2 leases each), it still gets its share.
    wait_until("the restarted host-c holds a lease", || {
        owners(&dynamo)
            .values()
            .any(|o| o.as_deref() == Some("host-c"))
    });

    // kill -9 of a host holding leases: the others take them over within the lease
    // period plus one poll interval.
    wait_until("host-b holds a lease", || {
        owners(&dynamo)
            .values()
            .any(|o| o.as_deref() == Some("host-b"))
    });
    let before = count(&hosts);
    wait_until("more records", || count(&hosts) >= before + 30);
    let killed_shards: BTreeSet<String> = owners(&dynamo)
        .into_iter()
        .filter(|(_, o)| o.as_deref() == Some("host-b"))
        .map(|(shard, _)| shard)
        .collect();
    hosts[1].stop("KILL");
    let killed_at = Instant::now();
    let killed_look = looks.load(Ordering::Relaxed);
    let killed: BTreeSet<u64> = delivered(&hosts[1].out()).into_iter().collect();
    wait_until("host-b's leases are taken over", || {
        owners(&dynamo)
            .values()
            .all(|o| o.is_some() && o.as_deref() != Some("host-b"))
    });
    let takeover = killed_at.elapsed();
    let bound = Duration::from_millis(LEASE_MS + POLL_MS);
    println!(
        "takeover after kill -9: {} ms (lease period {LEASE_MS} ms + poll interval {POLL_MS} ms = {} ms)",
        takeover.as_millis(),
        bound.as_millis()
    );
    // The design bound is the lease period plus two scan intervals (100 ms each
    // here); 300 ms more for this test's own polling of the table on a loaded machine.
    assert!(
        takeover <= bound + Duration::from_millis(300),
        "takeover took {takeover:?}"
    );

    // Reshard while the two remaining hosts read: children after their parents.
    kinesis.update_shard_count("flows", 8);
    let before = count(&hosts);
    wait_until("records after the reshard", || {
        count(&hosts) >= before + 100
    });
    stop_writing.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = written.lock().unwrap().clone();
    wait_until("every record is delivered", || {
        count(&hosts) >= written.len()
    });
    // What each host asked of the lease table, per second of its run.
    for i in [0, 2] {
        let started = hosts[i].started;
        let stderr = hosts[i].stop("TERM");
        let line = summary(&stderr, "flows");
        let secs = started.elapsed().as_secs_f64();
        let per_sec = |name| counter(line, name) as f64 / secs;
        println!(
            "{}: {:.1} renewals/s, {:.1} checkpoint writes/s, {:.1} scans/s over {secs:.1} s ({} leases taken, {} handed in, {} handed out, {} asked for)",
            hosts[i].name,
            per_sec("lease_renewals_total"),
            per_sec("lease_checkpoints_total"),
            per_sec("lease_scans_total"),
            counter(line, "lease_taken_total"),
            counter(line, "lease_handed_in_total"),
            counter(line, "lease_handed_out_total"),
            counter(line, "lease_requested_total"),
        );
    }
    stop_watching.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        dynamo.leases(TABLE).iter().all(|l| l.owner.is_none()),
        "{:?}",
        dynamo.leases(TABLE)
    );

    // Every record was delivered. Only the killed host's unacknowledged tail was
    // delivered twice; nothing the terminated process delivered came again.
    let mut deliveries: HashMap<u64, Vec<&str>> = HashMap::new();
    for (host, records) in [
        ("a", delivered(&hosts[0].out())),
        ("b", delivered(&hosts[1].out())),
        ("c", delivered(&hosts[2].out())),
    ] {
        for n in records {
            deliveries.entry(n).or_default().push(host);
        }
    }
    // A record may come out twice only if the killed host delivered it from a shard
    // it held when it died, and the other copy came out after the kill.
    let first_seen = first_seen.lock().unwrap();
    let mut twice = 0;
    for (n, _, shard) in &written {
        let by = deliveries
            .get(n)
            .unwrap_or_else(|| panic!("record {n} lost"));
        if by.len() > 1 {
            twice += 1;
            let other = if by[0] == "b" { by[1] } else { by[0] };
            let other_host = ["a", "b", "c"].iter().position(|h| *h == other).unwrap();
            assert!(
                by.len() == 2
                    && by.contains(&"b")
                    && killed.contains(n)
                    && killed_shards.contains(shard)
                    && !terminated.contains(n)
                    && first_seen[&(*n, other_host)] >= killed_look,
                "record {n} of {shard} delivered by {by:?}"
            );
        }
    }
    println!(
        "{} records, {twice} delivered twice (all from the killed host's unacknowledged tail)",
        written.len()
    );
    // Per key, records first came out in the order they were written, across hosts:
    // through handoffs (the old owner's reads are acknowledged before the new owner
    // starts), the kill, and the reshard (a child shard is read only after its parent
    // was read to its end, by whichever host).
    let first_look = |n: u64| {
        (0..3)
            .filter_map(|h| first_seen.get(&(n, h)))
            .min()
            .copied()
    };
    let mut last: HashMap<&str, (u64, u64)> = HashMap::new();
    for (n, key, _) in &written {
        let look = first_look(*n).expect("seen");
        if let Some(&(before, before_look)) = last.get(key.as_str()) {
            assert!(
                look >= before_look,
                "record {n} of {key} came out before record {before}"
            );
        }
        last.insert(key, (*n, look));
    }
    // Within each host's output, the same order record by record.
    let key_of: HashMap<u64, &str> = written.iter().map(|(n, k, _)| (*n, k.as_str())).collect();
    for host in &hosts {
        let records = delivered(&host.out());
        let mut last: HashMap<&str, u64> = HashMap::new();
        let mut seen = BTreeSet::new();
        for n in records {
            // A re-delivery after the kill may go back; first deliveries go forward.
            if !seen.insert(n) {
                continue;
            }
            let key = key_of[&n];
            if let Some(&before) = last.get(key) {
                assert!(
                    n > before || killed.contains(&n),
                    "{}: record {n} of {key} after {before}",
                    host.name
                );
            }
            last.insert(key, n);
        }
    }
}

#[test]
fn a_host_blocked_by_backpressure_keeps_its_leases() {
    let kinesis = Arc::new(KinesisLocal::start());
    let dynamo = Dynalite::start();
    kinesis.create_stream("flows", 2);
    // The sink's endpoint is not up yet: the sink retries, its queue fills, and the
    // source blocks in sending for longer than the lease period.
    let later = crate::kinesis::Later::with_stream("out", 1);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = source("host-a", &kinesis, &dynamo, 200, 1)
        + &format!(
            r#"
[sinks.out]
type = "aws_kinesis_streams"
inputs = ["flows"]
stream_name = "out"
endpoint = "{}"
region = "us-east-1"
"#,
            later.endpoint()
        );
    let mut child = start_run(dir.path(), &pipeline, KinesisLocal::aws_env);
    let records: Vec<(String, Vec<u8>)> = (0..100)
        .map(|n| (format!("key-{n}"), format!("rec {n}\n").into_bytes()))
        .collect();
    kinesis.put_many("flows", &records);
    wait_until("host-a holds both leases", || {
        let owners = owners(&dynamo);
        owners.len() == 2 && owners.values().all(|o| o.as_deref() == Some("host-a"))
    });
    // 100 one-line batches cannot all be queued: the source is blocked now. Over two
    // lease periods its leases must stay its own, renewed all along.
    std::thread::sleep(Duration::from_millis(500));
    let counters = |dynamo: &Dynalite| -> Vec<u64> {
        dynamo.leases(TABLE).iter().map(|l| l.counter).collect()
    };
    let mut before = counters(&dynamo);
    let blocked_until = Instant::now() + Duration::from_millis(2 * LEASE_MS);
    while Instant::now() < blocked_until {
        std::thread::sleep(Duration::from_millis(LEASE_MS / 2));
        let now = counters(&dynamo);
        assert!(
            now.iter().zip(&before).all(|(now, before)| now > before),
            "leases renewed while blocked: {before:?} then {now:?}"
        );
        assert!(
            owners(&dynamo)
                .values()
                .all(|o| o.as_deref() == Some("host-a"))
        );
        before = now;
    }
    // The sink's endpoint comes up: everything flows, once.
    let late = later.start();
    wait_until("every record is in the sink's stream", || {
        late.read_all_text("out").len() >= records.len()
    });
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let mut got: Vec<String> = late.read_all_text("out");
    got.sort();
    let mut want: Vec<String> = (0..100).map(|n| format!("rec {n}")).collect();
    want.sort();
    assert_eq!(got, want);
}
