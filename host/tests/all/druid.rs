//! The `druid` sink: rolled-up rows equal an independent rollup of the enriched flows,
//! to files (the embedded default) and to a real local Kinesis stream; the supervisor
//! spec matches a golden file and names exactly the rows' keys.

use crate::kinesis::{KinesisLocal, Later, RunPipeline};
use crate::{bin, read_ndjson, repo, signal, start_run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const DIMENSIONS: [&str; 4] = ["src_app", "dst_app", "protocol", "action"];

/// (timestamp ms, dimension values as JSON text) → [flows, bytes, packets].
type Rollup = BTreeMap<(u64, Vec<String>), [u64; 3]>;

/// The rollup computed here, from the enriched rows, the obvious way.
fn expected(enriched: &[Value]) -> Rollup {
    let mut out = Rollup::new();
    for row in enriched {
        let Some(start) = row["start"].as_u64() else {
            continue;
        };
        let dims = DIMENSIONS.iter().map(|d| row[*d].to_string()).collect();
        let sums = out.entry(((start / 60) * 60 * 1000, dims)).or_default();
        sums[0] += 1;
        sums[1] += row["bytes"].as_u64().unwrap_or(0);
        sums[2] += row["packets"].as_u64().unwrap_or(0);
    }
    out
}

/// The sink's rows summed again by (timestamp, dimensions), as Druid's rollup would.
fn summed(rows: &[Value]) -> Rollup {
    let mut out = Rollup::new();
    for row in rows {
        let dims = DIMENSIONS.iter().map(|d| row[*d].to_string()).collect();
        let sums = out
            .entry((row["timestamp"].as_u64().unwrap(), dims))
            .or_default();
        for (at, metric) in ["flows", "bytes", "packets"].iter().enumerate() {
            sums[at] += row[*metric].as_u64().unwrap();
        }
    }
    out
}

fn dimensions_toml() -> String {
    let quoted: Vec<String> = DIMENSIONS.iter().map(|d| format!("\"{d}\"")).collect();
    format!("dimensions = [{}]", quoted.join(", "))
}

/// Keys of every row must be exactly the spec's timestamp, dimensions and metric fields.
fn assert_rows_match_the_spec(rows: &[Value], spec: &Value) {
    let schema = &spec["spec"]["dataSchema"];
    let mut wanted: Vec<String> = vec![schema["timestampSpec"]["column"].as_str().unwrap().into()];
    for dimension in schema["dimensionsSpec"]["dimensions"].as_array().unwrap() {
        wanted.push(dimension["name"].as_str().unwrap().into());
    }
    for metric in schema["metricsSpec"].as_array().unwrap() {
        if let Some(field) = metric["fieldName"].as_str() {
            wanted.push(field.into());
        }
    }
    wanted.sort();
    for row in rows {
        let mut keys: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, wanted, "{row}");
    }
}

/// Runs `pipeline` in `dir` to its end; its output and the rows of `out.ndjson`.
fn run_to_end(dir: &Path, pipeline: &str) -> (std::process::Output, Vec<Value>) {
    let mut child = start_run(dir, pipeline, |_| {});
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = read_ndjson(&dir.join("out.ndjson"));
    (output, rows)
}

