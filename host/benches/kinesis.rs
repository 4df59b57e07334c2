//! End-to-end throughput: a real local Kinesis (npm `kinesis-local`, started here on
//! 127.0.0.1; `scripts/test` installs it) → the `aws_kinesis_streams` source → the wasm
//! component (parse + enrich against a 10,000-address table) → a file sink.
//!
//! `cargo bench -p flowenrich --bench kinesis` (options: `--records N`, default 2,000;
//! `--lines-per-record N`, default 50, as a CloudWatch Logs subscription packs them;
//! `--shards N`, default 4). The stream is filled first, then each pipeline reads it
//! from the start: the one with the component, and as a baseline in the same run the
//! same source writing the raw lines to a file without any transform. Prints flows/s
//! and records/s for both, their ratio, and how many flows each record carried.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Rng;

mod support;

// Shared with the integration tests, which use other parts of it.
#[allow(dead_code)]
use flowenrich_test_support::kinesis_local;
use kinesis_local::KinesisLocal;

const T0: u64 = 1_700_000_000;
const HOSTS: u64 = 10_000;

fn ip(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// A changelog that assigns every host an app, region and zone at T0.
fn write_metadata(path: &Path) {
    let apps = ["api", "web", "db", "cache", "batch", "payments", "search"];
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let mut text = String::new();
    for host in 0..HOSTS {
        let (app, region) = (apps[host as usize % 7], regions[host as usize % 3]);
        text.push_str(&format!(
            "{{\"ts\": {T0}, \"op\": \"assign\", \"ip\": \"{}\", \"attrs\": {{\"app\": \"{app}\", \"region\": \"{region}\", \"zone\": \"{region}a\"}}}}\n",
            ip(host)
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// `records` CloudWatch Logs envelopes of `per_record` flow lines each, with their keys.
fn envelopes(records: usize, per_record: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(42);
    (0..records)
        .map(|r| {
            let events: Vec<(u64, String)> = (0..per_record)
                .map(|_| {
                    let start = T0 + rng.below(3600);
                    let message = format!(
                        "2 123456789012 eni-{:08x} {} {} {} 443 6 {} {} {start} {} ACCEPT OK",
                        rng.below(1 << 32),
                        ip(rng.below(HOSTS + 2_000)),
                        ip(rng.below(HOSTS + 2_000)),
                        32768 + rng.below(28000),
                        1 + rng.below(100),
                        40 + rng.below(1_000_000),
                        start + 60,
                    );
                    (start * 1000, message)
                })
                .collect();
            (
                format!("key-{r}"),
                support::gzip_envelope(
                    &events,
                    (r * per_record) as u64,
                    flate2::Compression::fast(),
                ),
            )
        })
        .collect()
}

/// Counts the lines of a growing file, reading only what is new.
struct LineCounter {
    offset: u64,
    lines: usize,
}

impl LineCounter {
    fn update(&mut self, path: &Path) -> usize {
        if let Ok(mut file) = std::fs::File::open(path) {
            file.seek(SeekFrom::Start(self.offset)).unwrap();
            let mut new = Vec::new();
            file.read_to_end(&mut new).unwrap();
            self.offset += new.len() as u64;
            self.lines += new.iter().filter(|&&b| b == b'\n').count();
        }
        self.lines
    }
}

/// Runs `pipeline` until `out.ndjson` has `flows` lines; returns (from start, from the
/// first line written) in seconds.
fn run(kinesis: &KinesisLocal, transform: bool, flows: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    write_metadata(&dir.path().join("apps.jsonl"));
    let (inputs, transform_table) = if transform {
        (
            "enrich",
            "[metadata.apps]\ntype = \"file\"\npath = \"apps.jsonl\"\n\n[transforms.enrich]\ntype = \"wasm\"\ninputs = [\"flows\"]\nmetadata = \"apps\"\n",
        )
    } else {
        ("flows", "")
    };
    let pipeline = format!(
        "{transform_table}\n[sources.flows]\ntype = \"aws_kinesis_streams\"\nstream_name = \"bench\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"{inputs}\"]\npath = \"out.ndjson\"\n",
        kinesis.endpoint
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowenrich"));
    command
        .arg("run")
        .arg(dir.path().join("p.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    KinesisLocal::aws_env(&mut command);
    let started = Instant::now();
    let mut child: Child = command.spawn().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut counter = LineCounter {
        offset: 0,
        lines: 0,
    };
    let mut first_line: Option<Instant> = None;
    let deadline = started + Duration::from_secs(600);
    while counter.update(&out) < flows {
        if first_line.is_none() && counter.lines > 0 {
            first_line = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {flows} flows",
            counter.lines
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(counter.update(&out), flows, "every flow once");
    let since_first = first_line.map_or(0.0, |at| (done - at).as_secs_f64());
    ((done - started).as_secs_f64(), since_first)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records = support::option(&args, "--records").unwrap_or(2_000);
    let per_record = support::option(&args, "--lines-per-record").unwrap_or(50);
    let shards = support::option(&args, "--shards").unwrap_or(4);
    let flows = records * per_record;

    let kinesis = KinesisLocal::start();
    kinesis.create_stream("bench", shards as i32);
    let data = envelopes(records, per_record);
    let bytes: usize = data.iter().map(|(_, d)| d.len()).sum();
    let started = Instant::now();
    kinesis.put_many("bench", &data);
    let put = started.elapsed().as_secs_f64();
    println!(
        "host::sources::kinesis end to end: {records} records on {shards} shards, {per_record} flows per record ({:.0} bytes per record, gzip CloudWatch Logs envelopes); put at {:.0} records/s",
        bytes as f64 / records as f64,
        records as f64 / put
    );
    println!(
        "{:>28}  {:>12}  {:>12}  {:>14}",
        "pipeline", "flows/s", "records/s", "flows/s (warm)"
    );
    let mut rates = Vec::new();
    for (name, transform) in [
        ("kinesis → wasm → file", true),
        ("kinesis → file (baseline)", false),
    ] {
        let (total, warm) = run(&kinesis, transform, flows);
        let rate = flows as f64 / total;
        println!(
            "{name:>28}  {rate:>12.0}  {:>12.0}  {:>14.0}",
            records as f64 / total,
            if warm > 0.0 {
                flows as f64 / warm
            } else {
                f64::NAN
            }
        );
        rates.push(rate);
    }
    println!(
        "(from process start to the last flow written; warm = from the first flow written; with the component at {:.2}x the baseline's rate)",
        rates[0] / rates[1]
    );
}
