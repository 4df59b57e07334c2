//! Acknowledgement has a failure path: a sink that cannot write, a panic, a reader that
//! went away or a source that cannot start stops the run with exit 1 naming the
//! component, and no checkpoint passes what was not written. Against the real local
//! Kinesis.

use crate::kinesis::{KinesisLocal, free_port};
use crate::{http, rows_after, signal, sorted_ports, start_run};
use std::time::{Duration, Instant};

/// One-line records on `stream`, one per `srcport` in `ports`, spread over its shards.
pub fn put_flows(kinesis: &KinesisLocal, stream: &str, ports: std::ops::RangeInclusive<u32>) {
    let records: Vec<(String, Vec<u8>)> = ports
        .map(|port| {
            (
                format!("k{port}"),
                format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK")
                    .into_bytes(),
            )
        })
        .collect();
    kinesis.put_many(stream, &records);
}

/// A Kinesis source `flows` on `stream`, the `wasm` transform `t`, and `sinks`.
fn pipeline(kinesis: &KinesisLocal, stream: &str, sinks: &str) -> String {
    format!(
        r#"
drain_timeout_secs = 2

[sources.flows]
type = "aws_kinesis_streams"
stream_name = "{stream}"
endpoint = "{endpoint}"
region = "us-east-1"
checkpoints = "cp.json"

[transforms.t]
type = "wasm"
inputs = ["flows"]
{sinks}"#,
        endpoint = kinesis.endpoint
    )
}