fn druid_spec(pipeline: &Path) -> Value {
    let output = bin().arg("druid-spec").arg(pipeline).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A pipeline: flows on stdin, enriched with the bundled metadata into `out.ndjson` and
/// rolled up by a `druid` sink onto the stream `rollups` at `endpoint`, with `extra`
/// sink settings.
fn stdin_to_stream(data: &Path, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[metadata.apps]
type = "file"
path = "{data}/apps.jsonl"
retention_secs = 0

[sources.in]
type = "stdin"

[transforms.enrich]
type = "wasm"
inputs = ["in"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "out.ndjson"

[sinks.druid]
type = "druid"
inputs = ["enrich"]
workers = 2
stream_name = "rollups"
endpoint = "{endpoint}"
region = "us-east-1"
{extra}
{dims}
"#,
        data = data.display(),
        dims = dimensions_toml()
    )
}

/// 300 flow lines between addresses of the bundled metadata.
fn sample_lines(data: &Path) -> Vec<String> {
    let ips: Vec<String> = std::fs::read_to_string(data.join("apps.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["ip"].as_str().map(str::to_string))
        .collect();
    assert!(ips.len() > 4);
    let t0 = 1_700_000_000u64;
    let lines: Vec<String> = (0..300u64)
        .map(|i| {
            let (src, dst) = (
                &ips[i as usize % ips.len()],
                &ips[(i as usize * 7 + 3) % ips.len()],
            );
            let start = t0 + (i * 37) % 1800;
            let action = if i % 9 == 0 { "REJECT" } else { "ACCEPT" };
            format!(
                "2 123456789012 eni-1 {src} {dst} {} 443 {} {} {} {start} {} {action} OK",
                1024 + i,
                [6, 17][i as usize % 2],
                1 + i % 5,
                100 + i * 13,
                start + 60
            )
        })
        .collect();
    lines
}

#[test]
fn rolled_up_files_equal_an_independent_rollup_of_the_flows() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("pipelines/data");
    let (output, enriched) = run_to_end(
        dir.path(),
        &format!(
            r#"
[metadata.apps]
type = "file"
path = "{data}/apps.jsonl"
retention_secs = 0

[sources.flows]
type = "file"
path = "{data}/flows"

[transforms.enrich]
type = "wasm"
inputs = ["flows"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "out.ndjson"

[sinks.druid]
type = "druid"
inputs = ["enrich"]
path = "druid"
flush_interval_secs = 1
workers = 3
{dims}
"#,
            data = data.display(),
            dims = dimensions_toml()
        ),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("druid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for row in read_ndjson(&path) {
            // Each file holds one bucket, named after it.
            let ms = row["timestamp"].as_u64().unwrap();
            assert_eq!(
                name,
                format!(
                    "flows-{}.ndjson",
                    flowenrich::sinks::druid::bucket_name(ms / 1000)
                )
            );
            rows.push(row);
        }
    }
    assert!(!rows.is_empty(), "{stderr}");
    let want = expected(&enriched);
    assert_eq!(summed(&rows), want, "sums per bucket and dimensions");
    let flows: u64 = want.values().map(|s| s[0]).sum();
    assert_eq!(flows, enriched.len() as u64);
    assert!(
        rows.len() * 2 < enriched.len(),
        "{} rows for {} flows: the rollup should reduce",
        rows.len(),
        enriched.len()
    );
    let summary = crate::summary(&stderr, "druid");
    assert!(
        summary.contains(&format!("druid_flows_total {flows}")),
        "{summary}"
    );

    // The same sink publishing to a stream: its spec names exactly these rows' keys.
    let pipeline = dir.path().join("stream.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[sources.in]\ntype = \"stdin\"\n\n[transforms.enrich]\ntype = \"wasm\"\ninputs = [\"in\"]\n\n[sinks.druid]\ntype = \"druid\"\ninputs = [\"enrich\"]\nstream_name = \"vpc-flow-rollups\"\nregion = \"eu-west-1\"\n{}\n",
            dimensions_toml()
        ),
    )
    .unwrap();
    assert_rows_match_the_spec(&rows, &druid_spec(&pipeline));
}

#[test]
fn the_supervisor_spec_matches_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[sources.in]\ntype = \"stdin\"\n\n[transforms.enrich]\ntype = \"wasm\"\ninputs = [\"in\"]\n\n[sinks.druid]\ntype = \"druid\"\ninputs = [\"enrich\"]\ndata_source = \"vpc_flows\"\nstream_name = \"vpc-flow-rollups\"\nregion = \"us-east-1\"\n",
    )
    .unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/golden/druid-supervisor-spec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(druid_spec(&pipeline), golden);
    // A sink that writes files has no stream to ingest: a clear error.
    std::fs::write(
        &pipeline,
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.druid]\ntype = \"druid\"\ninputs = [\"in\"]\npath = \"d\"\n",
    )
    .unwrap();
    let output = bin().arg("druid-spec").arg(&pipeline).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("sinks.druid"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rows_on_a_kinesis_stream_equal_the_rollup_even_when_the_endpoint_comes_late() {
    let kinesis = KinesisLocal::start();
    // The rollup stream's endpoint is not up yet: the sink keeps retrying.
    let late = Later::with_stream("rollups", 2);
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("pipelines/data");
    // A stand-in Overlord on 127.0.0.1 that records the one request it gets.
    let overlord = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let overlord_url = format!("http://{}", overlord.local_addr().unwrap());
    let request = std::thread::spawn(move || {
        use std::io::{BufRead, Read, Write};
        let (stream, _) = overlord.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
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
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let reply = "{\"id\":\"vpc_flows\"}";
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        (head, body)
    });
    // The stream's endpoint is away: the sink keeps retrying and loses nothing.
    let mut child = kinesis.run(
        dir.path(),
        &stdin_to_stream(
            &data,
            &late.endpoint(),
            &format!("flush_interval_secs = 1\noverlord_url = \"{overlord_url}\""),
        ),
    );
    // The spec went to the Overlord when the sink started: the same as `druid-spec`.
    let (head, body) = request.join().unwrap();
    assert!(
        head.starts_with(
            "POST /druid/indexer/v1/supervisor?skipRestartIfUnmodified=true HTTP/1.1\r\n"
        ),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let submitted: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(submitted, druid_spec(&dir.path().join("p.toml")));
    let lines = sample_lines(&data);
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    for line in &lines {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let kinesis = late.start();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let enriched_path = dir.path().join("out.ndjson");
    let mut rows;
    loop {
        rows = kinesis
            .read_all("rollups")
            .into_iter()
            .map(|(_, row)| row)
            .collect::<Vec<_>>();
        let enriched = read_ndjson(&enriched_path);
        if enriched.len() == 300 && summed(&rows) == expected(&enriched) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} rows so far for {} flows",
            rows.len(),
            enriched.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("kinesis_put_retries_total"),
        "the outage was seen: {stderr}"
    );
}

#[test]
fn checkpoints_wait_for_the_rollup_to_be_written() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("flows", 2);
    for port in 1..=10u32 {
        kinesis.put_bytes(
            "flows",
            &format!("k{port}"),
            format!("2 1 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 200 260 ACCEPT OK").into_bytes(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // Rows are written only at shutdown (the flush interval is an hour).
    let pipeline = r#"
[sources.flows]
type = "aws_kinesis_streams"
stream_name = "flows"
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

[sinks.druid]
type = "druid"
inputs = ["t"]
path = "druid"
append = true
flush_interval_secs = 3600
dimensions = ["protocol", "action"]
"#;
    let out = dir.path().join("out.ndjson");
    let store = dir.path().join(".flowenrich/flows.checkpoints.json");
    let checkpointed = || -> usize {
        std::fs::read_to_string(&store)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .map_or(0, |saved| {
                saved["shards"].as_object().map_or(0, |shards| {
                    shards
                        .values()
                        .filter(|s| s["sequence"].is_string())
                        .count()
                })
            })
    };
    let flows_in_druid = || -> u64 {
        crate::rollup_rows_so_far(&dir.path().join("druid"))
            .iter()
            .map(|row| row["flows"].as_u64().unwrap())
            .sum()
    };
    let run_until = |rows: usize, how: &str| {
        let child = kinesis.run(dir.path(), pipeline);
        crate::rows_after(&out, rows);
        std::thread::sleep(Duration::from_millis(500));
        let before = checkpointed();
        signal(&child, how);
        let output = child.wait_with_output().unwrap();
        (before, String::from_utf8_lossy(&output.stderr).into_owned())
    };

    // Every flow is through the transform and in the file sink, but the rollup holds
    // them: no checkpoint may move. A crash now loses the rollup's memory...
    let (before, _) = run_until(10, "KILL");
    assert_eq!(before, 0, "checkpointed before the rollup was written");
    assert_eq!(flows_in_druid(), 0);
    // ...and the restart reads every record again, so nothing is lost. On SIGTERM the
    // rollup is written, and only then are the shards checkpointed.
    let (before, stderr) = run_until(20, "TERM");
    assert_eq!(before, 0, "{stderr}");
    assert_eq!(flows_in_druid(), 10, "{stderr}");
    assert_eq!(
        checkpointed(),
        2,
        "both shards checkpointed after the write: {stderr}"
    );
    // A further run has nothing new to read.
    let child = kinesis.run(dir.path(), pipeline);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(flows_in_druid(), 10, "nothing counted twice");
}

#[test]
fn partial_put_records_failures_lose_and_repeat_nothing() {
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("rollups", 2);
    // The sink talks to the stream through a proxy that rejects the first record of
    // every PutRecords call, as a throttled shard does.
    let proxy = crate::kinesis::PartialFailures::start(&kinesis.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("pipelines/data");
    let mut child = kinesis.run(dir.path(), &stdin_to_stream(&data, &proxy.endpoint, ""));
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    for line in sample_lines(&data) {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    // The rows go out when the input ends.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rows: Vec<Value> = kinesis
        .read_all("rollups")
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    let enriched = read_ndjson(&dir.path().join("out.ndjson"));
    assert_eq!(enriched.len(), 300);
    let failed = proxy.failed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(failed > 0, "the proxy rejected records");
    assert!(stderr.contains("kinesis_put_retries_total"), "{stderr}");
    // Every row exactly once: the sums equal the rollup, and no row repeats.
    assert_eq!(
        summed(&rows),
        expected(&enriched),
        "{failed} records were rejected"
    );
    let mut keys: Vec<String> = rows.iter().map(Value::to_string).collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "a row was put twice");
}

/// The rollup of the real component's columns, batch by batch, against the rollup of its
/// JSON lines: the same rows, also when the table is swapped in the middle of a bucket
/// (the same owner id then stands for another application) and when a held line is
/// released later against a newer table.
#[test]
fn columns_roll_up_like_json_across_a_table_swap_and_released_lines() {
    use flowenrich::batch::{Columns, LineBatch};
    use flowenrich::metadata::{Event, Table, TableBuilder};
    use flowenrich::runtime::{ProcessOptions, Runtime, RuntimeOptions, WorkerLimits};
    use flowenrich::sinks::druid::{DEFAULT_DIMENSIONS, Rollup, Router};
    use std::sync::Arc;

    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let mut worker = runtime
        .worker(&component, &WorkerLimits::default())
        .unwrap();
    let table = |events: &[&str]| -> Arc<Table> {
        let mut builder = TableBuilder::new();
        for event in events {
            builder.apply(&Event::parse(event).unwrap());
        }
        Arc::new(builder.build())
    };
    // Both tables give 10.0.0.1 the first owner id; in B it is another application in
    // another region, and 10.0.0.3 exists only in B.
    let a = table(&[
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "api", "region": "eu-west-1"}}"#,
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.2", "attrs": {"app": "db", "region": "eu-west-1"}}"#,
    ]);
    let b = table(&[
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "web", "region": "us-east-1", "zone": "use1-az1"}}"#,
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.2", "attrs": {"app": "db", "region": "eu-west-1"}}"#,
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.3", "attrs": {"app": "la\"te\u0008"}}"#,
    ]);
    assert_eq!(
        a.lookup("10.0.0.1".parse().unwrap(), 100),
        b.lookup("10.0.0.1".parse().unwrap(), 100),
        "the same id, two owners"
    );
    let mut dimensions: Vec<String> = DEFAULT_DIMENSIONS.map(String::from).to_vec();
    dimensions.extend(["srcaddr", "dstport", "interface_id"].map(String::from));
    let mut names = dimensions.clone();
    names.extend(["start", "bytes", "packets"].map(String::from));
    let names: Arc<[String]> = names.into();
    let batch = |protocols: &[&str], src: &str| -> String {
        let mut text = String::new();
        for (i, protocol) in protocols.iter().enumerate() {
            text.push_str(&format!(
                "2 123 eni-\"{i} {src} 10.0.0.2 {} 0443 {protocol} {} {} {} 160 {} OK\n",
                1000 + i,
                i + 1,
                100 * i,
                90 + i,
                ["ACCEPT", "REJECT", "-"][i % 3]
            ));
        }
        text.push_str("2 123 eni-9 2001:db8::1 10.0.0.2 1 2 6 1 1 95 160 ACCEPT OK\n");
        text.push_str("not a flow\n");
        text
    };
    let (mut from_columns, mut from_json) =
        (Rollup::new(&dimensions, 60), Rollup::new(&dimensions, 60));
    // As the sink and its helpers do: each batch's flows routed to shards by key.
    let mut shards = vec![Rollup::new(&dimensions, 60), Rollup::new(&dimensions, 60)];
    let mut router = Router::new(&dimensions, 60, 2);
    let mut run = |text: String, table: &Arc<Table>, hold: bool| -> Vec<u32> {
        let options = ProcessOptions {
            format: None,
            stream_start: false,
            hold_unattributed: hold,
            json: true,
            columns: names.to_vec(),
        };
        let result = worker.process_with(&text, &options, table).unwrap();
        for line in result.output.lines() {
            from_json.add(line).unwrap();
        }
        let columns = Columns {
            names: names.clone(),
            raw: result.columns.unwrap(),
            input: Arc::new(LineBatch::of_text("s", text.clone())),
            table: table.clone(),
        };
        assert_eq!(columns.rows(), result.emitted as usize);
        assert_eq!(
            from_columns.add_columns(&columns),
            (u64::from(result.emitted), 0)
        );
        let mut selections = vec![Vec::new(); 2];
        router.route(&columns, &mut selections);
        for (shard, selection) in shards.iter_mut().zip(&selections) {
            shard.add_columns_in(&columns, Some(selection));
        }
        result.held
    };
    // One bucket (start 90..=99): table A, then B, then A again, then a held line of A
    // released against B.
    run(batch(&["6", "17", "6", "1"], "10.0.0.1"), &a, false);
    run(batch(&["6", "6", "17"], "10.0.0.1"), &b, false);
    run(batch(&["17", "6"], "10.0.0.1"), &a, false);
    let held = run(batch(&["6"], "10.0.0.3"), &a, true);
    assert_eq!(
        held,
        [0, 1],
        "10.0.0.3 is nobody's in A, 2001:db8::1 nobody's at all"
    );
    run(batch(&["6"], "10.0.0.3"), &b, false);
    let from_columns = from_columns.drain();
    // The shards hold the same rows (each bucket's shard after shard).
    let sorted = |text: &str| {
        let mut rows: Vec<&str> = text.lines().collect();
        rows.sort();
        rows.join("\n")
    };
    assert_eq!(
        sorted(Rollup::drain_all(&mut shards).text()),
        sorted(from_columns.text())
    );
    let rows: Vec<String> = from_columns.text().lines().map(str::to_string).collect();
    let want: Vec<String> = from_json
        .drain()
        .text()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(rows, want);
    // And the attributes are each batch's own.
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let flows = |app: &str, region: &str| -> u64 {
        rows.iter()
            .filter(|r| r["src_app"] == app && r["src_region"] == region)
            .map(|r| r["flows"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(flows("api", "eu-west-1"), 6);
    assert_eq!(flows("web", "us-east-1"), 3);
    assert!(rows.iter().any(|r| r["src_app"] == "la\"te\u{8}"));
    assert!(
        rows.iter()
            .all(|r| r["dstport"] == 443 || r["srcaddr"] == "2001:db8::1")
    );
    assert!(rows.iter().any(|r| r["interface_id"] == "eni-\"0"));
}