/// Waits (up to a minute) until the admin endpoint at `api` says `sink` is retrying.
fn wait_until_retrying(api: &str, sink: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(std::net::TcpStream::connect(api).is_ok()
        && http(api, "GET", "/health").contains(&format!("\"retrying\":[\"{sink}\"]")))
    {
        assert!(Instant::now() < deadline, "{sink} never reported retrying");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` to exit within `limit`; its status code and stderr.
fn exit_within(child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sink_on_a_full_disk_acknowledges_nothing_and_a_restart_delivers_everything() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    put_flows(&kinesis, "flows", 1..=600);
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    // Every write to /dev/full fails with ENOSPC: transient, so the sink retries.
    let full = pipeline(
        &kinesis,
        "flows",
        "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"/dev/full\"\n",
    )
    .replace(
        "[sources.flows]",
        &format!("[api]\naddress = \"{api}\"\n\n[sources.flows]"),
    );
    let child = start_run(dir.path(), &full, KinesisLocal::aws_env);
    // While it retries, /health says so.
    wait_until_retrying(&api, "out");
    // SIGTERM during the retries: out within the drain deadline (2 s) and the time a
    // retry pause takes to notice it, exit 1 naming the sink and the cause.
    signal(&child, "TERM");
    let signalled = Instant::now();
    let (code, stderr) = exit_within(child, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("error: sinks.out failed"), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the cause: {stderr}"
    );
    // No checkpoint moved: both shards are read again from their start.
    let checkpoints = std::fs::read_to_string(dir.path().join("cp.json")).unwrap_or_default();
    assert!(!checkpoints.contains("\"sequence\""), "{checkpoints}");
    // Restarted with a working sink, all 600 arrive.
    let good = pipeline(
        &kinesis,
        "flows",
        "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n",
    );
    let restarted = Instant::now();
    let child = start_run(dir.path(), &good, KinesisLocal::aws_env);
    rows_after(&dir.path().join("out.ndjson"), 1);
    eprintln!(
        "full disk: first record {:?} after the restart",
        restarted.elapsed()
    );
    let rows = rows_after(&dir.path().join("out.ndjson"), 600);
    signal(&child, "TERM");
    let (code, stderr) = exit_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let mut ports = sorted_ports(&rows);
    ports.dedup();
    assert_eq!(ports, (1..=600).collect::<Vec<u64>>());
}

#[test]
fn a_permanent_sink_error_stops_the_run_and_its_records_are_read_again() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    put_flows(&kinesis, "flows", 1..=50);
    let dir = tempfile::tempdir().unwrap();
    // The output stream does not exist: ResourceNotFoundException is not retried.
    let sink = format!(
        "[sinks.stream]\ntype = \"aws_kinesis_streams\"\ninputs = [\"t\"]\nstream_name = \"missing\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
        kinesis.endpoint
    );
    let child = start_run(
        dir.path(),
        &pipeline(&kinesis, "flows", &sink),
        KinesisLocal::aws_env,
    );
    let (code, stderr) = exit_within(child, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: sinks.stream failed"), "{stderr}");
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");
    // Once the stream exists, a restart delivers every record: none was checkpointed.
    kinesis.create_stream("missing", 1);
    let restarted = Instant::now();
    let child = start_run(
        dir.path(),
        &pipeline(&kinesis, "flows", &sink),
        KinesisLocal::aws_env,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    while kinesis.read_all_text("missing").len() < 50 {
        if first.is_none() && !kinesis.read_all_text("missing").is_empty() {
            first = Some(restarted.elapsed());
        }
        assert!(Instant::now() < deadline, "not all 50 records came");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "missing stream: first record {:?} after the restart",
        first.unwrap_or(restarted.elapsed())
    );
    signal(&child, "TERM");
    let (code, stderr) = exit_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_panicking_sink_or_transform_stops_the_run_without_acknowledging() {
    for (failpoint, component) in [
        ("file_sink.before_write", "sinks.out"),
        ("wasm_transform.before_submit", "transforms.t"),
    ] {
        let kinesis = KinesisLocal::start();
        kinesis.create_stream("flows", 1);
        put_flows(&kinesis, "flows", 1..=20);
        let dir = tempfile::tempdir().unwrap();
        let sinks = "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n";
        let child = start_run(dir.path(), &pipeline(&kinesis, "flows", sinks), |c| {
            KinesisLocal::aws_env(c);
            c.env("FLOWENRICH_FAILPOINTS", format!("{failpoint}=panic"));
        });
        let (code, stderr) = exit_within(child, Duration::from_secs(60));
        assert_eq!(code, Some(1), "{failpoint}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {component} failed: panicked")),
            "{failpoint}: {stderr}"
        );
        let checkpoints = std::fs::read_to_string(dir.path().join("cp.json")).unwrap_or_default();
        assert!(!checkpoints.contains("\"sequence\""), "{checkpoints}");
        // Without the failpoint, everything is delivered.
        let restarted = Instant::now();
        let child = start_run(
            dir.path(),
            &pipeline(&kinesis, "flows", sinks),
            KinesisLocal::aws_env,
        );
        rows_after(&dir.path().join("out.ndjson"), 1);
        eprintln!(
            "{failpoint} panic: first record {:?} after the restart",
            restarted.elapsed()
        );
        let rows = rows_after(&dir.path().join("out.ndjson"), 20);
        signal(&child, "TERM");
        let (code, stderr) = exit_within(child, Duration::from_secs(30));
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(sorted_ports(&rows), (1..=20).collect::<Vec<u64>>());
    }
}

#[test]
fn a_reader_gone_from_stdout_stops_the_run_naming_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..20_000)
        .map(|i| {
            format!(
                "2 1 eni-1 10.0.0.1 10.0.0.2 {} 443 6 1 10 200 260 ACCEPT OK\n",
                i % 60_000 + 1
            )
        })
        .collect();
    std::fs::write(dir.path().join("flows.log"), lines).unwrap();
    let mut child = start_run(
        dir.path(),
        "[sources.in]\ntype = \"file\"\npath = \"flows.log\"\n\n[transforms.t]\ntype = \"wasm\"\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"t\"]\n",
        |c| {
            c.current_dir(dir.path());
        },
    );
    // The reader goes away before reading anything.
    drop(child.stdout.take());
    let (code, stderr) = exit_within(child, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: sinks.out failed"), "{stderr}");
    assert!(stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn a_source_that_cannot_start_fails_the_run() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cp.json"), "not a checkpoint file").unwrap();
    let sinks = "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n";
    let child = start_run(
        dir.path(),
        &pipeline(&kinesis, "flows", sinks),
        KinesisLocal::aws_env,
    );
    let (code, stderr) = exit_within(child, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: sources.flows failed: cannot open the checkpoint store"),
        "{stderr}"
    );
}

/// 1000 MiB of zeros, gzipped (about 1 MB: one Kinesis record).
fn bomb() -> Vec<u8> {
    let output = std::process::Command::new("sh")
        .args(["-c", "head -c 1000M /dev/zero | gzip -9"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(output.stdout.len() < 1 << 20, "{}", output.stdout.len());
    output.stdout
}

/// The `peak_rss_mib` a finished run printed.
fn peak_rss_mib(stderr: &str) -> u64 {
    crate::counter(crate::summary(stderr, "process"), "peak_rss_mib")
}

#[test]
fn a_decompression_bomb_on_every_shard_is_dead_lettered_in_bounded_memory() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 4);
    let bomb = bomb();
    let line = |port: u32| {
        format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK").into_bytes()
    };
    // On every shard: a good record, a bomb, a good record (explicit hash keys put one
    // of each on each of the 4 shards).
    let mut port = 0;
    for shard in 0..4u128 {
        let hash = (shard * (u128::MAX / 4) + 1).to_string();
        for data in [None, Some(bomb.clone()), None] {
            let data = data.unwrap_or_else(|| {
                port += 1;
                line(port)
            });
            kinesis.put_bytes_to_hash("flows", &hash, data);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sinks = "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n\n[sinks.dead]\ntype = \"file\"\ninputs = [\"flows.dead_letter\"]\npath = \"dead.ndjson\"\n";
    let child = start_run(
        dir.path(),
        &pipeline(&kinesis, "flows", sinks),
        KinesisLocal::aws_env,
    );
    let rows = rows_after(&dir.path().join("out.ndjson"), 8);
    let dead = rows_after(&dir.path().join("dead.ndjson"), 4);
    signal(&child, "TERM");
    let (code, stderr) = exit_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sorted_ports(&rows), (1..=8).collect::<Vec<u64>>());
    assert_eq!(dead.len(), 4);
    for letter in &dead {
        assert!(
            letter["error"]
                .as_str()
                .unwrap()
                .contains("inflates to more than max_record_bytes"),
            "{letter}"
        );
    }
    let peak = peak_rss_mib(&stderr);
    assert!(peak < 256, "peak RSS {peak} MiB");
    assert!(
        crate::summary(&stderr, "flows").contains("record_too_large 4"),
        "{stderr}"
    );
}

/// Records that inflate to about 10 MiB each (100,000 flows, ports 1..=100), two on each of 4
/// shards, through a rollup into files with `max_in_flight_mib` set: the flows counted,
/// how often the source waited on its budget, and the peak RSS.
fn large_records_through(max_in_flight_mib: usize) -> (u64, u64, u64) {
    use std::io::Write as _;
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 4);
    // A CloudWatch Logs envelope, as a subscription writes it.
    let events: Vec<serde_json::Value> = (0..100_000u32)
        .map(|n| {
            serde_json::json!({
                "id": n.to_string(),
                "timestamp": 0,
                "message": format!(
                    "2 1 eni-1 10.0.0.1 10.0.0.2 {} 443 6 1 10 200 260 ACCEPT OK",
                    n % 100 + 1
                ),
            })
        })
        .collect();
    let text = serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": "1",
        "logGroup": "flows",
        "logStream": "eni-1",
        "subscriptionFilters": ["all"],
        "logEvents": events,
    })
    .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    let record = gz.finish().unwrap();
    for shard in 0..4u128 {
        let hash = (shard * (u128::MAX / 4) + 1).to_string();
        for _ in 0..2 {
            kinesis.put_bytes_to_hash("flows", &hash, record.clone());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sinks = "[sinks.druid]\ntype = \"druid\"\ninputs = [\"t\"]\ndimensions = [\"srcport\"]\nflush_interval_secs = 1\npath = \"rollups\"\nappend = true\n";
    let pipeline = pipeline(&kinesis, "flows", sinks).replace(
        "checkpoints = \"cp.json\"",
        &format!("checkpoints = \"cp.json\"\nmax_in_flight_mib = {max_in_flight_mib}"),
    );
    // A slow sink (each batch held 1.5 s before its rollup), so that batches pile up
    // downstream and the budget is what holds the source back.
    let child = start_run(dir.path(), &pipeline, |c| {
        KinesisLocal::aws_env(c);
        c.env("FLOWENRICH_FAILPOINTS", "druid.before_rollup=sleep1500");
    });
    let flows = || -> u64 {
        crate::rollup_rows_so_far(&dir.path().join("rollups"))
            .iter()
            .map(|row| row["flows"].as_u64().unwrap())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while flows() < 800_000 {
        if Instant::now() > deadline {
            let got = flows();
            signal(&child, "TERM");
            let (_, stderr) = exit_within(child, Duration::from_secs(30));
            panic!("{got} of 800000 flows: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, "TERM");
    let (code, stderr) = exit_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let waits = crate::summary(&stderr, "flows")
        .split_whitespace()
        .skip_while(|w| *w != "in_flight_budget_waits_total")
        .nth(1)
        .map_or(0, |n| n.parse().unwrap());
    (flows(), waits, peak_rss_mib(&stderr))
}

#[test]
fn large_records_on_every_shard_stay_within_the_in_flight_budget() {
    let (flows, waits, peak) = large_records_through(16);
    println!("8 records of 10 MiB inflated, budget 16 MiB: {waits} waits, peak RSS {peak} MiB");
    assert_eq!(flows, 800_000);
    assert!(waits >= 1, "the source waited on its budget");
    assert!(peak < 256, "peak RSS {peak} MiB");
}

#[test]
fn a_ten_megabyte_line_is_dead_lettered_with_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        |port: u32| format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK\n");
    let text = format!("{}{}\n{}", good(1), "z".repeat(10_000_000), good(2));
    std::fs::write(dir.path().join("flows.log"), text).unwrap();
    let pipeline = "[sources.in]\ntype = \"file\"\npath = \"flows.log\"\n\n[transforms.t]\ntype = \"wasm\"\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n\n[sinks.dead]\ntype = \"file\"\ninputs = [\"in.dead_letter\"]\npath = \"dead.ndjson\"\n";
    let child = start_run(dir.path(), pipeline, |_| {});
    let (code, stderr) = exit_within(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let rows = crate::read_ndjson(&dir.path().join("out.ndjson"));
    assert_eq!(sorted_ports(&rows), vec![1, 2]);
    let dead = crate::read_ndjson(&dir.path().join("dead.ndjson"));
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("line of 10000001 bytes is longer than max_line_bytes (65536)"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["line_prefix"].as_str().unwrap(), "z".repeat(1024));
    let peak = peak_rss_mib(&stderr);
    // The same run without the long line: the line may not add its size (or near it).
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(
        plain.path().join("flows.log"),
        format!("{}{}", good(1), good(2)),
    )
    .unwrap();
    let child = start_run(plain.path(), pipeline, |_| {});
    let (code, stderr) = exit_within(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let baseline = peak_rss_mib(&stderr);
    assert!(
        peak < baseline + 5,
        "peak RSS {peak} MiB against {baseline} MiB without the line"
    );
}

#[test]
fn a_hung_output_endpoint_is_given_up_on_and_sigterm_ends_the_run_in_bounded_time() {
    // Accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in hung.incoming().flatten().take(50) {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flows.log"),
        "2 1 eni-1 10.0.0.1 10.0.0.2 1 443 6 1 10 200 260 ACCEPT OK\n",
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let child = start_run(
        dir.path(),
        &format!(
            "drain_timeout_secs = 2\n\n[api]\naddress = \"{api}\"\n\n[sources.in]\ntype = \"file\"\npath = \"flows.log\"\n\n[transforms.t]\ntype = \"wasm\"\ninputs = [\"in\"]\n\n[sinks.stream]\ntype = \"aws_kinesis_streams\"\ninputs = [\"t\"]\nstream_name = \"s\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
        ),
        KinesisLocal::aws_env,
    );
    // The file source has ended: the run is draining into a sink whose calls time out
    // (one attempt: 10 s) and are retried.
    wait_until_retrying(&api, "stream");
    signal(&child, "TERM");
    let signalled = Instant::now();
    let (code, stderr) = exit_within(child, Duration::from_secs(40));
    assert_eq!(code, Some(1), "{stderr}");
    // The drain deadline (2 s) plus at most one attempt (10 s) and a retry pause.
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "{:?}: {stderr}",
        signalled.elapsed()
    );
    assert!(stderr.contains("error: sinks.stream failed"), "{stderr}");
    assert!(stderr.contains("timeout"), "the cause: {stderr}");
    drop(held);
}

#[test]
fn a_hung_input_endpoint_holds_nothing_up_and_loses_nothing() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    put_flows(&kinesis, "flows", 1..=20);
    // Accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_endpoint = format!("http://{}", hung.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in hung.incoming().flatten().take(50) {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sinks = "[sinks.out]\ntype = \"file\"\ninputs = [\"t\"]\npath = \"out.ndjson\"\n";
    let pipeline = pipeline(&kinesis, "flows", sinks);
    let child = start_run(
        dir.path(),
        &pipeline.replace(&kinesis.endpoint, &hung_endpoint),
        KinesisLocal::aws_env,
    );
    std::thread::sleep(Duration::from_secs(3));
    signal(&child, "TERM");
    let signalled = Instant::now();
    // A call in flight gives up within the operation timeout (25 s).
    let (code, stderr) = exit_within(child, Duration::from_secs(40));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "{:?}: {stderr}",
        signalled.elapsed()
    );
    eprintln!(
        "hung input endpoint: SIGTERM ended the run in {:?}",
        signalled.elapsed()
    );
    drop(held);
    // With the endpoint back, everything is read: nothing was checkpointed meanwhile.
    let restarted = Instant::now();
    let child = start_run(dir.path(), &pipeline, KinesisLocal::aws_env);
    let rows = rows_after(&dir.path().join("out.ndjson"), 20);
    eprintln!(
        "hung input endpoint: all 20 records {:?} after the restart",
        restarted.elapsed()
    );
    signal(&child, "TERM");
    let (code, stderr) = exit_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sorted_ports(&rows), (1..=20).collect::<Vec<u64>>());
}
